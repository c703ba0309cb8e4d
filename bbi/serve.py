"""Serve any bbi model spec over the OpenAI API (``bbi serve``), vLLM's server's way.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions`` (n, max_tokens /
max_completion_tokens, temperature, top_p, seed, stop, ``logprobs`` / ``top_logprobs``;
usage and finish_reason filled; no streaming) and, for models whose tokens bbi handles
itself (``hf:``, ``zoo:``), ``POST /v1/completions``: a raw prompt as text or as a list of
token ids, ``echo``, ``logprobs: k``, ``max_tokens`` (0 with ``echo``: score the prompt
only) and vLLM's extensions ``prompt_logprobs``, ``return_tokens_as_token_ids`` and
``add_special_tokens``, in vLLM's response shapes. Log-probabilities are teacher forced
(one forward pass over prompt + generated tokens), natural log, before any temperature
(vLLM's default raw log-probabilities); ``-inf`` is sent as -9999.0 as vLLM does. That is
what a distillation run on another machine asks a served teacher for (``bbi distill kd
--teacher-spec openai:URL#MODEL --teacher-logits cache``).

Concurrent requests are micro-batched by one worker thread: because a bbi backend's sample
depends only on its own seed, batching never changes a response, so a request with
``seed=s`` returns exactly what ``backend.generate(..., seeds=[s])`` returns. Sample i of a
request with ``n > 1`` uses seed ``s + i``; a request without a seed gets a random one.

One worker decodes for everybody, so every request is bounded: prompts longer than
``max_prompt_chars`` characters (or token-id prompts longer than that many tokens),
``max_tokens`` above the server's cap and more than ``max_logprobs`` log-probabilities per
position are refused with HTTP 400 before they reach the model (one huge request would
otherwise stall every other client).
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
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from bbi.backends.base import Backend, Generation, GenerationConfig, PromptLogprobs
from bbi.errors import BbiError

DEFAULT_MAX_TOKENS = GenerationConfig().max_new_tokens
# Per-request limits (``bbi serve --max-prompt-chars / --max-tokens``).
DEFAULT_MAX_PROMPT_CHARS = 32_000
DEFAULT_MAX_TOKENS_CAP = 4096
# Most log-probabilities per position (``--max-logprobs``; vLLM's server defaults to 20):
# enough for a distillation cache's top-k (``bbi distill kd --top-k``, default 64).
DEFAULT_MAX_LOGPROBS = 128
# A log-probability of -inf is sent as this (JSON has no infinity; vLLM's convention).
MIN_LOGPROB = -9999.0
# Largest request body read (``--max-body-bytes``): far above a 32,000-character prompt
# even with every character escaped, far below what would strain the server's memory.
DEFAULT_MAX_BODY_BYTES = 1_048_576


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
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0)
    return_tokens_as_token_ids: bool | None = None


class CompletionRequest(BaseModel):
    """The completions request fields bbi serve honours (vLLM's names and defaults)."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[Annotated[int, Field(ge=0)]] | list[str] | list[list[int]]
    echo: bool = False
    logprobs: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(16, ge=0)
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    prompt_logprobs: int | None = Field(None, ge=0)
    return_tokens_as_token_ids: bool | None = None
    add_special_tokens: bool = True


@dataclass
class _Job:
    key: tuple  # jobs with equal keys run as one batch
    item: Any
    future: Future


class MicroBatcher:
    """One worker thread owns the backend; it gathers requests for a few ms and runs
    those of one kind with equal settings as one batch. Kinds: ``("generate", config)``
    (item: prompt, seed), ``("ids", config)`` (item: token ids, seed; raw continuation with
    the generated ids) and ``("logprobs", k)`` (item: token ids; teacher-forced top-k)."""

    def __init__(self, backend: Backend, max_batch: int = 32, wait_s: float = 0.01):
        self.backend = backend
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="bbi-serve-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: str, config: GenerationConfig, seed: int) -> Future:
        return self.submit_job(("generate", config), (prompt, seed))

    def submit_job(self, key: tuple, item: Any) -> Future:
        fut: Future = Future()
        self._queue.put(_Job(key, item, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self, key: tuple, items: list[Any]) -> list[Any]:
        kind, arg = key
        if kind == "generate":
            return self.backend.generate([p for p, _ in items], arg, [s for _, s in items])
        if kind == "ids":
            return self.backend.generate_ids([e for e, _ in items], arg, [s for _, s in items])  # type: ignore[attr-defined]
        return self.backend.prompt_logprobs(items, arg)  # type: ignore[attr-defined]

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
            groups: dict[tuple, list[_Job]] = defaultdict(list)
            for j in jobs:
                groups[j.key].append(j)
            for key, group in groups.items():
                try:
                    results = self._run(key, [j.item for j in group])
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                    for j in group:
                        j.future.set_exception(exc)
                    continue
                for j, r in zip(group, results, strict=True):
                    j.future.set_result(r)


def _error(
    status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(
        status_code=status,
        content={"error": {"message": message, "type": kind, "param": param, "code": status}},
    )


def check_limits(
    *,
    max_batch: int,
    max_n: int,
    max_prompt_chars: int,
    max_tokens: int,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
) -> None:
    """Server limits must be positive: a zero batch would fail every request."""
    for flag, value in (
        ("--max-batch", max_batch),
        ("max_n", max_n),
        ("--max-prompt-chars", max_prompt_chars),
        ("--max-tokens", max_tokens),
        ("--max-body-bytes", max_body_bytes),
        ("--max-logprobs", max_logprobs),
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
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                continue
            text = part.get("text", "")
            if not isinstance(text, str):
                raise BbiError(f"messages[0].content[{i}].text must be a string")
            texts.append(text)
        content = "".join(texts)
    if not isinstance(content, str):
        raise BbiError("the user message has no text content")
    return content


class BodyLimit:
    """ASGI middleware: a request body above ``max_bytes`` is answered 413 before it is
    read. A ``Content-Length`` above the cap is refused at once; a body without one
    (chunked) is counted as it arrives and refused the moment it passes the cap."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        import json

        body = json.dumps(
            {
                "error": {
                    "message": f"request body too large: this server accepts at most "
                    f"{self.max_bytes:,} bytes (bbi serve --max-body-bytes)",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": 413,
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", ()):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    return await self._refuse(send)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _parse_request(body: bytes, model: type[BaseModel] = ChatRequest) -> Any:
    """The request body as ``model`` (a ChatRequest by default); any problem a BbiError
    worded for the client (not UTF-8, not JSON, nested too deeply, wrong fields)."""
    from pydantic import ValidationError

    from bbi.runstore import decode_text, parse_json

    obj = parse_json(decode_text(body, "request body"), "request body")
    if not isinstance(obj, dict):
        raise BbiError("request body: expected a JSON object")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise BbiError(f"invalid request: {where}: {first.get('msg', 'bad value')}") from None


TOKEN_LEVEL = ("tokenize", "decode", "token_strings", "vocab_size", "generate_ids",
               "prompt_logprobs", "encode_prompt")  # fmt: skip
"""What a backend needs for /v1/completions and log-probabilities (``hf:``, ``zoo:``)."""


def token_level(backend: Any) -> bool:
    """Whether ``backend`` handles tokens itself (raw completions, log-probabilities)."""
    return all(hasattr(backend, name) for name in TOKEN_LEVEL)


def _lp(x: float) -> float:
    return max(float(x), MIN_LOGPROB)


class _Tokens:
    """Token names for one backend: each id's text (computed once for the whole
    vocabulary, on first use) or vLLM's ``token_id:N`` form."""

    def __init__(self, backend: Any):
        self.backend = backend
        self._text: list[str] | None = None
        self._lock = threading.Lock()

    def text(self, tid: int) -> str:
        if self._text is None:
            with self._lock:
                if self._text is None:
                    self._text = self.backend.token_strings(list(range(self.backend.vocab_size)))
        return self._text[tid]

    def namer(self, as_ids: bool | None) -> Callable[[int], str]:
        return (lambda t: f"token_id:{t}") if as_ids else self.text


def completion_logprobs(
    pl: PromptLogprobs, ids: list[int], first: int, k: int, name: Callable[[int], str]
) -> dict[str, Any]:
    """vLLM's ``CompletionLogProbs`` of ``ids[first:]`` (``pl`` describes ``ids``): per
    token its name, log-probability and text offset, and its position's top ``k`` plus the
    token itself when it is not among them (OpenAI's up to k + 1 entries); the first token
    of a sequence has no distribution (``None``)."""
    offsets: list[int] = []
    token_lps: list[float | None] = []
    tokens: list[str] = []
    tops: list[dict[str, float] | None] = []
    offset = 0
    for p in range(first, len(ids)):
        tok = name(ids[p])
        if p == 0:
            token_lps.append(None)
            tops.append(None)
        else:
            j = p - 1
            top_ids = pl.top_ids[j][:k]
            token_lps.append(_lp(pl.token_logprobs[j]))
            top = {name(t): _lp(v) for t, v in zip(top_ids, pl.top_logprobs[j][:k], strict=True)}
            if ids[p] not in top_ids:
                top[tok] = _lp(pl.token_logprobs[j])
            tops.append(top)
        tokens.append(tok)
        offsets.append(offset)
        offset += len(tok)
    return {"text_offset": offsets, "token_logprobs": token_lps, "tokens": tokens,
            "top_logprobs": tops}  # fmt: skip


def vllm_prompt_logprobs(
    pl: PromptLogprobs, ids: list[int], k: int, text: Callable[[int], str]
) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's ``prompt_logprobs`` of the prompt ``ids``: ``None`` for the first token, then
    per position ``{token id: {logprob, rank, decoded_token}}`` for its top ``k`` and for
    the prompt token itself (with its own rank) when it is not among them."""
    out: list[dict[str, dict[str, Any]] | None] = [None]
    for p in range(1, len(ids)):
        j = p - 1
        top_ids = pl.top_ids[j][:k]
        entry = {
            str(t): {"logprob": _lp(v), "rank": r + 1, "decoded_token": text(t)}
            for r, (t, v) in enumerate(zip(top_ids, pl.top_logprobs[j][:k], strict=True))
        }
        if ids[p] not in top_ids:
            entry[str(ids[p])] = {"logprob": _lp(pl.token_logprobs[j]), "rank": pl.ranks[j],
                                  "decoded_token": text(ids[p])}  # fmt: skip
        out.append(entry)
    return out


def chat_logprobs(
    pl: PromptLogprobs, ids: list[int], first: int, k: int, name: Callable[[int], str]
) -> dict[str, Any]:
    """The chat-completions ``logprobs`` of the generated ``ids[first:]``: per token its
    name, log-probability, UTF-8 bytes and its position's top ``k``."""
    content = []
    for p in range(first, len(ids)):
        j = p - 1
        tok = name(ids[p])
        content.append(
            {
                "token": tok,
                "logprob": _lp(pl.token_logprobs[j]),
                "bytes": list(tok.encode("utf-8")),
                "top_logprobs": [
                    {"token": name(t), "logprob": _lp(v), "bytes": list(name(t).encode("utf-8"))}
                    for t, v in zip(pl.top_ids[j][:k], pl.top_logprobs[j][:k], strict=True)
                ],
            }
        )
    return {"content": content}


def _single_prompt(prompt: Any) -> str | list[int]:
    """The one prompt of a completions request (text or token ids)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise BbiError(f"bbi serve takes one prompt per request, got {len(prompt)}")
        prompt = prompt[0]
    if isinstance(prompt, list) and any(isinstance(t, bool) or t < 0 for t in prompt):
        raise BbiError("prompt: token ids must be integers >= 0")
    if not prompt:
        raise BbiError("prompt: empty; send text or at least one token id")
    return prompt


def create_app(
    backend: Backend,
    model_name: str,
    *,
    max_batch: int = 32,
    max_n: int = 64,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    max_tokens: int = DEFAULT_MAX_TOKENS_CAP,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
) -> Any:
    """A FastAPI app serving ``backend`` under ``model_name``, with per-request limits."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError

    check_limits(
        max_batch=max_batch, max_n=max_n, max_prompt_chars=max_prompt_chars,
        max_tokens=max_tokens, max_body_bytes=max_body_bytes, max_logprobs=max_logprobs,
    )  # fmt: skip

    created = int(time.time())
    tokens = _Tokens(backend) if token_level(backend) else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = MicroBatcher(backend, max_batch=max_batch)
        try:
            yield
        finally:
            app.state.batcher.close()

    app = FastAPI(title=f"bbi serve: {model_name}", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

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

    def common_checks(req: Any) -> Any:
        """The refusals chat and completions share (None: the request may go on)."""
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
        return None

    def logprobs_limit(value: int | None, param: str) -> Any:
        if value is not None and value > max_logprobs:
            return _error(
                400,
                f"{param} is {value}; this server returns at most {max_logprobs} "
                "log-probabilities per token (bbi serve --max-logprobs)",
                param=param,
            )
        return None

    def no_tokens(what: str) -> Any:
        return _error(
            400,
            f"{what} needs a model whose tokens bbi handles itself (an hf: or zoo: spec); "
            f"{model_name!r} is served through another engine",
        )

    def decoding(req: Any, wanted: int, stop: list[str]) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=wanted, temperature=req.temperature, top_p=req.top_p,
            stop=tuple(stop), batch_size=max_batch, seed=0,
        )  # fmt: skip

    async def continuations(
        encoded: list[int], config: GenerationConfig, seed: int, n: int
    ) -> list[tuple[Generation, list[int]]]:
        batcher: MicroBatcher = app.state.batcher
        futures = [batcher.submit_job(("ids", config), (encoded, seed + i)) for i in range(n)]
        return [await asyncio.wrap_future(f) for f in futures]

    async def scored(seqs: list[list[int]], k: int) -> list[PromptLogprobs]:
        batcher: MicroBatcher = app.state.batcher
        futures = [batcher.submit_job(("logprobs", k), seq) for seq in seqs]
        return [await asyncio.wrap_future(f) for f in futures]

    async def chat(request: Request):
        try:  # parsed here, so every bad body gets the OpenAI error shape
            req = _parse_request(await request.body())
        except BbiError as exc:
            return _error(400, str(exc))
        refused = common_checks(req)
        if refused is not None:
            return refused
        if req.top_logprobs is not None and not req.logprobs:
            return _error(
                400, "when using `top_logprobs`, `logprobs` must be set to true",
                param="top_logprobs",
            )  # fmt: skip
        refused = logprobs_limit(req.top_logprobs, "top_logprobs")
        if refused is not None:
            return refused
        if req.logprobs and tokens is None:
            return no_tokens("logprobs")
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
            config = decoding(req, wanted, stop)
        except BbiError as exc:
            return _error(400, str(exc))
        seed = req.seed if req.seed is not None else secrets.randbits(31)
        batcher: MicroBatcher = app.state.batcher
        logprobs: list[Any] = [None] * req.n
        try:
            if req.logprobs:  # the same decoding path, with the generated ids kept
                encoded = backend.encode_prompt(prompt)  # type: ignore[attr-defined]
                pairs = await continuations(encoded, config, seed, req.n)
                gens = [g for g, _ in pairs]
                seqs = [encoded + gen_ids for _, gen_ids in pairs]
                k = req.top_logprobs or 0
                name = tokens.namer(req.return_tokens_as_token_ids)  # type: ignore[union-attr]
                logprobs = [
                    chat_logprobs(pl, seq, len(encoded), k, name)
                    for pl, seq in zip(await scored(seqs, k), seqs, strict=True)
                ]
            else:
                futures = [batcher.submit(prompt, config, seed + i) for i in range(req.n)]
                gens = [await asyncio.wrap_future(f) for f in futures]
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
                    "logprobs": logprobs[i],
                }
                for i, g in enumerate(gens)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    async def completions(request: Request):
        try:
            req = _parse_request(await request.body(), CompletionRequest)
            prompt = _single_prompt(req.prompt)
        except BbiError as exc:
            return _error(400, str(exc))
        refused = common_checks(req)
        for value, param in ((req.logprobs, "logprobs"), (req.prompt_logprobs, "prompt_logprobs")):
            refused = refused or logprobs_limit(value, param)
        if refused is not None:
            return refused
        if tokens is None:
            return no_tokens("/v1/completions")
        wanted = 16 if req.max_tokens is None else req.max_tokens
        if wanted > max_tokens:
            return _error(
                400, f"max_tokens is {wanted}; this server allows at most {max_tokens}",
                param="max_tokens",
            )  # fmt: skip
        if wanted == 0 and not req.echo:
            return _error(
                400, "max_tokens 0 generates nothing: use it with echo (scoring the prompt)",
                param="max_tokens",
            )  # fmt: skip
        size = len(prompt)
        if size > max_prompt_chars:
            unit = "characters" if isinstance(prompt, str) else "tokens"
            return _error(
                400,
                f"the prompt is {size:,} {unit}; this server accepts at most {max_prompt_chars:,}",
                param="prompt",
            )
        if isinstance(prompt, str):
            ids = backend.tokenize(prompt, req.add_special_tokens)  # type: ignore[attr-defined]
            prompt_text = prompt
        else:
            ids = list(prompt)
            vocab = backend.vocab_size  # type: ignore[attr-defined]
            bad = next((t for t in ids if t >= vocab), None)
            if bad is not None:
                return _error(
                    400, f"token id {bad} is out of vocabulary (size {vocab})", param="prompt"
                )
            prompt_text = backend.decode(ids)  # type: ignore[attr-defined]
        if not ids:
            return _error(400, "the prompt holds no tokens", param="prompt")
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        n = req.n if wanted else 1
        try:
            if wanted:
                config = decoding(req, wanted, stop)
                seed = req.seed if req.seed is not None else secrets.randbits(31)
                pairs = await continuations(ids, config, seed, n)
            else:  # echo only: the prompt scored, nothing generated
                pairs = [(Generation("", 0, "length"), [])]
            k = req.logprobs
            pk = (
                req.prompt_logprobs
                if req.prompt_logprobs is not None
                else (k if req.echo else None)
            )
            scores: list[Any] = [None] * len(pairs)
            if k is not None or pk is not None:
                seqs = [ids + gen_ids for _, gen_ids in pairs]
                scores = await scored(seqs, max(k or 0, pk or 0))
        except BbiError as exc:
            return _error(400, str(exc))
        choices = []
        for i, ((g, gen_ids), pl) in enumerate(zip(pairs, scores, strict=True)):
            seq = ids + gen_ids
            choice: dict[str, Any] = {
                "index": i,
                "text": (prompt_text if req.echo else "") + g.text,
                "logprobs": None,
                "finish_reason": g.finish_reason,
                "stop_reason": None,
            }
            if k is not None:
                name = tokens.namer(req.return_tokens_as_token_ids)
                choice["logprobs"] = completion_logprobs(
                    pl, seq, 0 if req.echo else len(ids), k, name
                )
            if pk is not None:
                choice["prompt_logprobs"] = vllm_prompt_logprobs(pl, ids, pk, tokens.text)
            choices.append(choice)
        completion_tokens = sum(g.n_tokens for g, _ in pairs)
        from fastapi.responses import JSONResponse

        return JSONResponse({  # plain JSON: k entries per token need no encoder walk
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "system_fingerprint": backend.fingerprint,
            "choices": choices,
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": completion_tokens,
                "total_tokens": len(ids) + completion_tokens,
            },
        })  # fmt: skip

    # The module defers annotations; FastAPI must see the Request class itself.
    chat.__annotations__["request"] = Request
    completions.__annotations__["request"] = Request
    app.post("/v1/chat/completions")(chat)
    app.post("/v1/completions")(completions)
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
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
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
        max_batch=max_batch, max_n=64, max_prompt_chars=max_prompt_chars,
        max_tokens=max_tokens, max_body_bytes=max_body_bytes, max_logprobs=max_logprobs,
    )  # fmt: skip
    if name is not None and not name.strip():
        raise BbiError("--name: empty model name; leave it out to use the spec")
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
        max_body_bytes=max_body_bytes,
        max_logprobs=max_logprobs,
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
