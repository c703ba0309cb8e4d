"""A served teacher: `bbi serve`'s log-probabilities (vLLM's shapes) and cached KD through
an endpoint, against the micro zoo teacher served on loopback in this process."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bbi.backends import GenerationConfig
from bbi.config import KDSettings
from bbi.errors import BbiError

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_KD = dict(epochs=1, batch_size=8, max_length=64, eval_fraction=0.2, dropout=0.0)
# Served and local top-k come from the same float32 log-softmax of the same model; the
# forward passes differ only in batching (padding), a few 1e-7, and both sides round to
# float16 (relative spacing 2**-10): one rounding step apart at most, so rtol 1e-3. Near-
# ties at the k-th place could swap ids; only positions whose ids agree are compared value
# by value. Measured on the micro pair (57 positions, k 16): every id equal, every stored
# log-prob bit-identical, tail probabilities 4.6e-7 apart; eval and first-step losses from
# the two caches 1e-8 apart (relative).
LP_RTOL = 1e-3
TAIL_ATOL = 1e-5  # the tail's probability: 1 - sum(top k) there, the exact rest here
LOSS_REL = 1e-5  # first eval / step loss from the two caches


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(backend, name: str, **limits):
    """``backend`` behind ``bbi serve``'s app (uvicorn in a thread, a free loopback port)."""
    import uvicorn

    from bbi.serve import create_app

    port = _free_port()
    app = create_app(backend, name, max_batch=8, **limits)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(micro_teacher):
    with serving(micro_teacher, "zoo:teacher", max_logprobs=32) as url:
        yield url


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{url}{path}", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _local_logprobs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    return torch.log_softmax(logits.float(), dim=-1)


# ---------------------------------------------------------------------------------------
# bbi serve: /v1/completions and chat logprobs, vLLM's shapes
# ---------------------------------------------------------------------------------------
def test_completions_score_token_ids_like_vllm(server, micro_teacher):
    ids = micro_teacher.encode_prompt("What is the capital of Japan?")
    code, resp = _post(server, "/completions", {
        "model": "zoo:teacher", "prompt": ids, "echo": True, "max_tokens": 0, "logprobs": 3,
        "prompt_logprobs": 5, "return_tokens_as_token_ids": True,
    })  # fmt: skip
    assert code == 200, resp
    assert resp["object"] == "text_completion" and resp["usage"]["prompt_tokens"] == len(ids)
    assert resp["usage"]["completion_tokens"] == 0
    choice = resp["choices"][0]
    assert choice["text"] == micro_teacher.tokenizer.decode(ids)  # echo only
    lp = choice["logprobs"]
    assert lp["tokens"] == [f"token_id:{t}" for t in ids]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    local = _local_logprobs(micro_teacher.model, ids)
    for p in range(1, len(ids)):
        want = float(local[p - 1, ids[p]])
        assert lp["token_logprobs"][p] == pytest.approx(want, abs=1e-4)
        top = lp["top_logprobs"][p]  # the top 3, plus the token itself when not among them
        best = local[p - 1].topk(3)
        assert {f"token_id:{t}" for t in best.indices.tolist()} <= set(top)
        assert len(top) == 3 + (ids[p] not in best.indices.tolist())
    plp = choice["prompt_logprobs"]  # vLLM's extension: by token id, with ranks
    assert plp[0] is None and len(plp) == len(ids)
    for p in range(1, len(ids)):
        entry = plp[p]
        ranked = sorted(entry.items(), key=lambda kv: kv[1]["rank"])
        best = local[p - 1].topk(5)
        assert [int(t) for t, _ in ranked[:5]] == best.indices.tolist()
        np.testing.assert_allclose(
            [v["logprob"] for _, v in ranked[:5]], best.values.tolist(), atol=1e-4
        )
        assert entry[str(ids[p])]["rank"] == int((local[p - 1] > local[p - 1, ids[p]]).sum()) + 1
        assert all(isinstance(v["decoded_token"], str) for v in entry.values())


def test_prompt_logprobs_do_not_depend_on_batching(micro_teacher):
    seqs = [micro_teacher.encode_prompt(p) for p in ("Hi", "What is 7 plus 5?", "List a, b.")]
    seqs.append([seqs[0][0]])  # one token: no distribution to report
    together = micro_teacher.prompt_logprobs(seqs, 5)
    alone = micro_teacher.prompt_logprobs(seqs, 5, batch_size=8, batch_tokens=1)
    assert together[-1].top_ids == [] and [len(x.ranks) for x in together[:-1]] == [
        len(s) - 1 for s in seqs[:-1]
    ]
    for a, b in zip(together, alone, strict=True):
        assert a.top_ids == b.top_ids and a.ranks == b.ranks
        np.testing.assert_allclose(a.top_logprobs, b.top_logprobs, atol=1e-5)


def test_completions_generate_from_text_and_ids_and_echo(server, micro_teacher):
    ids = micro_teacher.encode_prompt("List these words: a, b.")
    cfg = GenerationConfig(max_new_tokens=6, temperature=1.0)
    (gen, gen_ids), = micro_teacher.generate_ids([ids], cfg, [7])  # fmt: skip
    assert gen == micro_teacher.generate(["List these words: a, b."], cfg, [7])[0]
    code, resp = _post(server, "/completions", {
        "model": "zoo:teacher", "prompt": ids, "max_tokens": 6, "seed": 7, "logprobs": 2,
    })  # fmt: skip
    assert code == 200, resp
    choice = resp["choices"][0]
    assert choice["text"] == gen.text and choice["finish_reason"] == gen.finish_reason
    assert resp["usage"]["completion_tokens"] == len(gen_ids) == gen.n_tokens
    assert len(choice["logprobs"]["tokens"]) == len(gen_ids)  # no echo: generated only
    local = _local_logprobs(micro_teacher.model, ids + gen_ids)
    np.testing.assert_allclose(
        choice["logprobs"]["token_logprobs"],
        [float(local[len(ids) - 1 + j, t]) for j, t in enumerate(gen_ids)],
        atol=1e-4,
    )
    # A text prompt is tokenized raw (no chat template), BOS as the tokenizer adds it.
    text = micro_teacher.tokenizer.decode(ids)
    code, echoed = _post(server, "/completions", {
        "model": "zoo:teacher", "prompt": text, "max_tokens": 6, "seed": 7, "echo": True,
        "add_special_tokens": False,
    })  # fmt: skip
    assert code == 200, echoed
    assert echoed["choices"][0]["text"] == text + gen.text
    assert echoed["usage"]["prompt_tokens"] == len(micro_teacher.tokenize(text, False))


def test_chat_logprobs_for_generated_tokens(server, micro_teacher):
    import openai

    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    prompt = "Write the word lamp in capital letters."
    kw = dict(model="zoo:teacher", messages=[{"role": "user", "content": prompt}],
              max_tokens=8, temperature=1.0, seed=3)  # fmt: skip
    plain = client.chat.completions.create(**kw)
    assert plain.choices[0].logprobs is None
    resp = client.chat.completions.create(**kw, logprobs=True, top_logprobs=4)
    choice = resp.choices[0]
    assert choice.message.content == plain.choices[0].message.content  # same sample
    content = choice.logprobs.content
    assert len(content) == resp.usage.completion_tokens
    ids = micro_teacher.encode_prompt(prompt)
    ((_, gen_ids),) = micro_teacher.generate_ids(  # fmt: skip
        [ids], GenerationConfig(max_new_tokens=8, temperature=1.0), [3]
    )
    local = _local_logprobs(micro_teacher.model, ids + gen_ids)
    for j, (item, t) in enumerate(zip(content, gen_ids, strict=True)):
        row = local[len(ids) - 1 + j]
        assert item.token == micro_teacher.tokenizer.decode([t])
        assert item.bytes == list(item.token.encode("utf-8"))
        assert item.logprob == pytest.approx(float(row[t]), abs=1e-4)
        assert len(item.top_logprobs) == 4
        assert [x.logprob for x in item.top_logprobs] == pytest.approx(
            row.topk(4).values.tolist(), abs=1e-4
        )
    as_ids = client.chat.completions.create(
        **kw, logprobs=True, extra_body={"return_tokens_as_token_ids": True}
    )
    assert [c.token for c in as_ids.choices[0].logprobs.content] == [
        f"token_id:{t}" for t in gen_ids
    ]


@pytest.mark.parametrize(
    ("path", "extra", "needle"),
    [
        ("/completions", {"logprobs": 33}, "logprobs is 33; this server returns at most 32"),
        ("/completions", {"prompt_logprobs": 99}, "at most 32 log-probabilities"),
        ("/completions", {"max_tokens": 0}, "max_tokens 0 generates nothing"),
        ("/completions", {"prompt": [1, 10**6]}, "token id 1000000 is out of vocabulary"),
        ("/completions", {"prompt": ["a", "b"]}, "one prompt per request"),
        ("/completions", {"prompt": []}, "empty"),
        ("/completions", {"max_tokens": 10**6}, "this server allows at most"),
        ("/chat/completions", {"top_logprobs": 2}, "`logprobs` must be set to true"),
        ("/chat/completions", {"logprobs": True, "top_logprobs": 40}, "at most 32"),
    ],
)
def test_logprob_requests_are_bounded_with_one_line_errors(server, path, extra, needle):
    body = (
        {"model": "zoo:teacher", "prompt": "hi", **extra}
        if path == "/completions"
        else {"model": "zoo:teacher", "messages": [{"role": "user", "content": "hi"}], **extra}
    )
    code, resp = _post(server, path, body)
    assert code == 400, resp
    msg = resp["error"]["message"]
    assert needle in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------
# (a) the served top-k equals the local teacher's cache
# ---------------------------------------------------------------------------------------
def test_served_topk_equals_the_local_cache(server, micro_teacher, kd_run):
    from accelerate import Accelerator

    from distill.data import DistillDataset, distillation_pairs
    from distill.kd import served_teacher
    from distill.objectives.kd import LocalTeacher

    tok = micro_teacher.tokenizer
    ds = DistillDataset(distillation_pairs(kd_run).head(6), tok, 64)
    examples = [ds[i] for i in range(len(ds))]
    k = 16
    local = LocalTeacher(
        micro_teacher.model, Accelerator(cpu=True), pad_id=tok.pad_token_id, top_k=k,
        temperature=1.0, vocab=len(tok),
    ).rows(examples)  # fmt: skip
    source = served_teacher(f"openai:{server}#zoo:teacher", tok, KDSettings(top_k=k))
    served = source.rows(examples)
    source.close()
    agree = total = 0
    for (l_ids, l_lp, l_tail), (s_ids, s_lp, s_tail) in zip(local, served, strict=True):
        assert s_ids.shape == l_ids.shape and s_ids.dtype == np.int32
        assert s_lp.dtype == np.float16 and s_tail.dtype == np.float32
        same = (s_ids == l_ids).all(axis=1)
        agree, total = agree + int(same.sum()), total + len(same)
        np.testing.assert_allclose(
            s_lp[same].astype(np.float32), l_lp[same].astype(np.float32), rtol=LP_RTOL, atol=1e-3
        )
        np.testing.assert_allclose(np.exp(s_tail), np.exp(l_tail), atol=TAIL_ATOL, rtol=0)
    assert total > 50 and agree >= 0.95 * total, (agree, total)


# ---------------------------------------------------------------------------------------
# (b) KD from the served cache: the same losses as from the local cache, teacher unloaded
# ---------------------------------------------------------------------------------------
def _kd(run, **kwargs):
    from distill.kd import distill_kd

    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in KDSettings.model_fields}
    kwargs.setdefault("progress", False)
    return distill_kd(run, settings=KDSettings().updated(**{**FAST_KD, **flags}), **kwargs)


def _first_step_loss(res) -> float:
    lines = (res.out_dir / "metrics.jsonl").read_text().splitlines()
    return next(json.loads(x)["loss"] for x in lines if "loss" in json.loads(x))


def test_kd_from_the_served_cache_matches_the_local_cache(micro_teacher, kd_run, monkeypatch):
    import distill.kd

    flags = dict(teacher_logits="cache", top_k=16, full=True, lr=1e-2)
    local = _kd(kd_run, alias="local", **flags)

    def no_load(*a, **k):
        raise AssertionError("a served teacher is never loaded")

    monkeypatch.setattr(distill.kd, "load_model", no_load)
    with serving(micro_teacher, "zoo:teacher") as url:
        spec = f"openai:{url}#zoo:teacher"
        served = _kd(kd_run, alias="served", teacher_spec=spec, **flags)
    rec = served.record
    assert rec["objective"]["teacher"] == spec and rec["objective"]["teacher_logits"] == "cache"
    assert rec["objective_stats"]["cache_shards_computed"] >= 2
    ev_local, ev_served = local.record["eval_loss_per_epoch"], rec["eval_loss_per_epoch"]
    assert ev_served[0] == pytest.approx(ev_local[0], rel=LOSS_REL)
    assert _first_step_loss(served) == pytest.approx(_first_step_loss(local), rel=LOSS_REL)
    assert not set(rec["objective_stats"]["teacher_cache"]) & set(
        local.record["objective_stats"]["teacher_cache"]
    )  # the endpoint's fingerprint keys its own cache

    # Cached: a rerun trains with the endpoint gone, to the same numbers.
    again = _kd(kd_run, alias="served2", teacher_spec=spec, **flags)
    assert again.record["objective_stats"]["cache_shards_computed"] == 0
    assert _first_step_loss(again) == _first_step_loss(served)


# ---------------------------------------------------------------------------------------
# (c) errors: one line, exit 2, nothing half-written
# ---------------------------------------------------------------------------------------
class _NoTokens:
    """A backend bbi serve can only chat with (as an engine bbi does not tokenize for)."""

    chat_format = "server"

    def __init__(self, inner):
        self.inner, self.name, self.fingerprint = inner, "plain", "0" * 16

    def generate(self, prompts, config, seeds, progress=False):
        return self.inner.generate(prompts, config, seeds)

    def score(self, prompts, texts):
        raise BbiError("cannot score")

    def close(self):
        pass


def _other_tokenizer_teacher(vocab: int):
    """A model as large as the student's vocabulary behind another tokenizer: every id is
    valid there, but names another token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bbi.backends.hf import HFBackend

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.train_from_iterator(
        ["other words entirely"] * 4,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>", "<eos>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    return HFBackend(LlamaForCausalLM(cfg).eval(), tok, name="other", fingerprint="1" * 16)


def _fails(run, spec: str) -> str:
    from bbi.app.cli import app

    args = ["distill", "kd", str(run.path), "--no-progress", "--teacher-logits", "cache",
            "--top-k", "8", "--teacher-spec", spec, "--full", "--epochs", "1"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    lines = out.output.strip().splitlines()
    assert out.exit_code == 2 and len(lines) == 1 and "Traceback" not in out.output, out.output
    assert not (run.path / "models" / "student_kd").exists()  # no output left behind
    cache = run.path / "cache" / "teacher"
    assert not cache.exists() or not list(cache.rglob("*.npz"))  # and no cache shard
    assert "student_kd" not in run.models()
    return lines[0]


def test_served_teacher_errors_are_one_line(kd_run, micro_teacher):
    port = _free_port()  # nothing listens here
    assert "cannot reach" in _fails(kd_run, f"openai:http://127.0.0.1:{port}/v1#zoo:teacher")
    with serving(_NoTokens(micro_teacher), "plain") as url:
        msg = _fails(kd_run, f"openai:{url}#plain")
        assert "refused to score a prompt" in msg and "hf: or zoo:" in msg
    with serving(_other_tokenizer_teacher(len(micro_teacher.tokenizer)), "other") as url:
        assert "does not share the student's tokenizer" in _fails(kd_run, f"openai:{url}#other")
    with serving(micro_teacher, "zoo:teacher", max_logprobs=4) as url:
        assert "prompt_logprobs 8" in _fails(kd_run, f"openai:{url}#zoo:teacher")
    from bbi.app.cli import app

    out = CliRunner().invoke(app, [
        "distill", "kd", str(kd_run.path), "--no-progress", "--teacher-spec",
        f"openai:http://127.0.0.1:{port}/v1#m",
    ])  # fmt: skip
    assert out.exit_code == 2 and "--teacher-logits cache" in out.output
    out = CliRunner().invoke(app, [
        "distill", "kd", str(kd_run.path), "--no-progress", "--teacher-logits", "cache",
        "--temperature", "2", "--teacher-spec", f"openai:http://127.0.0.1:{port}/v1#m",
    ])  # fmt: skip
    assert out.exit_code == 2 and "temperature 1" in out.output


def test_an_endpoint_without_prompt_logprobs_or_outside_the_vocabulary_is_refused():
    from types import SimpleNamespace

    from bbi.backends.base import PromptLogprobs
    from distill.teacher_cache import ServedTeacher

    class Fake:
        name = "openai:http://h/v1#m"

        def __init__(self, top):
            self.top = top

        def prompt_logprobs(self, seqs, k, progress=False):
            n = len(seqs[0]) - 1
            return [PromptLogprobs([self.top] * n, [[-0.5] * len(self.top)] * n)]

    ex = {"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}
    ok = ServedTeacher(Fake([5, 6]), k=2, vocab=10).rows([ex])
    (ids, lp, tail), = ok  # fmt: skip
    assert ids.tolist() == [[5, 6], [5, 6]] and np.allclose(tail, -np.inf)  # e^-.5 * 2 > 1
    with pytest.raises(BbiError, match="outside the student's vocabulary of 10"):
        ServedTeacher(Fake([5, 12]), k=2, vocab=10).rows([ex])
    with pytest.raises(BbiError, match="returned 1 log-probabilities per token, not 2"):
        ServedTeacher(Fake([5]), k=2, vocab=10).rows([ex])

    from bbi.backends.openai_compat import OpenAIBackend
    from bbi.specs import parse_spec

    backend = OpenAIBackend(parse_spec("openai:http://127.0.0.1:9/v1#m"), check=False)
    plain = SimpleNamespace(
        choices=[SimpleNamespace(logprobs=None, model_extra={}, text="x")]
    )  # what an OpenAI-compatible server without vLLM's extensions answers
    with pytest.raises(BbiError, match="returns no prompt log-probabilities"):
        backend._scored(plain, [1, 2], 2)
    as_text = SimpleNamespace(choices=[SimpleNamespace(
        logprobs=SimpleNamespace(tokens=["a", "b"]), prompt_logprobs=[None, {}], model_extra={},
    )])  # fmt: skip
    with pytest.raises(BbiError, match="return_tokens_as_token_ids"):
        backend._scored(as_text, [1, 2], 2)
    backend.close()
