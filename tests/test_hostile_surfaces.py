"""Hostile input against the newer surfaces: distillation outputs, serve limits, full and
read-only disks, links and FIFOs inside a run, and checks that must run before any work.

One test per class of defect. Every data-loss case snapshots the run AND the files
outside it (the directory a symbolic link points to, the user's own directory) and
compares bytes before and after. No model is loaded: each command fails before it
would need one (a guard makes loading one an error).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_helpers import assert_one_line_error, suite_records, write_jsonl
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.errors import BbiError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing here may build the zoo or load a model: each command must fail first."""
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BBI_ZOO_CONFIG", "micro")
    import bbi.backends

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the command's checks")

    monkeypatch.setattr(bbi.backends, "load_backend", no_load)
    try:
        import distill.student

        monkeypatch.setattr(distill.student, "load_model", no_load)
        monkeypatch.setattr("distill.method.load_student", no_load)
    except ImportError:  # pragma: no cover
        pass


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(*roots: Path) -> dict[str, tuple[bytes | None, str | None]]:
    """Every entry under each root: bytes of files, targets of links (never followed)."""
    out: dict[str, tuple[bytes | None, str | None]] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                if p.is_symlink():
                    out[str(p)] = (None, os.readlink(p))
                elif p.is_file():
                    out[str(p)] = (p.read_bytes(), None)
                else:
                    out[str(p)] = (None, None)
    return out


def import_into(run: Path, tmp_path: Path, alias: str, role: str, spec: str | None = None):
    src = write_jsonl(
        tmp_path / f"{alias}.jsonl",
        [{"prompt_id": f"q{i}", "text": f"a{i} {alias}"} for i in range(10)],
    )
    suite = write_jsonl(tmp_path / "suite.jsonl", suite_records())
    args = ["probe", "import", src, "--run", run, "--alias", alias, "--role", role]
    args += ["--suite", suite, "--no-similarity"] + (["--spec", spec] if spec else [])
    return invoke(*args)


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A run with a teacher and the base student (alias ``student``, a zoo spec)."""
    path = tmp_path / "run"
    assert import_into(path, tmp_path, "teacher", "teacher", "zoo:teacher").exit_code == 0
    res = import_into(path, tmp_path, "student", "student", "zoo:student")
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture()
def user_dir(tmp_path: Path) -> Path:
    """A directory of the user's own files, with the names bbi's outputs use."""
    d = tmp_path / "mine"
    (d / "teacher").mkdir(parents=True)
    (d / "work").mkdir()
    (d / "README.md").write_text("my notes\n")
    (d / "teacher" / "weights.bin").write_bytes(b"\x00precious")
    (d / "work" / "draft.txt").write_text("draft\n")
    return d


# ---- 1. outputs: a run, the user's files, links, aliases are never written over --------


@pytest.mark.parametrize("method", ["bird", "circuit"])
def test_task_distill_out_over_a_run_or_user_files_is_refused(
    method: str, run: Path, user_dir: Path
) -> None:
    before = snapshot(run.parent)
    res = invoke("distill", method, "zoo:student", "--out", run)
    assert_one_line_error(res, "--out", "run directory")
    res = invoke("distill", method, "zoo:student", "--out", user_dir)
    assert_one_line_error(res, "--out", "files bbi did not write", "--replace")
    res = invoke("distill", method, "zoo:student", "--run", run, "--out", run / "responses")
    assert_one_line_error(res, "--out", "run's own files")
    # a command that fails after its checks leaves no new output directory behind
    res = invoke("distill", method, "zoo:student", "--teacher", "openai:http://x/v1#m",
                 "--out", run.parent / "new")  # fmt: skip
    assert res.exit_code == 2 and not (run.parent / "new").exists(), res.output
    assert snapshot(run.parent) == before


@pytest.mark.parametrize("command", ["lora", "kd"])
def test_distill_out_over_user_files_is_refused(command: str, run: Path, user_dir: Path) -> None:
    before = snapshot(run.parent)
    extra = ["--teacher-spec", "zoo:teacher"] if command == "kd" else []
    res = invoke("distill", command, run, "--out", user_dir, *extra)
    assert_one_line_error(res, str(user_dir), "files bbi did not write", "--replace")
    res = invoke("distill", command, run, "--out", run, *extra)
    assert_one_line_error(res, "run directory")
    assert snapshot(run.parent) == before


def test_a_link_inside_an_output_out_of_the_run_is_never_written_through(
    run: Path, tmp_path: Path
) -> None:
    from bbi.fsafe import write_marker

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "adapter_model.safetensors").write_bytes(b"keep me")
    out = run / "adapters" / "student_lora"
    out.mkdir(parents=True)
    write_marker(out, "distill-lora")  # bbi's own earlier output...
    (out / "adapter_model.safetensors").symlink_to(outside / "adapter_model.safetensors")
    before = snapshot(run.parent)
    res = invoke("distill", "lora", run)
    assert_one_line_error(res, "symbolic link")
    # ...and a link in place of the checkpoint's staging directory
    (out / "adapter_model.safetensors").unlink()
    (out / "checkpoint.tmp").symlink_to(outside, target_is_directory=True)
    res = invoke("distill", "lora", run, "--resume")
    assert_one_line_error(res, "symbolic link")
    (out / "checkpoint.tmp").unlink()
    (run / "adapters" / "linked").symlink_to(outside, target_is_directory=True)
    res = invoke("distill", "lora", run, "--alias", "linked")
    assert_one_line_error(res, "symbolic link")
    assert snapshot(outside) == {str(outside / "adapter_model.safetensors"): (b"keep me", None)}
    (run / "adapters" / "linked").unlink()
    before.pop(str(out / "adapter_model.safetensors"))
    assert snapshot(run.parent) == before


@pytest.mark.parametrize("alias", ["student", "teacher"])
def test_a_distilled_student_never_takes_an_alias_of_the_run(run: Path, alias: str) -> None:
    before = snapshot(run.parent)
    for command in (["lora", run], ["bird", "zoo:student", "--run", run]):
        res = invoke("distill", *command, "--alias", alias)
        assert_one_line_error(res, alias)
    assert snapshot(run.parent) == before


def test_replace_keeps_the_old_directory(tmp_path: Path, user_dir: Path) -> None:
    from bbi.fsafe import MARKER, check_output_dir, prepare_output_dir

    before = snapshot(user_dir)
    with pytest.raises(BbiError, match="--replace"):
        check_output_dir(user_dir, "distill-bird")
    check_output_dir(user_dir, "distill-bird", replace=True)
    backup = prepare_output_dir(user_dir, "distill-bird", replace=True)
    assert backup is not None and backup.name.startswith("mine.replaced-")
    assert {k.replace(str(backup), str(user_dir)): v for k, v in snapshot(backup).items()} == before
    assert [p.name for p in user_dir.iterdir()] == [MARKER]
    check_output_dir(user_dir, "distill-bird")  # now bbi's own: a rerun may use it
    with pytest.raises(BbiError, match="another kind"):
        check_output_dir(user_dir, "distill-circuit")


def test_staged_outputs_appear_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    from bbi import fsafe

    out = tmp_path / "out"
    with fsafe.staged_dir(out, "k") as stage:
        (stage / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1" and fsafe.marker_kind(out) == "k"
    before = snapshot(tmp_path)
    with pytest.raises(RuntimeError), fsafe.staged_dir(out, "k") as stage:
        (stage / "a.txt").write_text("2")
        raise RuntimeError("killed mid-write")
    assert snapshot(tmp_path) == before

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(BbiError, match="no space left"), fsafe.staged_files(out) as stage:
        (stage / "a.txt").write_text("3")
        monkeypatch.setattr(fsafe.os, "replace", full)
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    # a new output that fails with nothing to resume goes; one with a checkpoint stays
    new = tmp_path / "new"
    for keep in (False, True):
        with (
            pytest.raises(BbiError, match="no space left"),
            fsafe.removed_on_error(new, True, unless=new / "state.json"),
        ):
            new.mkdir()
            if keep:
                (new / "state.json").write_text("{}")
            raise OSError(errno.ENOSPC, "No space left on device", str(new / "x"))
        assert new.exists() == keep


# ---- 2. full and read-only disks ---------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
@pytest.mark.parametrize("fails", ["run.yaml", "manifest.json", "x.jsonl"])
def test_a_failed_disk_leaves_no_half_applied_import(
    run: Path, tmp_path: Path, monkeypatch, code: int, fails: str
) -> None:
    import bbi.runstore

    real = os.replace

    def failing(src, dst, *a, **k):  # putting new data in place fails, renames back do not
        if Path(dst).name == fails and ".keep-" not in Path(src).name:
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(bbi.runstore.os, "replace", failing)
    src = write_jsonl(
        tmp_path / "x-src.jsonl", [{"prompt_id": f"q{i}", "text": "y"} for i in range(10)]
    )
    before = snapshot(run.parent)
    res = invoke("probe", "import", src, "--run", run, "--alias", "x", "--role", "student",
                 "--no-similarity")  # fmt: skip
    assert_one_line_error(res, "no space left" if code == errno.ENOSPC else "read-only")
    assert snapshot(run.parent) == before
    # into a new run: no run directory is left behind
    res = invoke("probe", "import", src, "--run", tmp_path / "new", "--alias", "x",
                 "--role", "teacher", "--suite", tmp_path / "suite.jsonl", "--no-similarity")  # fmt: skip
    assert res.exit_code == 2 and not (tmp_path / "new").exists(), res.output


def test_a_failed_disk_mid_import_of_several_models_changes_nothing(
    run: Path, tmp_path: Path, monkeypatch
) -> None:
    """bbi.ingest imports several models as one unit: the second model's file failing
    to land undoes the first's (and leaves run.yaml, manifest and results as they were)."""
    from bbi.ingest import ImportedModel, RunImport, response_line

    real = os.replace

    def failing(src, dst, *a, **k):
        if Path(dst).name == "b.jsonl" and ".keep-" not in Path(src).name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    before = snapshot(run.parent)
    job = RunImport(run)
    for alias in ("a", "b"):
        lines = [response_line(f"q{i}", 0, f"{alias}{i}") for i in range(10)]
        job.add(ImportedModel(alias, "student", lines, tmp_path / f"{alias}.jsonl"))
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(BbiError, match="no space left"):
        job.commit()
    monkeypatch.setattr(os, "replace", real)
    assert snapshot(run.parent) == before


def test_a_full_disk_while_appending_keeps_the_file(tmp_path: Path, monkeypatch) -> None:
    from bbi.runstore import append_jsonl

    path = write_jsonl(tmp_path / "r.jsonl", [{"a": 1}])
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(BbiError, match="no space left"):
        append_jsonl(path, [{"a": 2}])
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_text() == '{"a": 1}\n'


def test_a_name_too_long_for_the_file_system_is_one_line(run: Path, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "x-src.jsonl", [{"prompt_id": f"q{i}", "text": "y"} for i in range(10)]
    )
    before = snapshot(run.parent)
    res = invoke("probe", "import", src, "--run", run, "--alias", "a" * 300, "--role", "student",
                 "--no-similarity")  # fmt: skip
    assert_one_line_error(res, "longer than 128")
    assert snapshot(run.parent) == before
    # a run, suite or comparison name the file system cannot hold: one line, nothing made
    long = tmp_path / ("r" * 300)
    res = invoke("probe", "import", src, "--run", long, "--alias", "x", "--role", "teacher",
                 "--suite", tmp_path / "suite.jsonl", "--no-similarity")  # fmt: skip
    assert_one_line_error(res, "file name too long")
    res = invoke("probe", "import", src, "--run", tmp_path / "new", "--alias", "x",
                 "--role", "teacher", "--suite", long, "--no-similarity")  # fmt: skip
    assert_one_line_error(res, "file name too long")
    assert snapshot(run.parent) == before


# ---- 3. FIFOs where a run has files: refused, never a hang -------------------------------


ATTACK = ["--adversary", "surface", "--seeds", "1", "--budget", "8", "--strategy", "random"]
ATTACK += ["--test-queries", "1", "--n-bootstrap", "20", "--n-permutations", "20", "--no-progress"]


@pytest.fixture(scope="module")
def attacked(tmp_path_factory) -> Path:
    """A synthetic run that has been attacked (it has results.json), built once."""
    from discriminators import synthetic

    path = synthetic.make_run(
        tmp_path_factory.mktemp("attacked") / "syn", n_per_category=8, test_fraction=0.4
    ).path
    res = invoke("attack", path, *ATTACK)
    assert res.exit_code == 0, res.output
    return path


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
@pytest.mark.parametrize("name", ["responses/student.jsonl", "suite.jsonl"])
def test_a_fifo_in_the_run_is_refused_not_waited_on(
    attacked: Path, tmp_path: Path, name: str
) -> None:
    import shutil

    run = Path(shutil.copytree(attacked, tmp_path / "run"))
    (run / name).unlink()
    os.mkfifo(run / name)
    signal.signal(signal.SIGALRM, lambda *a: pytest.fail("blocked on a FIFO"))
    signal.alarm(60)
    try:
        for command in (["report", run], ["attack", run, *ATTACK]):
            res = invoke(*command)
            assert_one_line_error(res, "not a regular file")
    finally:
        signal.alarm(0)


# ---- 4. checked before any work ----------------------------------------------------------


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("teacher: zoo:teacher\nteacher: zoo:student\n", encoding="utf-8")
    res = invoke("run", "--config", cfg, "--run", tmp_path / "r")
    assert_one_line_error(res, f"{cfg}:2", "duplicate key 'teacher'")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--teacher", "openai:http://127.0.0.1:9/v1#m", "--teacher-args", "timeout=inf"],
         "timeout must be a finite number"),
        (["--teacher", "openai:http://127.0.0.1:9/v1#m", "--teacher-args", "price_input=1e308"],
         "price_input must be in"),
        (["--teacher", "zoo:teacher", "--teacher-args", "device=bogus"], "unknown device 'bogus'"),
        (["--teacher", "zoo:teacher", "--student", "zoo:student", "--student-args", "dtype=int3"],
         "unknown dtype 'int3'"),
    ],
)  # fmt: skip
def test_model_arguments_are_checked_before_anything_runs(
    run: Path, args: list[str], needle: str
) -> None:
    before = snapshot(run.parent)
    res = invoke("probe", "run", "--run", run, *args)
    assert_one_line_error(res, needle)
    assert snapshot(run.parent) == before
    res = invoke("probe", "run", "--run", run.parent / "fresh", *args)
    assert_one_line_error(res, needle)
    assert not (run.parent / "fresh").exists()


def test_results_copied_from_another_run_are_refused(
    attacked: Path, run: Path, tmp_path: Path
) -> None:
    from discriminators import synthetic

    small = synthetic.make_run(tmp_path / "small", n_per_category=3, test_fraction=0.4).path
    (small / "results.json").write_bytes((attacked / "results.json").read_bytes())
    before = snapshot(small)
    assert_one_line_error(invoke("report", small), "not written for this run", "prompts")
    assert_one_line_error(invoke("attack", small, *ATTACK), "not written for this run")
    assert snapshot(small) == before
    # a run made by bbi probe run: its manifest and results.json record the suite's hash
    man = json.loads((run / "manifest.json").read_text())
    man["suite"] = {"hash": "sha256:" + "1" * 64, "n": 10}
    (run / "manifest.json").write_text(json.dumps(man))
    (run / "results.json").write_text(json.dumps(
        {"schema_version": 1, "run": "run", "suite": {"hash": "sha256:" + "0" * 64, "n": 10}}
    ))  # fmt: skip
    assert_one_line_error(invoke("report", run), "not written for this run", "suite hash")
    (run / "results.json").write_text(json.dumps(
        {"schema_version": 1, "run": "run", "suite": {"hash": "sha256:" + "1" * 64, "n": 10},
         "models": {"teacher": {"fingerprint": "sha256:other"}}}
    ))  # fmt: skip
    assert_one_line_error(invoke("report", run), "not written for this run", "fingerprint")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["lora", "{run}", "--save-every-steps", "-1"], "--save-every-steps must be >= 0"),
        (["lora", "{run}", "--stop-after-steps", "0"], "--stop-after-steps must be >= 1"),
        (["wda", "{run}", "--teacher-spec", "zoo:teacher", "--resume"], "nothing to resume"),
        (["lora", "{run}", "--resume"], "nothing to resume"),
    ],
)
def test_distill_options_are_checked_before_the_model_loads(
    run: Path, args: list[str], needle: str
) -> None:
    before = snapshot(run.parent)
    res = invoke("distill", *[a.format(run=run) for a in args])
    assert_one_line_error(res, needle)
    assert snapshot(run.parent) == before


def test_a_missing_run_is_answered_before_the_heavy_imports(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        from typer.testing import CliRunner
        from bbi.app.cli import app
        res = CliRunner().invoke(app, ["distill", "lora", {str(tmp_path / "nope")!r}])
        assert res.exit_code == 2 and "run directory not found" in res.output, res.output
        assert "distill.lora" not in sys.modules and "torch" not in sys.modules
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_damaged_resume_files_are_one_line(tmp_path: Path) -> None:
    from distill.trainer import _metrics_lines, read_checkpoint_state

    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    state = {"global_step": 3, "micro_in_epoch": 0, "epoch_loss_sum": 0.0,
             "epoch_loss_steps": 1, "train_loss_per_epoch": [], "eval_loss_per_epoch": []}  # fmt: skip
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(BbiError, match="'epoch' missing"):
        read_checkpoint_state(ckpt)
    metrics = tmp_path / "metrics.jsonl"
    for bad in (b'{"step": 1}\n[1, 2]\n{"step": 2}\n', b'{"step": 1}\n\xff\xfe\n'):
        metrics.write_bytes(bad)
        with pytest.raises(BbiError, match=r"metrics.jsonl:2"):
            _metrics_lines(metrics, 5)
    metrics.write_bytes(b'{"step": 1}\n{"step": 9}\n{"ste')  # a torn tail: a kill
    assert _metrics_lines(metrics, 5) == ['{"step": 1}']


def test_a_corrupt_safetensors_model_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from transformers import LlamaConfig

    from bbi.backends.hf import load_hf_parts

    d = tmp_path / "model"
    d.mkdir()
    LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=2, vocab_size=64).save_pretrained(d)  # fmt: skip
    (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: object())
    with pytest.raises(BbiError, match="cannot load model"):
        load_hf_parts(f"hf:{d}", device="cpu", dtype="float32")


# ---- 5. BIRD's probes on a small config --------------------------------------------------


@pytest.mark.parametrize("labels", [[0] * 6, [1] * 6, [0, 0, 0, 0, 0, 1]])
def test_bird_probes_take_a_single_class(labels: list[int]) -> None:
    from distill.bird import fit_probe, probe_predictions

    x, y = np.random.default_rng(0).normal(size=(6, 3)), np.array(labels)
    assert probe_predictions(x, y, 0).shape == y.shape
    assert fit_probe(x, y).predict(x).shape == y.shape


# ---- 6. serve: capped, OpenAI-shaped errors ----------------------------------------------


class _Echo:
    fingerprint = "echo"

    def generate(self, prompts, config, seeds):
        from bbi.backends.base import Generation

        return [Generation(text=p, n_tokens=1, finish_reason="stop") for p in prompts]

    def close(self) -> None:
        pass


@pytest.fixture()
def client():
    from fastapi.testclient import TestClient

    from bbi.serve import create_app

    with TestClient(create_app(_Echo(), "m", max_body_bytes=10_000)) as c:
        yield c


def _openai_error(res, status: int, needle: str) -> None:
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and needle in err["message"], err


def test_serve_refuses_large_bodies_before_reading_them(client) -> None:
    big = b'{"model": "m", "messages": [{"role": "user", "content": "' + b"x" * 20_000 + b'"}]}'
    _openai_error(client.post("/v1/chat/completions", content=big), 413, "too large")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 1000

    _openai_error(client.post("/v1/chat/completions", content=chunks()), 413, "too large")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (json.dumps({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": 5}]}]}).encode(), "content[0].text must be a string"),
        (b'{"model": "m", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nested deeper"),
        (b'{"model": "m\xff", "messages": []}', "not UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"model": "m"}', "messages"),
    ],
)  # fmt: skip
def test_serve_bad_bodies_are_openai_shaped_400s(client, body: bytes, needle: str) -> None:
    _openai_error(client.post("/v1/chat/completions", content=body), 400, needle)


def test_serve_refuses_an_empty_name() -> None:
    assert_one_line_error(invoke("serve", "zoo:teacher", "--name", ""), "--name")
    assert_one_line_error(
        invoke("serve", "zoo:teacher", "--max-body-bytes", "0"), "--max-body-bytes"
    )


# ---- 7. attack workers die with the sweep ------------------------------------------------


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_attack_workers_die_with_their_parent(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import os, sys, time
        from discriminators.attack import _parallel
        from joblib import delayed
        for pid in _parallel(2)(delayed(os.getpid)() for _ in range(4)):
            print(pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = {int(proc.stdout.readline()) for _ in range(4)}
    proc.kill()  # SIGKILL: no cleanup in the parent at all
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.2)
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and
             "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]  # fmt: skip
    assert not alive, f"orphaned workers: {alive}"


@pytest.mark.skipif(sys.platform != "linux", reason="process groups, /proc")
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_while_workers_start_prints_no_worker_tracebacks(delay: float) -> None:
    code = textwrap.dedent("""
        import sys, time
        from joblib import delayed
        from discriminators.attack import _parallel
        print("go", flush=True)
        try:
            for _ in _parallel(2)(delayed(time.sleep)(5) for _ in range(4)):
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "go"
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=60)
    assert "interrupted" in out, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_sigterm_to_a_parallel_attack_keeps_the_previous_sweep(
    attacked: Path, tmp_path: Path
) -> None:
    import shutil

    import psutil

    run = Path(shutil.copytree(attacked, tmp_path / "run"))
    before = snapshot(run)
    slow = ["--adversary", "surface", "--seeds", "8", "--budget", "8,16", "--strategy",
            "random", "--n-bootstrap", "5000", "--n-permutations", "5000", "--no-progress",
            "--n-jobs", "2"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "bbi.app.cli", "attack", str(run), *slow],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    workers: list = []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = [c for c in parent.children(recursive=True) if "loky" in " ".join(c.cmdline())]
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert proc.poll() is None and workers, "the sweep ended before it could be stopped"
    proc.terminate()
    proc.communicate(timeout=60)
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"orphaned workers: {alive}"
    assert snapshot(run) == before
