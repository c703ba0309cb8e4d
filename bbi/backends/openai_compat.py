"""Any OpenAI-compatible chat-completions server (vLLM, TGI, Ollama, an API, `bbi serve`).

Uses the official ``openai`` client: it retries connection errors, 408/409/429 and 5xx
with exponential backoff and jitter (``max_retries``), and enforces ``timeout``. Requests
run concurrently up to ``concurrency``. Each request carries its own ``seed`` so servers
that honour seeds (vLLM, ``bbi serve``) give batch-independent samples. The API key comes
from ``OPENAI_API_KEY`` and is never recorded.

The length limit is sent as ``max_tokens`` (what most compatible servers take) until a
server refuses it in favour of ``max_completion_tokens`` (newer OpenAI models); then the
backend switches for good (``token_param`` fixes either). ``usage`` counts requests and the
prompt and completion tokens the server reported, and their cost when ``price_input`` /
``price_output`` (per million tokens) are given, for the run's manifest.

A served teacher (``bbi distill kd --teacher-logits cache`` with an ``openai:`` teacher) is
scored through ``/v1/completions`` the way vLLM's server answers it
(:meth:`OpenAIBackend.prompt_logprobs`): the token ids as the prompt, ``echo`` with
``max_tokens`` 0 (score, generate nothing), ``prompt_logprobs: k`` (vLLM's extension: per
position the top k by token id, with ranks) and ``logprobs: 0`` with
``return_tokens_as_token_ids`` (the echoed tokens come back as ``token_id:N``, which
proves the server scored the ids sent and not a re-tokenisation).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from bbi.backends.base import (
    Generation,
    GenerationConfig,
    PromptLogprobs,
    TokenScores,
    check_generate_args,
)
from bbi.errors import BbiError
from bbi.specs import ModelSpec

SERVER_FORMAT = "server"
TOKEN_PARAMS = ("auto", "max_tokens", "max_completion_tokens")


TOKEN_ID_PREFIX = "token_id:"


def _echoed_ids(choice: Any, where: str) -> list[int] | None:
    """The prompt ids a server echoed as ``token_id:N`` (None when it echoed none)."""
    lp = getattr(choice, "logprobs", None)
    tokens = getattr(lp, "tokens", None) if lp is not None else None
    if not tokens:
        return None
    try:
        return [int(t.removeprefix(TOKEN_ID_PREFIX)) for t in tokens]
    except (ValueError, AttributeError):
        raise BbiError(
            f"{where} echoed tokens as text ({tokens[0]!r}), not as token ids: it does not "
            "support vLLM's return_tokens_as_token_ids"
        ) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OpenAIBackend:
    """Backend over an OpenAI-compatible HTTP endpoint; the server applies its chat template."""

    chat_format = SERVER_FORMAT

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 3,
        check: bool = True,
        token_param: str = "auto",
        price_input: float | None = None,
        price_output: float | None = None,
    ):
        import openai

        for name, price in (("price_input", price_input), ("price_output", price_output)):
            if price is not None and not price >= 0:
                raise BbiError(f"{name} must be >= 0 (per million tokens), got {price}")
        if token_param not in TOKEN_PARAMS:
            raise BbiError(f"token_param must be one of {', '.join(TOKEN_PARAMS)}")
        if concurrency < 1:
            raise BbiError(f"concurrency must be >= 1, got {concurrency}")
        if not timeout > 0:
            raise BbiError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise BbiError(f"max_retries must be >= 0, got {max_retries}")
        if not spec.base_url or not spec.model:
            raise BbiError(f"{spec}: an openai: spec needs a base URL and a model name")
        self.spec = spec
        self.name = str(spec)
        self.model = spec.model
        self.base_url = spec.base_url
        self.concurrency = concurrency
        self.token_param = "max_tokens" if token_param == "auto" else token_param
        self._may_switch = token_param == "auto"
        self._lock = threading.Lock()
        self.prices = (price_input, price_output)
        self.usage: dict[str, Any] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        if price_input is not None or price_output is not None:
            self.usage["cost"] = 0.0
        self.client = openai.OpenAI(
            base_url=spec.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=timeout,
            max_retries=max_retries,
        )
        # Remote weights cannot be hashed: the endpoint and model name identify them.
        self.fingerprint = hashlib.sha256(
            json.dumps({"openai": spec.base_url, "model": spec.model}).encode()
        ).hexdigest()[:16]
        if check:
            self.check()

    def check(self) -> None:
        """Fail fast (no retries) if the server is unreachable or does not serve the model."""
        import openai

        quick = self.client.with_options(max_retries=0, timeout=10.0)
        try:
            models = quick.models.list()
        except openai.APIConnectionError as exc:
            raise BbiError(
                f"cannot reach the OpenAI-compatible server at {self.base_url}: {_one_line(exc)}"
            ) from None
        except openai.AuthenticationError:
            raise BbiError(
                f"the server at {self.base_url} refused the API key; set OPENAI_API_KEY"
            ) from None
        except openai.NotFoundError:
            return  # some servers have no /models; the first request will tell
        except openai.APIStatusError as exc:
            raise BbiError(
                f"the server at {self.base_url} answered {exc.status_code} "
                f"on /models: {_one_line(exc)}"
            ) from None
        ids = [m.id for m in models.data]
        if ids and self.model not in ids:
            raise BbiError(
                f"model {self.model!r} is not served at {self.base_url}; "
                f"it serves: {', '.join(ids[:10])}"
            )

    def _create(self, prompt: str, config: GenerationConfig, seed: int) -> Any:
        """One chat completion; a refused ``max_tokens`` switches to ``max_completion_tokens``."""
        import openai

        param = self.token_param
        try:
            return self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=config.temperature,
                top_p=config.top_p,
                seed=int(seed),
                stop=list(config.stop) or None,
                n=1,
                **{param: config.max_new_tokens},
            )
        except openai.BadRequestError as exc:
            if not (
                self._may_switch and param == "max_tokens" and "max_completion_tokens" in str(exc)
            ):
                raise
            with self._lock:
                self.token_param = "max_completion_tokens"
            return self._create(prompt, config, seed)

    def _request(self, prompt: str, config: GenerationConfig, seed: int) -> Generation:
        import openai

        try:
            resp = self._create(prompt, config, seed)
        except openai.APIConnectionError as exc:
            raise BbiError(
                f"lost the OpenAI-compatible server at {self.base_url}: {_one_line(exc)}"
            ) from None
        except openai.APIStatusError as exc:
            raise BbiError(
                f"{self.base_url} answered {exc.status_code}: {_one_line(exc)}"
            ) from None
        if not resp.choices:
            raise BbiError(f"{self.base_url} returned no choices for model {self.model!r}")
        choice = resp.choices[0]
        text = choice.message.content or ""
        n_tokens = resp.usage.completion_tokens if resp.usage else len(text.split())
        with self._lock:
            self.usage["requests"] += 1
            if resp.usage:
                tin, tout = (
                    int(resp.usage.prompt_tokens or 0),
                    int(resp.usage.completion_tokens or 0),
                )
                self.usage["prompt_tokens"] += tin
                self.usage["completion_tokens"] += tout
                if "cost" in self.usage:
                    pin, pout = self.prices
                    self.usage["cost"] += (tin * (pin or 0.0) + tout * (pout or 0.0)) / 1e6
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Generation(text, int(n_tokens), finish)

    def generate(
        self, prompts: list[str], config: GenerationConfig, seeds: list[int], progress: bool = False
    ) -> list[Generation]:
        """Concurrent requests, results in prompt order."""
        check_generate_args(prompts, seeds)
        return self._concurrent(
            [(p, config, s) for p, s in zip(prompts, seeds, strict=True)],
            self._request,
            f"querying {self.name}",
            progress,
        )

    def _concurrent(
        self, jobs: list[tuple], fn: Callable[..., Any], label: str, progress: bool
    ) -> list[Any]:
        """``fn(*job)`` for every job, ``concurrency`` at a time, with a progress bar;
        results in job order; the first failure cancels what has not started."""
        from rich.progress import Progress

        results: list[Any] = [None] * len(jobs)
        with (
            ThreadPoolExecutor(max_workers=self.concurrency) as pool,
            Progress(disable=not progress, transient=True) as bar,
        ):
            task = bar.add_task(label, total=len(jobs))
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            try:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.advance(task)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return results

    # -- a served teacher: prompt log-probabilities of token ids (vLLM's extensions)
    def _scoring_request(self, prompt: str | list[int], k: int, **extra: Any) -> Any:
        """One /v1/completions scoring request; a server that cannot is a BbiError."""
        import openai

        try:
            return self.client.completions.create(
                model=self.model,
                prompt=prompt,
                echo=True,
                max_tokens=0,
                logprobs=0,
                extra_body={"prompt_logprobs": k, "return_tokens_as_token_ids": True, **extra},
            )
        except openai.APIConnectionError as exc:
            raise BbiError(
                f"cannot reach the OpenAI-compatible server at {self.base_url}: {_one_line(exc)}"
            ) from None
        except openai.NotFoundError as exc:
            raise BbiError(
                f"{self.base_url} has no /completions route for {self.model!r} "
                f"({_one_line(exc)}); a served teacher needs vLLM's server or `bbi serve`"
            ) from None
        except openai.APIStatusError as exc:
            raise BbiError(
                f"{self.base_url} refused to score a prompt (echo, max_tokens 0, "
                f"prompt_logprobs {k}): {exc.status_code}: {_one_line(exc)}"
            ) from None

    def _scored(self, resp: Any, ids: list[int] | None, k: int) -> tuple[list[int], Any]:
        """(the prompt ids, its prompt_logprobs) of a scoring response, checked."""
        where = f"{self.base_url} ({self.model})"
        if not getattr(resp, "choices", None):
            raise BbiError(f"{where} returned no choices to a scoring request")
        choice = resp.choices[0]
        plp = getattr(choice, "prompt_logprobs", None)
        if plp is None and choice.model_extra:
            plp = choice.model_extra.get("prompt_logprobs")
        echoed = _echoed_ids(choice, where)
        if plp is None or echoed is None:
            raise BbiError(
                f"{where} returns no prompt log-probabilities (echo + prompt_logprobs); a "
                "served teacher needs an endpoint that does: vLLM's server or `bbi serve`"
            )
        if ids is not None and echoed != ids:
            raise BbiError(f"{where} scored other tokens than the token ids sent")
        if len(plp) != len(echoed):
            raise BbiError(
                f"{where} returned {len(plp)} prompt log-probabilities for {len(echoed)} tokens"
            )
        return echoed, plp

    def _prompt_logprobs_one(self, ids: list[int], k: int) -> PromptLogprobs:
        echoed, plp = self._scored(self._scoring_request(ids, k), ids, k)
        out = PromptLogprobs()
        for j, entry in enumerate(plp[1:]):
            try:
                items = sorted(
                    ((int(t), float(v["logprob"]), v.get("rank")) for t, v in entry.items()),
                    key=lambda x: -x[1],
                )
                actual = entry.get(str(echoed[j + 1]))
            except (AttributeError, KeyError, TypeError, ValueError):
                raise BbiError(
                    f"{self.base_url}: prompt_logprobs entry {j + 1} is not vLLM's "
                    "{token id: {logprob, rank}}"
                ) from None
            top = items[:k]
            out.top_ids.append([t for t, _, _ in top])
            out.top_logprobs.append([v for _, v, _ in top])
            out.token_logprobs.append(float(actual["logprob"]) if actual else float("nan"))
            out.ranks.append(int(actual.get("rank") or 0) if actual else 0)
        with self._lock:
            self.usage["requests"] += 1
            self.usage["prompt_tokens"] += len(ids)
        return out

    def prompt_logprobs(
        self, sequences: list[list[int]], k: int, progress: bool = False
    ) -> list[PromptLogprobs]:
        """Teacher-forced top-``k`` log-probabilities of token sequences, as
        :class:`~bbi.backends.base.PromptLogprobs` (entry j: the distribution of token
        j + 1): one scoring request per sequence (module docstring), ``concurrency`` at a
        time, retried like generation; results in order."""
        if k < 1:
            raise BbiError(f"k must be >= 1, got {k}")
        return self._concurrent(
            [(list(seq), k) for seq in sequences],
            self._prompt_logprobs_one,
            f"scoring with {self.name}",
            progress,
        )

    def token_texts(self, ids: list[int], k: int) -> list[str | None]:
        """The server's text of each of ``ids[1:]`` (``decoded_token`` of its
        ``prompt_logprobs``; None where it gives none), from one scoring request with
        ``prompt_logprobs: k``: it also proves the server scores token ids and returns k
        log-probabilities per token (a served teacher's preflight)."""
        echoed, plp = self._scored(self._scoring_request(list(ids), k), list(ids), k)
        out: list[str | None] = []
        for p in range(1, len(echoed)):
            entry = plp[p] if isinstance(plp[p], dict) else {}
            actual = entry.get(str(echoed[p]))
            out.append(actual.get("decoded_token") if isinstance(actual, dict) else None)
        return out

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]:
        raise BbiError(
            f"{self.name}: chat-completions endpoints cannot score given responses "
            "(teacher forcing); use an hf: or zoo: spec for likelihood features"
        )

    def close(self) -> None:
        self.client.close()


def load_openai_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **opts: Any,
) -> OpenAIBackend:
    """Registry entry for ``openai:`` specs (device/dtype belong to the server)."""
    allowed = {"api_key", "concurrency", "timeout", "max_retries", "check", "token_param",
               "price_input", "price_output"}  # fmt: skip
    return OpenAIBackend(spec, **{k: v for k, v in opts.items() if k in allowed})
