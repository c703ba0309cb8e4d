"""The one place the prompt format is decided, so probing and distillation agree.

A tokenizer with a chat template gets it (one user turn, generation prompt added);
otherwise the plain ``User: ...\\nAssistant:`` format is used. The choice is returned so
it can be recorded in the manifest.
"""

from __future__ import annotations

from typing import Any

PLAIN_FORMAT = "plain"
TEMPLATE_FORMAT = "chat_template"


def plain_prompt(prompt: str) -> str:
    return f"User: {prompt}\nAssistant:"


def chat_format_of(tokenizer: Any) -> str:
    """Which format a tokenizer gets: its chat template if it has one, else plain."""
    return TEMPLATE_FORMAT if getattr(tokenizer, "chat_template", None) else PLAIN_FORMAT


def format_prompt(tokenizer: Any, prompt: str) -> tuple[str, str]:
    """Return (text to feed the model, format name) for one user prompt."""
    fmt = chat_format_of(tokenizer)
    if fmt == TEMPLATE_FORMAT:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        return text, fmt
    return plain_prompt(prompt), fmt


def response_suffix(fmt: str, response: str, eos_token: str | None) -> str:
    """The text that follows the formatted prompt when training on a response.

    The plain format puts one space after ``Assistant:``; both formats end with EOS so
    the student learns to stop where the teacher stopped.
    """
    body = (" " + response.lstrip()) if fmt == PLAIN_FORMAT else response
    return body + (eos_token or "")
