"""Serve any bbi model spec over the OpenAI chat-completions API (``bbi serve``).

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions`` (n, max_tokens /
max_completion_tokens, temperature, top_p, seed, stop; usage and finish_reason filled;
no streaming). Concurrent requests are micro-batched by one worker thread: because a
bbi backend's sample depends only on its own seed, batching never changes a response,
so a request with ``seed=s`` returns exactly what ``backend.generate(..., seeds=[s])``
returns. Sample i of a request with ``n > 1`` uses seed ``s + i``; a request without a
seed gets a random one.

One worker decodes for everybody, so every request is bounded: prompts longer than
``max_prompt_chars`` characters and ``max_tokens`` above the server's cap are refused
with HTTP 400 before they reach the model (one huge prompt would otherwise stall every
other client).
"""

from __future__ import annotations

import asyncio
import queue
import secrets
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bbi.backends.base import Backend, Generation, GenerationConfig
from bbi.errors import BbiError

DEFAULT_MAX_TOKENS = GenerationConfig().max_new_tokens
# Per-request limits (``bbi serve --max-prompt-chars / --max-tokens``).
DEFAULT_MAX_PROMPT_CHARS = 32_000
DEFAULT_MAX_TOKENS_CAP = 4096


class Message(BaseModel):
    """A chat message (OpenAI shape; extra fields are ignored)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None


class ChatRequest(BaseModel):
    """The chat-completions request fields bbi serve honours."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message]
    n: int = Field(1, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


@dataclass
class _Job:
    prompt: str
    config: GenerationConfig
    seed: int
    future: Future


class MicroBatcher:
    """One worker thread owns the backend; it gathers requests for a few ms and runs
    those with equal settings as one batch."""

    def __init__(self, backend: Backend, max_batch: int = 32, wait_s: float = 0.01):
        self.backend = backend
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="bbi-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str, config: GenerationConfig, seed: int) -> Future:
        fut: Future = Future()
        self._queue.put(_Job(prompt, config, seed, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            deadline = time.monotonic() + self.wait_s
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            groups: dict[GenerationConfig, list[_Job]] = defaultdict(list)
            for j in jobs:
                groups[j.config].append(j)
            for cfg, group in groups.items():
                try:
                    gens = self.backend.generate(
                        [j.prompt for j in group], cfg, [j.seed for j in group]
                    )
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                for j, g in zip(group, gens, strict=True):
                    j.future.set_result(g)


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": status}},
    )


def check_limits(*, max_batch: int, max_n: int, max_prompt_chars: int, max_tokens: int) -> None:
    """Server limits must be positive: a zero batch would fail every request."""
    for flag, value in (
        ("--max-batch", max_batch),
        ("max_n", max_n),
        ("--max-prompt-chars", max_prompt_chars),
        ("--max-tokens", max_tokens),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BbiError(f"{flag} must be an integer >= 1, got {value!r}")


def check_port(port: int) -> None:
    """A TCP port to listen on (the OS would silently wrap 70000 to 4464)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BbiError(f"--port must be in 1..65535, got {port!r}")


def _prompt_of(messages: list[Any]) -> str:
    if len(messages) != 1 or messages[0].role != "user":
        raise BbiError(
            "bbi serve takes exactly one user message per request (bbi prompts models single-turn)"
        )
    content = messages[0].content
    if isinstance(content, list):
        content = "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    if not isinstance(content, str):
        raise BbiError("the user message has no text content")
    return content


def create_app(
    backend: Backend,
    model_name: str,
    *,
    max_batch: int = 32,
    max_n: int = 64,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    max_tokens: int = DEFAULT_MAX_TOKENS_CAP,
) -> Any:
    """A FastAPI app serving ``backend`` under ``model_name``, with per-request limits."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    check_limits(
        max_batch=max_batch, max_n=max_n, max_prompt_chars=max_prompt_chars, max_tokens=max_tokens
    )

    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = MicroBatcher(backend, max_batch=max_batch)
        try:
            yield
        finally:
            app.state.batcher.close()

    app = FastAPI(title=f"bbi serve: {model_name}", lifespan=lifespan)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(400, f"invalid request: {where}: {first.get('msg', 'bad value')}")

    @app.get("/v1/models")
    def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "bbi"}],
        }

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest):
        if req.model != model_name:
            return _error(
                404,
                f"model {req.model!r} is not served here; this server serves {model_name!r}",
                "not_found_error",
            )
        if req.stream:
            return _error(400, "streaming is not supported by bbi serve")
        if req.n > max_n:
            return _error(400, f"n must be <= {max_n}", param="n")
        wanted = req.max_completion_tokens or req.max_tokens or min(DEFAULT_MAX_TOKENS, max_tokens)
        if wanted > max_tokens:
            which = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            return _error(
                400, f"{which} is {wanted}; this server allows at most {max_tokens}", param=which
            )
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        try:
            prompt = _prompt_of(req.messages)
        except BbiError as exc:
            return _error(400, str(exc), param="messages")
        if len(prompt) > max_prompt_chars:
            return _error(
                400,
                f"the prompt is {len(prompt):,} characters; this server accepts at most "
                f"{max_prompt_chars:,}",
                param="messages",
            )
        try:
            config = GenerationConfig(
                max_new_tokens=wanted,
                temperature=req.temperature,
                top_p=req.top_p,
                stop=tuple(stop),
                batch_size=max_batch,
                seed=0,
            )
        except BbiError as exc:
            return _error(400, str(exc))
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        batcher: MicroBatcher = app.state.batcher
        futures = [batcher.submit(prompt, config, seed + i) for i in range(req.n)]
        try:
            gens: list[Generation] = [await asyncio.wrap_future(f) for f in futures]
        except BbiError as exc:
            return _error(400, str(exc))
        count = getattr(backend, "count_prompt_tokens", None)
        prompt_tokens = int(count(prompt)) if count else 0
        completion_tokens = sum(g.n_tokens for g in gens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model_name,
            "system_fingerprint": backend.fingerprint,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": g.text},
                    "finish_reason": g.finish_reason,
                    "logprobs": None,
                }
                for i, g in enumerate(gens)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return app


def serve(
    spec: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_download: bool = False,
    max_batch: int = 32,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    max_tokens: int = DEFAULT_MAX_TOKENS_CAP,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Load ``spec`` and serve it until interrupted.

    Every option is checked before the model loads (loading a large model takes minutes);
    ``announce`` receives the "serving ... on URL" line once the model is loaded.
    """
    import uvicorn

    from bbi.backends import check_device, load_backend
    from bbi.specs import parse_spec

    check_port(port)
    check_limits(
        max_batch=max_batch, max_n=64, max_prompt_chars=max_prompt_chars, max_tokens=max_tokens
    )
    ms = parse_spec(spec)
    if not ms.can("serve"):
        raise BbiError(f"cannot serve {ms}: {ms.kind}: models cannot be served")
    if ms.can("torch_device"):
        check_device(device, dtype)
    _check_port(host, port)
    backend = load_backend(
        ms,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_download=allow_download,
    )
    app = create_app(
        backend,
        name or str(ms),
        max_batch=max_batch,
        max_prompt_chars=max_prompt_chars,
        max_tokens=max_tokens,
    )
    if announce is not None:
        announce(f"serving {ms} on http://{host}:{port}/v1")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        backend.close()


def _check_port(host: str, port: int) -> None:
    """Fail before loading a model if the address is taken or invalid."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise BbiError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
