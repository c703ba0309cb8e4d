"""Multi-process distillation: ``accelerate launch`` with 2 CPU processes (gloo).

Two processes with per-process batch B train the same adapter as one process with
``--batch-size B --grad-accum 2``. Why that single-process config and not
``--batch-size 2B``: Accelerate's prepared loader (``split_batches=False``) hands
whole batches out in turn, process p the batches p, p+2, ... of the epoch's order, so
one optimizer step sees batches 2s and 2s+1 on the two processes. Each process's loss is
the mean over its own batch's tokens, and DDP averages the two gradients: exactly the
loop's exact gradient accumulation over the same two batches in one process. One batch of
2B examples instead weights every token of the 2B equally (a token-weighted mean), which
differs whenever the two halves hold different numbers of response tokens.

Preconditions for the comparison (checked below): the training examples fill an even
number of whole batches (else Accelerate's ``even_batches`` pads the last step with
repeated examples), and LoRA dropout is 0 (each process draws its masks from its own,
identically seeded, RNG: with dropout the runs agree in distribution, not weight by weight).

How a CPU multi-process run is launched: ``accelerate launch --cpu --num_processes 2``
starts ONE process (Accelerate's multi-CPU path expects ``mpirun``); ``--multi_gpu``
starts two through torchrun, and ``ACCELERATE_USE_CPU=true`` makes them join over gloo
instead of each running alone (``distill.method.check_launch`` refuses that case).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import teacher_run
from typer.testing import CliRunner

from bbi.errors import BbiError
from bbi.runstore import RunDir

REPO = Path(__file__).resolve().parents[1]
PER_PROCESS_BATCH = 4
N_TRAIN = 32  # 8 batches of 4: 4 optimizer steps per epoch, both ways
OPTS = ["--rank", "4", "--alpha", "8", "--epochs", "2", "--lr", "1e-2", "--max-length", "64",
        "--eval-fraction", "0.24", "--dropout", "0", "--warmup-ratio", "0.25", "--seed", "3",
        "--no-progress"]  # fmt: skip
# fp32 throughout. With two processes DDP sums g0/2 + g1/2 in an all-reduce, where one
# process accumulates (loss0/2)' + (loss1/2)' into .grad: the same two fp32 terms, and a
# sum of two is the same in either order, so the adapters come out equal in practice
# (measured max abs difference 0). The tolerance leaves room for what may legitimately
# differ in fp32 on other builds (all-reduce chunking, kernels picked per process layout)
# and stays far below what a wrong setup gives: one process with --batch-size 8 instead
# (the token-weighted mean of the same 8 examples) ends 2.4e-2 away, about the size of
# the adapter's lora_B weights (checked > 1e-2 below).
ATOL = 1e-6

# Runs `bbi` like its console script does, logging what this process writes under
# BBI_TEST_ROOT (an audit hook: open-for-write, mkdir, rename, remove; spies on the
# native writers torch.save and safetensors) and each call of distill.method.register,
# tagged with the process's RANK.
LAUNCHER = """
import json, os, sys

ROOT = os.path.realpath(os.environ["BBI_TEST_ROOT"])
RANK = int(os.environ.get("RANK", "0"))
LOG = open(os.environ["BBI_TEST_LOG"] + f".{RANK}", "a", buffering=1)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _log(event, path):
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(path))
        if path == ROOT or path.startswith(ROOT + os.sep):
            LOG.write(json.dumps({"rank": RANK, "event": event, "path": path}) + "\\n")


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if (mode and any(c in mode for c in "wax+")) or (not mode and flags & WRITE_FLAGS):
            _log(event, path)
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        _log(event, args[0])
    elif event == "os.rename":
        _log(event, args[1])


sys.addaudithook(_hook)

# torch.save and safetensors write from native code, past the audit hook: spy on them.
import peft.peft_model
import safetensors.torch
import torch


def _spy(module, name):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        _log(name, args[1] if len(args) > 1 else kwargs.get("f", kwargs.get("filename")))
        return real(*args, **kwargs)

    setattr(module, name, spy)


for module, name in ((torch, "save"), (safetensors.torch, "save_file"),
                     (peft.peft_model, "safe_save_file")):
    _spy(module, name)

import distill.method as method

_register = method.register


def register(*args, **kwargs):
    LOG.write(json.dumps({"rank": RANK, "event": "register"}) + "\\n")
    return _register(*args, **kwargs)


method.register = register

from bbi.app.cli import main

sys.argv = ["bbi", *sys.argv[1:]]
main()
"""


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mp_run_template(tmp_path_factory, micro_teacher, synthetic_corpus) -> Path:
    """48 prompts answered by the micro zoo teacher (1 in 8 on the test split), student
    zoo:student; with --eval-fraction 0.24, 32 train and 10 eval examples."""
    run, _, _ = teacher_run(
        tmp_path_factory.mktemp("mp") / "run", micro_teacher, synthetic_corpus(5, 12), 24, "mp"
    )
    cfg = run.config()
    cfg["models"]["student"] = {"spec": "zoo:student", "role": "student"}
    run.write_config(cfg)
    return run.path


def _launch_two_processes(run: Path, out: Path, log: Path, args: list[str]):
    launcher = log.parent / "launch_bbi.py"
    launcher.write_text(LAUNCHER, encoding="utf-8")
    env = {
        **os.environ,  # BBI_CACHE_DIR / BBI_ZOO_CONFIG: the micro zoo (set by its fixture)
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",  # the torchrun processes join over gloo
        "CUDA_VISIBLE_DEVICES": "",  # the same test on a GPU machine
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "BBI_TEST_ROOT": str(run),
        "BBI_TEST_LOG": str(log),
    }
    env.pop("ACCELERATE_CONFIG_FILE", None)
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch",
           "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--num_cpu_threads_per_process", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", "0",
           str(launcher), "distill", "lora", str(run), "--out", str(out), *args]  # fmt: skip
    return subprocess.run(
        cmd, env=env, cwd=run.parent, capture_output=True, text=True, timeout=300, check=False
    )


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_the_adapter_of_one_with_the_same_global_batch(
    mp_run_template, tmp_path
):
    from bbi.app.cli import app

    t0 = time.perf_counter()
    two = RunDir(shutil.copytree(mp_run_template, tmp_path / "two" / "run"))
    one = RunDir(shutil.copytree(mp_run_template, tmp_path / "one" / "run"))
    out2, out1 = (r.path.resolve() / "adapters" / "mp" for r in (two, one))
    log = tmp_path / "writes.jsonl"
    b = str(PER_PROCESS_BATCH)
    proc = _launch_two_processes(
        two.path, out2, log, ["--alias", "mp", "--batch-size", b, "--grad-accum", "1", *OPTS]
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    t_two = time.perf_counter() - t0
    res = CliRunner().invoke(
        app,
        ["distill", "lora", str(one.path), "--out", str(out1), "--alias", "mp",
         "--batch-size", b, "--grad-accum", "2", *OPTS],
    )  # fmt: skip
    assert res.exit_code == 0, res.output

    rec2, rec1 = two.read_results()["distill"]["mp"], one.read_results()["distill"]["mp"]
    assert rec2["num_processes"] == 2 and rec1["num_processes"] == 1
    # The comparison's preconditions: whole batches, an even number of them, no dropout.
    assert rec1["n_train_examples"] == rec2["n_train_examples"] == N_TRAIN
    assert rec1["n_eval_examples"] == 10  # uneven over 2 processes: gather drops padding
    assert rec1["hyperparameters"]["dropout"] == 0
    assert rec1["steps"] == rec2["steps"] == 2 * N_TRAIN // (2 * PER_PROCESS_BATCH)
    assert rec1["loss_tokens"] == rec2["loss_tokens"]  # the same tokens were trained on

    a2, a1 = _adapter(out2), _adapter(out1)
    assert a2.keys() == a1.keys() and a1
    diff = max(float((a2[k] - a1[k]).abs().max()) for k in a1)
    moved = max(float(a1[k].abs().max()) for k in a1 if "lora_B" in k)  # B starts at 0
    print(f"\nmax |adapter(2 processes) - adapter(1 process)| = {diff:.3e} (tolerance {ATOL:g}); "
          f"max |lora_B| = {moved:.3e}; 2-process launch {t_two:.1f} s")  # fmt: skip
    assert diff <= ATOL, diff
    assert moved > 1e-2
    # Eval loss is gathered over both processes (10 examples: 3 batches over 2 processes).
    assert rec2["eval_loss_per_epoch"] == pytest.approx(rec1["eval_loss_per_epoch"], abs=1e-6)
    assert rec2["train_loss_per_epoch"] == pytest.approx(rec1["train_loss_per_epoch"], abs=1e-6)
    m2, m1 = _metrics(out2), _metrics(out1)
    assert [m.get("step") for m in m2] == [m.get("step") for m in m1]  # one line per step/eval
    assert [m.get("loss") for m in m2] == pytest.approx([m.get("loss") for m in m1], abs=1e-6)

    # Only the main process wrote; it registered the student once and printed it once.
    spec = rec2["spec"]
    assert proc.stdout.count(spec) == 1, proc.stdout
    assert list(two.read_results()["distill"]) == ["mp"]
    assert two.models()["mp"] == {"spec": spec, "role": "student"}
    writes = [json.loads(x) for p in tmp_path.glob("writes.jsonl.*") for x in p.read_text().splitlines()]  # fmt: skip
    assert [w["rank"] for w in writes if w["event"] == "register"] == [0]
    files = [
        (w["rank"], w["event"], os.path.relpath(w["path"], out2)) for w in writes if "path" in w
    ]
    by_rank1 = {(event, path) for rank, event, path in files if rank == 1}
    # Every process saves its own RNG state into the checkpoint; nothing else is rank 1's.
    assert by_rank1 == {("save", "checkpoint.tmp/rng_1.pt")}, by_rank1
    by_rank0 = {path for rank, _, path in files if rank == 0}
    assert {"../../results.json", "../../run.yaml", "bbi_distill.json", "metrics.jsonl",
            "adapter_model.safetensors", "checkpoint.tmp/rng_0.pt",
            "checkpoint.tmp/optimizer.pt"} <= by_rank0, by_rank0  # fmt: skip
    assert (out2 / "checkpoint" / "rng_0.pt").exists() and (out2 / "checkpoint" / "rng_1.pt").exists()  # fmt: skip
    assert not (out1 / "checkpoint" / "rng_1.pt").exists()


def test_launches_that_would_train_something_else_are_refused(
    mp_run_template, tmp_path, monkeypatch
):
    """Refused before any weights load: N launched processes that each found no backend
    (N copies racing on the files), Accelerate's own gradient accumulation on top of
    --grad-accum, and --grad-accum under DeepSpeed (the engine steps every backward)."""
    from bbi.config import LoraSettings
    from distill.lora import distill_lora
    from distill.method import check_launch

    run = RunDir(shutil.copytree(mp_run_template, tmp_path / "run"))
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    with monkeypatch.context() as m:
        m.setenv("WORLD_SIZE", "2")
        with pytest.raises(BbiError, match=r"launched as 2 processes.*ACCELERATE_USE_CPU=true"):
            distill_lora(run, settings=LoraSettings(), progress=False)
    with monkeypatch.context() as m:
        m.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "2")
        with pytest.raises(BbiError, match=r"gradient accumulation is set to 2.*--grad-accum"):
            distill_lora(run, settings=LoraSettings(), progress=False)
    assert not (run.path / "adapters").exists()
    zero = lambda stage: SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage))  # noqa: E731
    ds = SimpleNamespace(
        num_processes=1, gradient_accumulation_steps=1, distributed_type="DEEPSPEED", state=zero(2)
    )
    check_launch(ds, 1)
    with pytest.raises(BbiError, match="--grad-accum 4 under DeepSpeed"):
        check_launch(ds, 4)
    check_launch(SimpleNamespace(**{**vars(ds), "distributed_type": "MULTI_GPU"}), 4)
    # sharded parameters: the saved student would be one process's shard
    for sharded in ({**vars(ds), "state": zero(3)}, {**vars(ds), "distributed_type": "FSDP"}):
        with pytest.raises(BbiError, match="sharded parameters is not supported yet"):
            check_launch(SimpleNamespace(**sharded), 1)


def test_student_base_loads_directly_in_the_requested_dtype(micro_zoo, monkeypatch):
    """One from_pretrained per load, asked for the training dtype: never fp32 then a cast."""
    import transformers

    from distill.student import load_student

    calls = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        model = real(*args, **kwargs)
        asked = kwargs.get("dtype", kwargs.get("torch_dtype"))
        calls.append((asked, {p.dtype for p in model.parameters()}))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        calls.clear()
        model, _, _ = load_student("zoo:student", name)
        assert calls == [(dtype, {dtype})]
        assert {p.dtype for p in model.parameters()} == {dtype}


def test_documented_accelerate_configs_are_ones_accelerate_reads(tmp_path):
    """docs/multi-gpu.md's YAML files load as Accelerate configs, and every FSDP/DeepSpeed
    key is one `accelerate launch` takes (unknown nested keys would be silently ignored).
    They are not run here."""
    import re

    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    text = (REPO / "docs" / "multi-gpu.md").read_text(encoding="utf-8")
    launch_keys = {action.dest for action in launch_command_parser()._actions}
    kinds = []
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
        path = tmp_path / f"config{i}.yaml"
        path.write_text(block, encoding="utf-8")
        cfg = ClusterConfig.from_yaml_file(str(path))  # unknown top-level keys raise
        nested = {**(cfg.deepspeed_config or {}), **(cfg.fsdp_config or {})}
        assert set(nested) <= launch_keys, set(nested) - launch_keys
        assert cfg.num_processes == 4 and cfg.main_process_port == 0
        kinds.append((cfg.distributed_type.value, nested.get("zero_stage")))
    assert kinds == [("MULTI_GPU", None), ("DEEPSPEED", 2), ("DEEPSPEED", 3), ("FSDP", None)]
