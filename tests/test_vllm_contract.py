"""The vllm: backend's contract, against a fake ``vllm`` module (no GPU, no vLLM install).

The fake implements what bbi uses: ``LLM(model=..., **kw)`` with ``get_tokenizer()`` and
``generate(prompts, sampling_params)`` returning RequestOutput-shaped objects
(``outputs[0].text / .token_ids / .finish_reason``), ``SamplingParams(**kw)``, the V1
engine core's ``shutdown()`` and ``vllm.distributed.parallel_state``'s cleanup; it counts
engine constructions and cleanup calls.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import types
import weakref
from types import SimpleNamespace

import pytest

from bbi.errors import BbiError


class FakeTokenizer:
    chat_template = None  # bbi.chat then uses the plain "User: ...\nAssistant:" format

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        ids = [ord(c) % 251 for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


class FakeVLLM:
    """State of one fake vllm install: what was built, sampled and cleaned up."""

    def __init__(self, with_cleanup_all: bool = False):
        self.engines: list[dict] = []  # one dict of LLM(...) kwargs per construction
        self.sampling: list[dict] = []  # SamplingParams kwargs, in order
        self.events: list[str] = []  # construct:<model> / shutdown:<model> / cleanup calls
        self.live: list[weakref.ref] = []
        state = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw
                state.sampling.append(kw)

        class LLM:
            def __init__(self, model: str, **kw):
                state.engines.append(
                    {"model": model, **kw, "_env_offline": os.environ.get("HF_HUB_OFFLINE")}
                )
                state.events.append(f"construct:{model}")
                self.model = model
                self.tokenizer = FakeTokenizer()
                core = SimpleNamespace(shutdown=lambda: state.events.append(f"shutdown:{model}"))
                self.llm_engine = SimpleNamespace(engine_core=core)
                state.live.append(weakref.ref(self))

            def get_tokenizer(self):
                return self.tokenizer

            def generate(self, prompts, sampling_params, use_tqdm=False):
                assert len(prompts) == len(sampling_params)
                outs = []
                for p, sp in zip(prompts, sampling_params, strict=True):
                    ids = p["prompt_token_ids"]
                    n = min(sp.kw["max_tokens"], 3)
                    text = f" reply-{sum(ids) % 997}-{sp.kw['seed']}"
                    done = "length" if sp.kw["max_tokens"] <= 3 else "stop"
                    completion = SimpleNamespace(
                        text=text, token_ids=list(range(n)), finish_reason=done
                    )
                    outs.append(SimpleNamespace(prompt_token_ids=ids, outputs=[completion]))
                return outs

        ps = types.ModuleType("vllm.distributed.parallel_state")
        ps.destroy_model_parallel = lambda: state.events.append("destroy_model_parallel")
        ps.destroy_distributed_environment = lambda: state.events.append(
            "destroy_distributed_environment"
        )
        if with_cleanup_all:
            ps.cleanup_dist_env_and_memory = lambda: state.events.append(
                "cleanup_dist_env_and_memory"
            )
        dist = types.ModuleType("vllm.distributed")
        dist.parallel_state = ps
        mod = types.ModuleType("vllm")
        mod.LLM = LLM
        mod.SamplingParams = SamplingParams
        mod.distributed = dist
        self.modules = {
            "vllm": mod,
            "vllm.distributed": dist,
            "vllm.distributed.parallel_state": ps,
        }

    def count(self, event: str) -> int:
        return sum(e == event or e.startswith(event + ":") for e in self.events)


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "bbi-cache"))  # no shared response cache
    fake = FakeVLLM()
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return fake


def tiny_hf_dir(path, weights: bytes = b"weights-a"):
    """A directory in the Hugging Face checkpoint layout (only hashed, never loaded)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "tokenizer_config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    return path


def suite(n: int = 3) -> list[dict]:
    return [
        {"id": f"factual-{i:05d}", "category": "factual", "subcategory": "t",
         "split": "test" if i == 0 else "train", "prompt": f"What is {i} plus {i}?",
         "reference": None, "source": "test", "perturbation": None, "base_id": None}
        for i in range(n)
    ]  # fmt: skip


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_from_files_without_an_engine(fake_vllm, tmp_path):
    from bbi.backends import load_backend
    from bbi.fingerprint import spec_fingerprint, vllm_fingerprint

    model = tiny_hf_dir(tmp_path / "m")
    fp = spec_fingerprint(f"vllm:{model}")
    assert fake_vllm.engines == []  # hashed from the files: no engine
    hf_fp = spec_fingerprint(f"hf:{model}")
    # the same checkpoint hashes as hf: does, tagged with the backend (no shared cache entries)
    assert fp == vllm_fingerprint(hf_fp) and fp != hf_fp
    backend = load_backend(f"vllm:{model}")
    assert backend.fingerprint == fp  # what the loaded backend reports, pinned
    assert len(fake_vllm.engines) == 1
    backend.close()
    (model / "model.safetensors").write_bytes(b"weights-b")
    assert spec_fingerprint(f"vllm:{model}") != fp  # other weights, other fingerprint


def test_uncached_hub_id_is_one_line_error_without_an_engine(fake_vllm):
    from bbi.backends import load_backend
    from bbi.fingerprint import spec_fingerprint

    spec = "vllm:bbi-test-org/definitely-not-cached-model"
    for call in (lambda: spec_fingerprint(spec), lambda: load_backend(spec)):
        with pytest.raises(BbiError, match="not in the Hugging Face cache") as exc:
            call()
        assert "allow_download=true" in str(exc.value) and "\n" not in str(exc.value)
    assert fake_vllm.engines == []


def test_cached_hub_snapshot_is_loaded_from_its_local_directory(fake_vllm, tmp_path, monkeypatch):
    import huggingface_hub

    import bbi.backends.kinds
    import bbi.fingerprint
    from bbi.backends import load_backend

    snapshot = tiny_hf_dir(tmp_path / "snapshots" / "abc123")
    seen = {}

    def fake_snapshot_download(repo_id, revision=None, local_files_only=False, **kw):
        seen.update(repo_id=repo_id, revision=revision, local_files_only=local_files_only)
        return str(snapshot)

    monkeypatch.setattr(bbi.backends.kinds, "_hub_commit", lambda ms, trc, dl, hint: "abc123")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    backend = load_backend("vllm:org/model@v1")
    assert seen == {"repo_id": "org/model", "revision": "v1", "local_files_only": True}
    engine = fake_vllm.engines[0]
    assert engine["model"] == str(snapshot) and engine["revision"] is None
    assert backend.fingerprint == bbi.fingerprint.spec_fingerprint("vllm:org/model@v1")
    backend.close()


# ----------------------------------------------------------------------------- options
def test_engine_options_reach_llm_and_unknown_ones_are_refused(fake_vllm, tmp_path):
    from bbi.backends import load_backend

    model = tiny_hf_dir(tmp_path / "m")
    opts = dict(tensor_parallel_size=2, gpu_memory_utilization=0.5, max_model_len=128,
                quantization="awq", enforce_eager=True, seed=7)  # fmt: skip
    backend = load_backend(f"vllm:{model}", dtype="bfloat16", trust_remote_code=True, **opts)
    engine = fake_vllm.engines[0]
    assert {k: engine[k] for k in opts} == opts
    assert engine["dtype"] == "bfloat16" and engine["trust_remote_code"] is True
    assert engine["model"] == str(model) and engine["revision"] is None
    backend.close()
    load_backend(f"vllm:{model}", gpu_memory_utilization=1).close()  # an int is a fine float
    assert fake_vllm.engines[1]["gpu_memory_utilization"] == 1.0

    with pytest.raises(BbiError, match="unknown engine option 'swap_space'") as exc:
        load_backend(f"vllm:{model}", swap_space=4)
    msg = str(exc.value)
    assert "\n" not in msg
    for name in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype",
                 "quantization", "enforce_eager", "seed"):  # fmt: skip
        assert name in msg
    for bad, needle in [
        (dict(max_model_len="4096"), "max_model_len must be a int"),
        (dict(enforce_eager=1), "enforce_eager must be a bool"),
        (dict(tensor_parallel_size=True), "tensor_parallel_size must be a int"),
        (dict(gpu_memory_utilization=1.5), r"gpu_memory_utilization must be in \(0, 1\]"),
        (dict(dtype="float8"), "unknown dtype"),
        (dict(allow_download="yes"), "allow_download must be a bool"),
    ]:
        with pytest.raises(BbiError, match=needle):
            load_backend(f"vllm:{model}", **bad)
    assert len(fake_vllm.engines) == 2  # refused before any engine starts


def test_downloads_only_when_allowed(fake_vllm, tmp_path, monkeypatch):
    from bbi.backends import load_backend

    model = tiny_hf_dir(tmp_path / "m")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_backend(f"vllm:{model}").close()
    assert fake_vllm.engines[-1]["_env_offline"] == "1"  # offline while the engine starts
    assert "HF_HUB_OFFLINE" not in os.environ  # and restored after
    load_backend(f"vllm:{model}", allow_download=True).close()
    assert fake_vllm.engines[-1]["_env_offline"] is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    load_backend(f"vllm:{model}").close()
    assert fake_vllm.engines[-1]["_env_offline"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"


# ----------------------------------------------------------------------------- sampling
def test_per_request_seed_reaches_sampling_params(fake_vllm, tmp_path):
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    backend = load_backend(f"vllm:{tiny_hf_dir(tmp_path / 'm')}")
    outs = backend.generate(["a", "b"], GenerationConfig(max_new_tokens=8, temperature=0.7,
                                                         top_p=0.9, stop=("\n",)), [11, 22])  # fmt: skip
    assert [s["seed"] for s in fake_vllm.sampling] == [11, 22]
    first = fake_vllm.sampling[0]
    assert first["temperature"] == 0.7 and first["top_p"] == 0.9 and first["max_tokens"] == 8
    assert first["stop"] == ["\n"] and first["n"] == 1
    assert outs[0].text.startswith("reply-") and outs[0].text.endswith("-11")  # lstripped
    assert (outs[0].n_tokens, outs[0].finish_reason) == (3, "stop")
    fake_vllm.sampling.clear()
    greedy = backend.generate(["a"], GenerationConfig(max_new_tokens=2, temperature=0.0), [5])
    assert fake_vllm.sampling[0]["seed"] is None and fake_vllm.sampling[0]["top_p"] == 1.0
    assert greedy[0].finish_reason == "length"
    backend.close()


# ----------------------------------------------------------------------------- lifecycle
@pytest.mark.parametrize("with_cleanup_all", [False, True])
def test_close_frees_the_engine(monkeypatch, tmp_path, with_cleanup_all):
    import torch

    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    fake = FakeVLLM(with_cleanup_all=with_cleanup_all)
    for name, mod in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    calls = []
    real_collect = gc.collect
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("gc") or real_collect(*a))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))

    backend = load_backend(f"vllm:{tiny_hf_dir(tmp_path / 'm')}")
    model = fake.engines[0]["model"]
    backend.close()
    assert fake.count("shutdown") == 1
    if with_cleanup_all:  # the one call vLLM documents where it exists
        assert fake.events[-1] == "cleanup_dist_env_and_memory"
        assert fake.count("destroy_model_parallel") == 0
    else:
        assert fake.events[-2:] == ["destroy_model_parallel", "destroy_distributed_environment"]
    assert fake.events[1] == f"shutdown:{model}"
    assert "gc" in calls and calls[-1] == "empty_cache"
    assert all(ref() is None for ref in fake.live)  # no reference to the engine is left
    n = len(fake.events)
    backend.close()  # idempotent
    assert len(fake.events) == n
    with pytest.raises(BbiError, match="closed"):
        backend.generate(["a"], GenerationConfig(), [0])


def test_probe_starts_one_engine_per_spec_and_options(fake_vllm, tmp_path):
    from bbi.probe_run import NULL_ALIAS, ModelEntry, ProbeSettings, request_seed, run_probe
    from bbi.runstore import RunDir

    a = tiny_hf_dir(tmp_path / "a")
    b = tiny_hf_dir(tmp_path / "b", b"weights-b")
    t_args = {"max_model_len": 256, "enforce_eager": True}
    models = [
        ModelEntry("teacher", f"vllm:{a}", "teacher", t_args),
        ModelEntry(NULL_ALIAS, f"vllm:{a}", "null", dict(t_args)),
        ModelEntry("student", f"vllm:{b}", "student"),
    ]
    settings = ProbeSettings(max_new_tokens=4, batch_size=2, seed=3)
    run_probe(tmp_path / "run", models, suite(), settings, progress=False, similarity=False)

    # teacher + A/A null: one engine, with their options; the student: its own
    assert [e["model"] for e in fake_vllm.engines] == [str(a), str(b)]
    assert fake_vllm.engines[0]["max_model_len"] == 256
    assert fake_vllm.engines[0]["enforce_eager"] is True
    # each closed once, the teacher's before the student's engine starts
    assert fake_vllm.events == [
        f"construct:{a}", f"shutdown:{a}", "destroy_model_parallel",
        "destroy_distributed_environment",
        f"construct:{b}", f"shutdown:{b}", "destroy_model_parallel",
        "destroy_distributed_environment",
    ]  # fmt: skip
    run = RunDir(tmp_path / "run")
    t, n = run.responses("teacher"), run.responses(NULL_ALIAS)
    assert len(t) == len(n) == 3 and (t["text"] != n["text"]).all()  # other seed streams
    want = [request_seed(3, r["id"], 0) for r in suite()]
    assert [s["seed"] for s in fake_vllm.sampling[:3]] == want
    fps = run.manifest()["models"]
    assert fps["teacher"]["fingerprint"] == fps[NULL_ALIAS]["fingerprint"]

    # a warm rerun answers from the cache: no engine at all
    fake_vllm.events.clear()
    run_probe(tmp_path / "run", models, suite(), settings, progress=False, similarity=False)
    assert fake_vllm.events == [] and len(fake_vllm.engines) == 2


def test_backend_pool_closes_on_error_and_keeps_distinct_options_apart(fake_vllm, tmp_path):
    from bbi.probe_run import BackendPool

    model = f"vllm:{tiny_hf_dir(tmp_path / 'm')}"
    pool = BackendPool()
    opts = {"device": "auto", "dtype": "auto", "trust_remote_code": False}
    for _ in range(2):
        pool.reserve(model, opts)
    pool.reserve(model, {**opts, "max_model_len": 64})
    first = pool.get(model, opts)
    assert pool.get(model, dict(opts)) is first
    other = pool.get(model, {**opts, "max_model_len": 64})
    assert other is not first and len(fake_vllm.engines) == 2
    pool.release(model, opts)
    assert fake_vllm.count("shutdown") == 0  # one reserved user left
    pool.close_all()  # e.g. a model failed: everything still open is closed once
    assert fake_vllm.count("shutdown") == 2
    pool.close_all()
    assert fake_vllm.count("shutdown") == 2


def test_a_shared_backend_reports_each_models_own_api_usage(tmp_path, monkeypatch):
    from bbi.backends.base import Generation
    from bbi.probe_run import BackendPool, ModelEntry, ProbeSettings, backend_options, probe_model
    from bbi.runstore import RunDir

    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "bbi-cache"))

    class CountingAPI:
        chat_format = "plain"
        closed = 0

        def __init__(self):
            self.usage = {"requests": 0, "completion_tokens": 0}

        def generate(self, prompts, config, seeds, progress=False):
            self.usage["requests"] += len(prompts)
            self.usage["completion_tokens"] += 2 * len(prompts)
            return [Generation(f"a{s}", 2, "stop") for s in seeds]

        def close(self):
            CountingAPI.closed += 1

    made = []
    pool = BackendPool(factory=lambda spec, **kw: made.append(spec) or CountingAPI())
    run = RunDir(tmp_path / "r", create=True)
    spec = "openai:http://127.0.0.1:9/v1#m"
    settings = ProbeSettings(max_new_tokens=2)
    entries = [ModelEntry("teacher", spec, "teacher"), ModelEntry("teacher_null", spec, "null")]
    for e in entries:
        pool.reserve(e.spec, backend_options(e, settings))
    for e in entries:
        st = probe_model(run, e, suite(), settings, fingerprint="f" * 16, backends=pool)
        assert st["api_usage"] == {"requests": 3, "completion_tokens": 6}  # its own share
        assert CountingAPI.closed == 0  # the pool closes, not probe_model
    assert [str(m) for m in made] == [spec]
    opts = backend_options(entries[0], settings)
    assert opts == {"device": "auto", "dtype": "auto", "trust_remote_code": False}
    pool.release(spec, opts)
    assert CountingAPI.closed == 0
    pool.release(spec, opts)
    assert CountingAPI.closed == 1


# ----------------------------------------------------------------------------- CPU build
@pytest.fixture
def fake_cpu_vllm(fake_vllm, monkeypatch):
    """The fake as vLLM's CPU build (``current_platform.is_cpu()``)."""
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: True)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    return fake_vllm


def test_cpu_build_defaults_match_hf_and_work_out_of_the_box(fake_cpu_vllm, tmp_path):
    from bbi.backends import load_backend
    from bbi.backends.vllm import CPU_KV_CACHE_BYTES

    model = tiny_hf_dir(tmp_path / "m")
    load_backend(f"vllm:{model}").close()
    engine = fake_cpu_vllm.engines[-1]
    assert engine["dtype"] == "float32"  # hf:'s dtype on CPU, not vLLM's bfloat16
    assert engine["enforce_eager"] is True and engine["enable_chunked_prefill"] is False
    assert 0 < engine["kv_cache_memory_bytes"] <= CPU_KV_CACHE_BYTES
    assert "gpu_memory_utilization" not in engine
    opts = dict(dtype="bfloat16", enforce_eager=False, enable_chunked_prefill=True,
                max_num_batched_tokens=512, max_num_seqs=8, kv_cache_memory_bytes=1 << 30)  # fmt: skip
    load_backend(f"vllm:{model}", **opts).close()  # what the caller gives wins
    assert {k: fake_cpu_vllm.engines[-1][k] for k in opts} == opts
    with pytest.raises(BbiError, match="kv_cache_memory_bytes instead"):
        load_backend(f"vllm:{model}", gpu_memory_utilization=0.5)
    with pytest.raises(BbiError, match="max_num_seqs must be >= 1"):
        load_backend(f"vllm:{model}", max_num_seqs=0)


def test_gpu_build_keeps_vllm_defaults(fake_vllm, tmp_path):
    from bbi.backends import load_backend

    load_backend(f"vllm:{tiny_hf_dir(tmp_path / 'm')}").close()
    engine = fake_vllm.engines[-1]
    assert engine["dtype"] == "auto"
    assert not {"enforce_eager", "enable_chunked_prefill", "kv_cache_memory_bytes"} & set(engine)


def _sleeper() -> None:
    import time

    time.sleep(60)


def test_engine_start_and_death_are_one_line_errors_and_leave_no_process(fake_vllm, tmp_path):
    import multiprocessing

    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    model = tiny_hf_dir(tmp_path / "m")
    real_llm = fake_vllm.modules["vllm"].LLM
    # Children other tests left (e.g. joblib's reusable workers) are not the engine's.
    before = set(multiprocessing.active_children())

    class FailingLLM:
        def __init__(self, **kw):
            proc = multiprocessing.get_context("spawn").Process(target=_sleeper, name="EngineCore")
            proc.start()  # the engine process, left behind by a failed start
            raise RuntimeError("Engine core initialization failed. See root cause above.\n" * 3)

    fake_vllm.modules["vllm"].LLM = FailingLLM
    with pytest.raises(BbiError, match="vLLM cannot start") as exc:
        load_backend(f"vllm:{model}")
    assert "\n" not in str(exc.value) and "RuntimeError" in str(exc.value)
    assert not set(multiprocessing.active_children()) - before

    class EngineDeadError(Exception):
        pass

    class DyingLLM(real_llm):
        def __init__(self, model: str, **kw):
            super().__init__(model, **kw)
            self.proc = multiprocessing.get_context("spawn").Process(target=_sleeper)
            self.proc.start()  # an engine core process that shutdown() does not stop

        def generate(self, *a, **kw):
            raise EngineDeadError("EngineCore encountered an issue.\nSee stack trace above.")

    fake_vllm.modules["vllm"].LLM = DyingLLM
    backend = load_backend(f"vllm:{model}")
    with pytest.raises(BbiError, match="the vLLM engine failed: EngineDeadError") as exc:
        backend.generate(["a"], GenerationConfig(), [0])
    assert "\n" not in str(exc.value)
    backend.close()  # the engine process is reaped: no zombie, no orphan
    assert not set(multiprocessing.active_children()) - before


# ----------------------------------------------------------------------------- real engine
@pytest.mark.slow
def test_real_vllm_cpu_engine_agrees_with_hf(micro_zoo):
    """Opt-in (-m slow): the real vLLM (e.g. its CPU build) on the micro zoo teacher,
    greedy, float32 on both sides: every answer equals hf:'s."""
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install 'bbi[vllm]')")
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    prompts = ["What is 2 plus 3?", "Name a colour.", "Hi"]
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.0, batch_size=4)
    hf = load_backend(f"hf:{micro_zoo / 'teacher'}", device="cpu", dtype="float32")
    expected = [g.text for g in hf.generate(prompts, cfg, [0, 1, 2])]
    vl = load_backend(f"vllm:{micro_zoo / 'teacher'}", dtype="float32")
    try:
        assert [g.text for g in vl.generate(prompts, cfg, [0, 1, 2])] == expected
        sampled = GenerationConfig(max_new_tokens=12, temperature=0.7, top_p=0.95)
        assert len(vl.generate(prompts, sampled, [0, 1, 2])) == 3  # seeded sampling runs
    finally:
        vl.close()
