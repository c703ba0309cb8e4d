"""`bbi serve`: any model spec behind an OpenAI-compatible server (chat completions, and
completions with log-probabilities for hf:/zoo: models, vLLM's way)."""

from __future__ import annotations

from typing import Any

import typer


def serve_command(
    spec: str = typer.Argument(
        ..., help="Model spec, e.g. zoo:teacher, hf:./model, Qwen/Qwen2.5-0.5B-Instruct."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="TCP port."),
    name: str = typer.Option(
        None, help="Model name clients ask for (default: the canonical spec)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1, mps."),
    dtype: str = typer.Option("auto", help="auto, float32, float16, bfloat16."),
    trust_remote_code: bool = typer.Option(
        False,
        "--trust-remote-code",
        help="Allow a model's own Python code to run (only if you trust it).",
    ),
    allow_download: bool = typer.Option(
        False, "--allow-download", help="Let hub ids download (ignored when HF_HUB_OFFLINE=1)."
    ),
    max_batch: int = typer.Option(32, help="Most concurrent requests decoded together."),
    max_prompt_chars: int = typer.Option(
        None, help="Longest prompt accepted, in characters; longer: HTTP 400 (default 32000)."
    ),
    max_tokens: int = typer.Option(
        None, help="Most tokens one request may generate; more: HTTP 400 (default 4096)."
    ),
    max_body_bytes: int = typer.Option(
        None,
        help="Largest request body, in bytes, refused (HTTP 413) before it is read "
        "(default 1048576).",
    ),
    max_logprobs: int = typer.Option(
        None,
        help="Most log-probabilities per token a request may ask for (logprobs, "
        "top_logprobs, prompt_logprobs); more: HTTP 400 (default 128).",
    ),
) -> None:
    """Serve SPEC over /v1/models, /v1/chat/completions (n, max_tokens, temperature, top_p,
    seed, stop, logprobs/top_logprobs) and, for hf:/zoo: models, /v1/completions (a text or
    token-id prompt, echo, logprobs, max_tokens 0 to score only, vLLM's prompt_logprobs and
    return_tokens_as_token_ids): a served teacher for `bbi distill kd --teacher-spec
    openai:URL#MODEL --teacher-logits cache`. A request's seed fixes its output regardless
    of batching."""
    from bbi.serve import serve

    # Unset limits keep bbi.serve's defaults (importing it here would slow every command).
    limits: dict[str, Any] = {
        k: v
        for k, v in (
            ("max_prompt_chars", max_prompt_chars),
            ("max_tokens", max_tokens),
            ("max_body_bytes", max_body_bytes),
            ("max_logprobs", max_logprobs),
        )
        if v is not None
    }
    serve(
        spec,
        host=host,
        port=port,
        name=name,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_download=allow_download,
        max_batch=max_batch,
        **limits,
        announce=lambda line: typer.echo(line, err=True),
    )


def register(app: typer.Typer) -> None:
    """Attach the `serve` command to the root app."""
    app.command("serve")(serve_command)
