"""The openai: backend against a fake API: the max_tokens -> max_completion_tokens switch,
429 with Retry-After, and token accounting (backend.usage, the run's manifest)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bbi.backends import load_backend
from bbi.backends.base import GenerationConfig
from bbi.errors import BbiError


class FakeAPI(BaseHTTPRequestHandler):
    """A model that only takes max_completion_tokens and throttles every 3rd request."""

    calls: list[dict] = []
    lock = threading.Lock()

    def log_message(self, *args):  # quiet
        pass

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.lock:
            self.calls.append(body)
            n = len(self.calls)
        if "max_tokens" in body:
            self._send(400, {"error": {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                           "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens",
                "code": "unsupported_parameter"}})  # fmt: skip
            return
        if n % 3 == 0:
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            return
        k = body["max_completion_tokens"]
        text = " ".join(["ok"] * k)
        self._send(200, {
            "id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": k, "total_tokens": 5 + k},
        })  # fmt: skip


@pytest.fixture()
def api():
    FakeAPI.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_switches_to_max_completion_tokens_retries_429_and_counts_tokens(api):
    backend = load_backend(f"openai:{api}#m", concurrency=2, max_retries=3)
    cfg = GenerationConfig(max_new_tokens=3, temperature=0.0)
    outs = backend.generate(["a", "b", "c", "d"], cfg, [0, 1, 2, 3])
    assert [o.text for o in outs] == ["ok ok ok"] * 4
    assert backend.token_param == "max_completion_tokens"
    assert backend.usage == {"requests": 4, "prompt_tokens": 20, "completion_tokens": 12}
    priced = load_backend(f"openai:{api}#m", token_param="max_completion_tokens",
                          price_input=2.5, price_output=10.0, max_retries=3)  # fmt: skip
    priced.generate(["a", "b"], cfg, [0, 1])
    assert priced.usage["cost"] == pytest.approx((10 * 2.5 + 6 * 10.0) / 1e6)
    throttled = [i for i, c in enumerate(FakeAPI.calls, 1) if i % 3 == 0 and "max_tokens" not in c]
    assert throttled  # at least one 429 was answered, and retried to success


def test_fixed_token_param_is_not_switched(api):
    backend = load_backend(f"openai:{api}#m", token_param="max_tokens", max_retries=0)
    with pytest.raises(BbiError, match="400"):
        backend.generate(["a"], GenerationConfig(max_new_tokens=2), [0])
    with pytest.raises(BbiError, match="token_param"):
        load_backend(f"openai:{api}#m", token_param="tokens")


def test_probe_records_api_usage_in_the_manifest(api, tmp_path, monkeypatch):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))  # no response cache hits
    from bbi.probe_run import ModelEntry, ProbeSettings, probe_model
    from bbi.runstore import RunDir

    run = RunDir(tmp_path / "r", create=True)
    records = [{"id": f"p{i}", "prompt": f"q{i}", "category": "factual", "split": "test"}
               for i in range(3)]  # fmt: skip
    settings = ProbeSettings(max_new_tokens=2, temperature=0.0)
    st = probe_model(run, ModelEntry("t", f"openai:{api}#m", "teacher"), records, settings,
                     fingerprint="f" * 16)  # fmt: skip
    assert st["api_usage"] == {"requests": 3, "prompt_tokens": 15, "completion_tokens": 6}
