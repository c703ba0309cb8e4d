"""Shared fixtures.

``micro_zoo`` builds a real (tiny) zoo pair once per test session in a temporary cache,
so any test can load ``zoo:teacher`` / ``zoo:student`` backends without the hub.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Several test processes share few cores: spinning OpenMP workers then starve each
# other (tiny models run 10-30x slower). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

_CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("Chile", "Santiago"),
    ("Norway", "Oslo"),
    ("Canada", "Ottawa"),
    ("Greece", "Athens"),
    ("Cuba", "Havana"),
]
_WORDS = ["apple", "river", "stone", "cloud", "tiger", "lamp", "green", "music", "bread", "ocean"]


def make_synthetic_corpus(seed: int = 0, per_category: int = 12) -> list[dict]:
    """Small templated (prompt, reference, category) items in the probes corpus shape."""
    rng = random.Random(seed)
    out: list[dict] = []
    for _ in range(per_category):
        country, capital = rng.choice(_CAPITALS)
        out.append(
            {
                "prompt": f"What is the capital of {country}?",
                "reference": f"The capital of {country} is {capital}.",
                "category": "factual",
            }
        )
        a, b = rng.randint(1, 40), rng.randint(1, 40)
        out.append(
            {
                "prompt": f"What is {a} plus {b}?",
                "reference": f"{a} plus {b} is {a + b}.",
                "category": "reasoning_math",
            }
        )
        w = rng.choice(_WORDS)
        out.append(
            {
                "prompt": f"Write the word {w} in capital letters.",
                "reference": w.upper(),
                "category": "style_format",
            }
        )
        ws = rng.sample(_WORDS, 3)
        out.append(
            {
                "prompt": f"List these words one per line: {', '.join(ws)}.",
                "reference": "\n".join(f"- {x}" for x in ws),
                "category": "instruction",
            }
        )
    return out


@pytest.fixture(scope="session")
def synthetic_corpus():
    """The corpus builder itself, so tests can make corpora of any size/seed."""
    return make_synthetic_corpus


@pytest.fixture(scope="session")
def micro_zoo(tmp_path_factory):
    """Build the micro zoo once (temp BBI_CACHE_DIR, BBI_ZOO_CONFIG=micro); yields its dir.

    The environment stays set for the session so ``load_backend("zoo:teacher")`` finds it.
    """
    from bbi import zoo

    cache = tmp_path_factory.mktemp("bbi-cache")
    saved = {k: os.environ.get(k) for k in ("BBI_CACHE_DIR", "BBI_ZOO_CONFIG")}
    os.environ["BBI_CACHE_DIR"] = str(cache)
    os.environ["BBI_ZOO_CONFIG"] = "micro"
    path = zoo.build_zoo(
        "micro", corpus=make_synthetic_corpus(1, zoo.CONFIGS["micro"].per_category), progress=False
    )
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def micro_teacher(micro_zoo):
    """A loaded HF backend on the micro zoo teacher (shared: load once)."""
    from bbi.backends import load_backend

    backend = load_backend("zoo:teacher", device="cpu")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matmuls run fastest on one thread, and far slower when threads contend.
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def teacher_run(
    path, micro_teacher, items: list[dict], max_new_tokens: int, tag: str = "t"
) -> tuple[Any, list[dict], list[Any]]:
    """A run directory whose micro zoo teacher answered ``items`` (1 prompt in 8 on the
    test split); returns (RunDir, suite records, generations) for tests to add to."""
    from bbi.backends.base import GenerationConfig
    from bbi.runstore import RunDir, append_jsonl

    run = RunDir(path, create=True)
    gens = micro_teacher.generate(
        [it["prompt"] for it in items],
        GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.7),
        seeds=list(range(len(items))),
    )
    suite, responses = [], []
    for i, (it, g) in enumerate(zip(items, gens, strict=True)):
        pid = f"{it['category']}-{i:05d}"
        suite.append(
            {"id": pid, "category": it["category"], "subcategory": tag, "prompt": it["prompt"],
             "split": "test" if i % 8 == 7 else "train", "reference": None,
             "source": "generated", "perturbation": None, "base_id": None}
        )  # fmt: skip
        responses.append(
            {"prompt_id": pid, "sample": 0, "text": g.text, "n_tokens": g.n_tokens,
             "finish_reason": g.finish_reason}
        )  # fmt: skip
    append_jsonl(run.suite_path, suite)
    append_jsonl(run.responses_path("teacher"), responses)
    run.write_config(
        {"models": {"teacher": {"spec": "zoo:teacher", "role": "teacher"}},
         "generation": {"max_new_tokens": max_new_tokens}}
    )  # fmt: skip
    return run, suite, gens


@pytest.fixture(scope="session")
def task_models(tmp_path_factory):
    """A word-level tokenizer over the entity-tracking and safety vocabulary, and two
    tiny random models on it (a Llama teacher, a Qwen2 student with grouped-query
    attention), saved as HF directories: {"teacher": "hf:...", "student": "hf:..."}."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from distill.tasks import BOX_LABELS, OBJECTS
    from probes.suite import safety_behaviour, safety_groups

    root = tmp_path_factory.mktemp("task_models")
    texts = [f"The {o} is in Box {b}, and . Box contains the" for o in OBJECTS for b in BOX_LABELS]
    texts += [r["prompt"] + " " + r["target"] for r in safety_behaviour(safety_groups(), 600, "v")]
    texts.append("User: Assistant:")
    split = pre_tokenizers.Whitespace()
    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2}
    for text in texts:
        for word, _ in split.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = split
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    specs = {}
    for name, cls, cfg_cls, (hidden, heads, kv) in (
        ("teacher", LlamaForCausalLM, LlamaConfig, (64, 4, 4)),
        ("student", Qwen2ForCausalLM, Qwen2Config, (48, 4, 2)),
    ):
        torch.manual_seed(0)
        cfg = cfg_cls(
            vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2,
            num_attention_heads=heads, num_key_value_heads=kv, intermediate_size=2 * hidden,
            max_position_embeddings=256, pad_token_id=0, eos_token_id=2, bos_token_id=None,
        )  # fmt: skip
        cls(cfg).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        specs[name] = f"hf:{root / name}"
    return specs


# ---- the out-of-tree plug-in package (tests/plugin) -----------------------------------------

PLUGIN_DIR = os.path.join(os.path.dirname(__file__), "plugin")
PLUGIN_DIST = "bbi-example-plugin"  # Name: in bbi_example_plugin-0.1.dist-info/METADATA


def _plugin_modules() -> list[str]:
    import sys

    return [
        m for m in sys.modules if m == "bbi_example_plugin" or m.startswith("bbi_example_plugin.")
    ]


@pytest.fixture
def example_plugin():
    """``tests/plugin`` on ``sys.path`` as if ``bbi-example-plugin`` were installed: every
    registry finds its entry points (adversary, strategy, ...); undone afterwards."""
    import importlib
    import sys

    import bbi.specs  # noqa: F401

    # The owners of the registries the package fills, so each registry exists to refresh.
    import discriminators.acquisition  # noqa: F401
    import discriminators.base  # noqa: F401
    import distill.methods  # noqa: F401
    import reports.sections  # noqa: F401
    from bbi.registry import registries

    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(PLUGIN_DIR)  # also invalidates the import caches
        for reg in registries().values():
            reg.refresh()
        yield PLUGIN_DIR
    importlib.invalidate_caches()
    origin = f"entry point of {PLUGIN_DIST}"
    for reg in registries().values():  # registries created during the test too
        for name in reg.names():
            if reg.origin(name) == origin:
                reg.unregister(name)
        reg.refresh()
    for mod in _plugin_modules():
        sys.modules.pop(mod, None)


@pytest.fixture(scope="module")
def kd_run_template(tmp_path_factory, micro_teacher, synthetic_corpus):
    """A run whose teacher (the micro zoo teacher) answered 48 prompts (1 in 8 is test),
    with the micro zoo student as its student."""
    run, _, _ = teacher_run(
        tmp_path_factory.mktemp("kd") / "run", micro_teacher, synthetic_corpus(7, 12), 24, "kd"
    )
    cfg = run.config()
    cfg["models"]["student"] = {"spec": "zoo:student", "role": "student"}
    run.write_config(cfg)
    return run.path


@pytest.fixture
def kd_run(kd_run_template, tmp_path):
    """A private copy of the template run (distillation registers students in it)."""
    import shutil

    from bbi.runstore import RunDir

    return RunDir(shutil.copytree(kd_run_template, tmp_path / "run"))
