"""`bbi serve` over real loopback HTTP, queried through the openai backend and client."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bbi.backends import GenerationConfig, load_backend
from bbi.errors import BbiError

PROMPTS = [
    "What is the capital of Japan?",
    "What is 7 plus 5?",
    "Write the word lamp in capital letters.",
    "List these words one per line: music, bread, ocean.",
]


MAX_CHARS = 2000  # the test server's limits
MAX_TOKENS = 64


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(micro_teacher):
    """The micro zoo teacher served by uvicorn in a thread on a free loopback port."""
    import uvicorn

    from bbi.serve import create_app

    port = _free_port()
    app = create_app(
        micro_teacher, "zoo:teacher", max_batch=8, max_prompt_chars=MAX_CHARS, max_tokens=MAX_TOKENS
    )
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    srv.should_exit = True
    thread.join(timeout=10)


def test_openai_backend_matches_direct_generation(server, micro_teacher):
    remote = load_backend(f"openai:{server}#zoo:teacher", concurrency=4)
    assert remote.chat_format == "server"
    for cfg in (
        GenerationConfig(max_new_tokens=16, temperature=0.0),
        GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.9),
        GenerationConfig(max_new_tokens=16, temperature=0.0, stop=("e",)),
    ):
        seeds = [11, 12, 13, 14]
        via_http = remote.generate(PROMPTS, cfg, seeds)
        direct = micro_teacher.generate(PROMPTS, cfg, seeds)
        assert via_http == direct  # text, n_tokens and finish_reason all survive the round trip
    remote.close()


def test_raw_openai_client_n_usage_and_errors(server, micro_teacher):
    import openai

    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == ["zoo:teacher"]
    resp = client.chat.completions.create(
        model="zoo:teacher",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        n=3,
        max_tokens=5,
        temperature=1.0,
        top_p=1.0,
        seed=40,
        stop=["\n\n"],
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    cfg = GenerationConfig(max_new_tokens=5, temperature=1.0, top_p=1.0, stop=("\n\n",))
    direct = micro_teacher.generate([PROMPTS[0]] * 3, cfg, [40, 41, 42])  # sample i: seed + i
    assert [c.message.content for c in resp.choices] == [g.text for g in direct]
    assert [c.finish_reason for c in resp.choices] == [g.finish_reason for g in direct]
    assert resp.usage.completion_tokens == sum(g.n_tokens for g in direct)
    assert resp.usage.prompt_tokens == micro_teacher.count_prompt_tokens(PROMPTS[0]) > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.system_fingerprint == micro_teacher.fingerprint

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="one user message"):
        client.chat.completions.create(
            model="zoo:teacher",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "x"}],
        )
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(
            model="zoo:teacher", temperature=5.0, messages=[{"role": "user", "content": "x"}]
        )


def test_unknown_model_and_unreachable_server(server):
    with pytest.raises(BbiError, match="not served"):
        load_backend(f"openai:{server}#no-such-model")
    port = _free_port()  # nothing listens here
    t0 = time.monotonic()
    with pytest.raises(BbiError, match="cannot reach"):
        load_backend(f"openai:http://127.0.0.1:{port}/v1#m")
    assert time.monotonic() - t0 < 5
    # Without the upfront check, the first request fails as a BbiError too (after retries).
    lazy = load_backend(f"openai:http://127.0.0.1:{port}/v1#m", check=False, max_retries=1)
    with pytest.raises(BbiError, match="lost the OpenAI-compatible server"):
        lazy.generate(["hi"], GenerationConfig(max_new_tokens=2), [0])
    with pytest.raises(BbiError, match="cannot score"):
        lazy.score(["hi"], ["there"])


def test_serve_cli_errors(micro_zoo):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["serve", "zoo:professor"])
    assert res.exit_code == 2 and "unknown zoo model" in res.output
    res = runner.invoke(app, ["serve", "hf:./no/such/dir", "--port", str(_free_port())])
    assert res.exit_code == 2 and "does not exist" in res.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        res = runner.invoke(app, ["serve", "zoo:teacher", "--port", str(busy.getsockname()[1])])
    assert res.exit_code == 2 and "cannot serve" in res.output


def test_prompt_length_and_max_tokens_are_capped(server):
    import json
    import urllib.error
    import urllib.request

    import openai

    client = openai.OpenAI(base_url=server, api_key="unused", max_retries=0)
    long_prompt = "x" * (MAX_CHARS + 1)
    with pytest.raises(openai.BadRequestError, match="at most 2,000"):
        client.chat.completions.create(
            model="zoo:teacher", max_tokens=2, messages=[{"role": "user", "content": long_prompt}]
        )
    with pytest.raises(openai.BadRequestError, match="at most 64"):
        client.chat.completions.create(
            model="zoo:teacher", max_tokens=65, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        client.chat.completions.create(
            model="zoo:teacher",
            max_completion_tokens=10_000,
            messages=[{"role": "user", "content": "hi"}],
        )
    # The OpenAI error shape, and a refused request never reaches the model (fast).
    body = {"model": "zoo:teacher", "messages": [{"role": "user", "content": "y" * 200_000}]}
    req = urllib.request.Request(
        f"{server}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    t0 = time.monotonic()
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert time.monotonic() - t0 < 5
    assert info.value.code == 400
    err = json.loads(info.value.read())["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "messages"
    assert "200,000 characters" in err["message"] and err["code"] == 400
    # Within the limits the server still answers.
    ok = client.chat.completions.create(
        model="zoo:teacher", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_create_app_refuses_zero_limits(micro_teacher):
    from bbi.serve import create_app

    for kw in ({"max_batch": 0}, {"max_prompt_chars": 0}, {"max_tokens": 0}):
        with pytest.raises(BbiError, match="must be an integer >= 1"):
            create_app(micro_teacher, "m", **kw)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "70000"], "--port must be in 1..65535"),
        (["--port", "0"], "--port must be in 1..65535"),
        (["--port", "-1"], "--port must be in 1..65535"),
        (["--max-batch", "0"], "--max-batch must be an integer >= 1"),
        (["--max-prompt-chars", "0"], "--max-prompt-chars"),
        (["--max-tokens", "0"], "--max-tokens"),
        (["--max-logprobs", "0"], "--max-logprobs must be an integer >= 1"),
        (["--dtype", "float8"], "unknown dtype 'float8'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--port", "abc"], "--port"),
    ],
)
def test_serve_options_are_checked_before_the_model_loads(monkeypatch, args, needle):
    from typer.testing import CliRunner

    import bbi.backends
    from bbi.app.cli import app

    def no_load(*a, **k):
        raise AssertionError("the model must not load with bad options")

    monkeypatch.setattr(bbi.backends, "load_backend", no_load)
    res = CliRunner().invoke(app, ["serve", "zoo:teacher", *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output


def test_serve_help_states_the_default_limits():
    from typer.testing import CliRunner

    from bbi.app.cli import app
    from bbi.serve import DEFAULT_MAX_LOGPROBS, DEFAULT_MAX_PROMPT_CHARS, DEFAULT_MAX_TOKENS_CAP

    res = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert f"default {DEFAULT_MAX_PROMPT_CHARS}" in text
    assert f"default {DEFAULT_MAX_TOKENS_CAP}" in text
    assert f"default {DEFAULT_MAX_LOGPROBS}" in text and "/v1/completions" in text
