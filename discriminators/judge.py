"""``judge``: an LLM asked which of two responses the teacher wrote, in both orders.

The paper's LLM judge (from a different family than the student) sees a prompt and the
two responses and names the teacher's; it is asked again with the responses swapped and
only *consistent* verdicts (the same response chosen in both orders) are kept, which
removes pure position bias. An inconsistent item is an abstention, a coin flip for the
distinguisher: it contributes 0 to eps, which stays an advantage over all test prompts
(eps on the kept items alone would be inflated by 1 / kept fraction); the kept fraction is
reported beside it.

With the default judge (the teacher's own spec) the judge reads the teacher's weights
outside the query budget q: a *gray-box* adversary, and ``notes`` says so in the results.

The judge is any model spec (``judge=``; default: the run's teacher spec, so its family is
independent of the student's unless you choose otherwise), including ``openai:`` endpoints.
It is shown ``k`` few-shot examples of the teacher, drawn (seeded) from the bought train
pairs at ``fit`` time, so the budget buys the judge its notion of "the teacher".

Two ways to read a verdict:
``logprob``  compare log p(" A") and log p(" B") as the judge's answer via ``score()``
             (HF/zoo backends): always yields a verdict, and its margin is a probability.
``text``     generate a few tokens greedily and parse the first standalone ``A``/``B``
             (any backend; unparseable answers count as no verdict).
``method="auto"`` uses ``logprob`` when the backend can score and falls back to ``text``.

``predict_proba`` returns P(response_a is the teacher's) for kept items and exactly 0.5
for dropped ones (inconsistent or unparsed), so it is safe for any consumer; ``kept_``
(bool mask) and ``kept_fraction`` say which items carried a verdict.

Small judges can be so position-biased that nothing is consistent. With
``drop_inconsistent=False`` every item is kept: the logprob path then uses the
position-debiased margin ``(d1 - d2) / 2`` for every item (a verdict even when both orders
prefer the same letter), the text path scores inconsistent items 0.5 (a tie).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bbi.errors import BbiError
from discriminators.base import BOOLEAN, SEED, Adversary, at_least, one_of

METHODS = ("auto", "logprob", "text")
GRAY_BOX_NOTE = "gray-box: the judge is the teacher model, queried outside the budget q"
_LETTER = re.compile(r"(?<![A-Za-z])([AB])(?![A-Za-z])")

INSTRUCTIONS = (
    "Two AI models, X (the teacher) and Y, answered the same prompt. Exactly one of the two "
    "responses below was written by model X."
)
QUESTION = "Which response was written by model X (the teacher)? Answer A or B."


def parse_verdict(text: str) -> str | None:
    """The first standalone ``A`` or ``B`` in a generated answer, else None."""
    m = _LETTER.search(text or "")
    return m.group(1) if m else None


def combine_orders(v1: str | None, v2: str | None) -> float | None:
    """P(response_a is the teacher's) from the two text verdicts, None if inconsistent.

    Order 1 shows (A=a, B=b); order 2 shows (A=b, B=a). Consistent = the same response
    chosen twice, i.e. different letters; the same letter twice is position bias.
    """
    if v1 is None or v2 is None or v1 == v2:
        return None
    return 1.0 if v1 == "A" else 0.0


def combine_margins(d1: float, d2: float) -> float | None:
    """Logprob path: ``d = log p(A) - log p(B)`` in each order; None if inconsistent.

    Consistent when both orders prefer the same response (``d1`` and ``d2`` of opposite
    sign); the probability uses the position-debiased margin ``(d1 - d2) / 2``.
    """
    if not (d1 > 0 > d2 or d1 < 0 < d2):
        return None
    return _sigmoid((d1 - d2) / 2.0)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _clip(text: str, max_chars: int) -> str:
    text = str(text).strip()
    return text if len(text) <= max_chars else text[:max_chars].rstrip() + " [...]"


def build_judge_prompt(
    prompt: str, first: str, second: str, examples: Sequence[tuple[str, str]], max_chars: int
) -> str:
    parts = [INSTRUCTIONS, ""]
    if examples:
        parts.append("Examples of model X's responses to other prompts:")
        for i, (ep, er) in enumerate(examples, 1):
            parts += [
                "",
                f"Example {i}",
                f"Prompt: {_clip(ep, max_chars)}",
                f"Response: {_clip(er, max_chars)}",
            ]
        parts.append("")
    parts += [
        f"Prompt: {_clip(prompt, max_chars)}",
        "",
        f"Response A: {_clip(first, max_chars)}",
        "",
        f"Response B: {_clip(second, max_chars)}",
        "",
        QUESTION,
    ]
    return "\n".join(parts)


class _CallableJudge:
    """Adapter: a plain ``fn(prompts) -> answers`` as a text-only judge backend."""

    def __init__(self, fn: Callable[[list[str]], list[str]]):
        self.fn = fn
        self.name = getattr(fn, "__name__", "callable")

    def generate(self, prompts, config=None, seeds=None, progress=False):
        from bbi.backends.base import Generation

        return [Generation(text=str(t), n_tokens=1, finish_reason="stop") for t in self.fn(prompts)]


class JudgeAdversary(Adversary):
    """LLM judge with A/B-swap consistency; P(response_a is the teacher's)."""

    name: ClassVar[str] = "judge"
    kind: ClassVar[str] = "pairwise"
    needs: ClassVar[frozenset[str]] = frozenset({"backend"})

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "k": at_least(0),
        "method": one_of(*METHODS),
        "max_chars": at_least(1),
        "max_new_tokens": at_least(1),
        "drop_inconsistent": BOOLEAN,
        "batch_size": at_least(1),
        "random_state": SEED,
        "progress": BOOLEAN,
        "model_args": [str, None],
    }

    def __init__(
        self,
        judge: Any = None,
        k: int = 3,
        method: str = "auto",
        max_chars: int = 500,
        max_new_tokens: int = 8,
        drop_inconsistent: bool = True,
        batch_size: int = 16,
        random_state: int = 0,
        progress: bool = True,
        model_args: str | None = None,
        context: dict[str, Any] | None = None,
    ):
        self.judge = judge
        self.k = k
        self.method = method
        self.max_chars = max_chars
        self.max_new_tokens = max_new_tokens
        self.drop_inconsistent = drop_inconsistent
        self.batch_size = batch_size
        self.random_state = random_state
        self.progress = progress
        self.model_args = model_args
        self.context = context

    # ---- the judge model --------------------------------------------------------------
    def _judge_model(self) -> Any:
        """The judge (a spec, backend or callable; default: the run's teacher spec)."""
        ref = self.judge
        if ref is None:
            ctx = self.context or {}
            run, teacher = ctx.get("run"), ctx.get("teacher")
            if run is not None and teacher is not None:
                ref = (run.models().get(teacher) or {}).get("spec")
        if ref is None:
            raise BbiError("judge: no judge model; pass judge=SPEC (e.g. hf:..., openai:URL#model)")
        ctx = self.context or {}
        run, teacher = ctx.get("run"), ctx.get("teacher")
        t_spec = (run.models().get(teacher) or {}).get("spec") if run and teacher else None
        self.notes = GRAY_BOX_NOTE if isinstance(ref, str) and ref == t_spec else None
        if isinstance(ref, str):
            from bbi.specs import imported_error, is_imported, parse_spec

            if is_imported(ref):
                raise imported_error(
                    ref,
                    "judge",
                    "pass a judge model with --param judge.judge=SPEC "
                    "(e.g. hf:..., zoo:teacher, openai:URL#model)",
                )
            parse_spec(ref)
        return ref

    def preflight(self) -> None:
        """Resolve the judge spec now, so a run without a usable one fails up front."""
        ref = self._judge_model()
        if isinstance(ref, str):
            self._backend_options(ref)  # a bad model_args fails before the sweep

    def _backend(self) -> Any:
        if getattr(self, "backend_", None) is not None:
            return self.backend_
        ref = self._judge_model()
        if isinstance(ref, str):
            from bbi.backends import load_backend

            self.backend_ = load_backend(ref, **self._backend_options(ref))
        elif callable(getattr(ref, "generate", None)) or callable(getattr(ref, "score", None)):
            self.backend_ = ref
        elif callable(ref):
            self.backend_ = _CallableJudge(ref)
        else:
            raise BbiError(f"judge: cannot use {type(ref).__name__} as a judge model")
        self._cache: dict[tuple[str, str], Any] = {}
        return self.backend_

    def _method(self) -> str:
        if self.method not in METHODS:
            raise BbiError(
                f"judge: method must be one of {', '.join(METHODS)}, not {self.method!r}"
            )
        can_score = callable(getattr(self.backend_, "score", None))
        if self.method == "logprob" and not can_score:
            raise BbiError("judge: method='logprob' needs a backend that can score (hf:, zoo:)")
        if self.method == "auto":
            if not can_score:
                return "text"
            if getattr(self, "auto_method_", None) is None:
                try:  # openai-compatible backends define score() but refuse to score
                    self.backend_.score(["Answer A or B."], ["A"])
                    self.auto_method_ = "logprob"
                except (BbiError, NotImplementedError):
                    self.auto_method_ = "text"
            return self.auto_method_
        return self.method

    def _ask(self, prompts: list[str], method: str) -> list[Any]:
        """Raw judgement per prompt (margin or letter), cached by (method, prompt)."""
        from tqdm.auto import tqdm

        todo = list(dict.fromkeys(p for p in prompts if (method, p) not in self._cache))
        bs = max(1, int(self.batch_size))
        with tqdm(
            total=len(todo), desc="judge", disable=not self.progress or not todo, leave=False
        ) as bar:
            for start in range(0, len(todo), bs):
                chunk = todo[start : start + bs]
                if method == "logprob":
                    scored = self.backend_.score(
                        chunk + chunk, ["A"] * len(chunk) + ["B"] * len(chunk)
                    )
                    for j, p in enumerate(chunk):
                        la = float(np.sum(scored[j].logprobs))
                        lb = float(np.sum(scored[len(chunk) + j].logprobs))
                        self._cache[(method, p)] = la - lb
                else:
                    from bbi.backends.base import GenerationConfig

                    cfg = GenerationConfig(
                        max_new_tokens=int(self.max_new_tokens),
                        temperature=0.0,
                        top_p=1.0,
                        batch_size=bs,
                    )
                    gens = self.backend_.generate(chunk, cfg, [int(self.random_state)] * len(chunk))
                    for p, g in zip(chunk, gens, strict=True):
                        self._cache[(method, p)] = parse_verdict(g.text)
                bar.update(len(chunk))
        return [self._cache[(method, p)] for p in prompts]

    # ---- protocol ---------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: np.ndarray) -> JudgeAdversary:
        """Draw ``k`` few-shot examples of the teacher from the bought pairs (seeded)."""
        y = np.asarray(y, dtype=int)
        if len(X) != len(y):
            raise BbiError(f"judge: {len(X)} pairs but {len(y)} labels")
        if int(self.k) < 0:
            raise BbiError("judge: k (few-shot examples) must be >= 0")
        teacher = np.where(y == 1, X["response_a"].astype(str), X["response_b"].astype(str))
        rng = np.random.default_rng(int(self.random_state))
        pick = rng.permutation(len(X))[: min(int(self.k), len(X))]
        prompts = X["prompt"].astype(str).to_numpy()
        examples = [(prompts[i], str(teacher[i])) for i in pick]
        if examples != getattr(self, "examples_", None) and hasattr(self, "_cache"):
            self._cache = {}  # verdicts under other few-shot examples will not recur
        self.examples_ = examples
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "examples_"):
            raise BbiError("judge: predict_proba called before fit")
        self._backend()
        method = self._method()
        mc = int(self.max_chars)
        p_, a_, b_ = (X[c].astype(str).tolist() for c in ("prompt", "response_a", "response_b"))
        order1 = [
            build_judge_prompt(p, a, b, self.examples_, mc)
            for p, a, b in zip(p_, a_, b_, strict=True)
        ]
        order2 = [
            build_judge_prompt(p, b, a, self.examples_, mc)
            for p, a, b in zip(p_, a_, b_, strict=True)
        ]
        raw = self._ask(order1 + order2, method)
        n = len(X)
        combine = combine_margins if method == "logprob" else combine_orders
        out = np.full(n, 0.5)
        kept = np.zeros(n, dtype=bool)
        for i in range(n):
            v = combine(raw[i], raw[n + i])
            if v is not None:
                out[i] = v
                kept[i] = True
            elif not self.drop_inconsistent:
                kept[i] = True
                if method == "logprob":
                    out[i] = _sigmoid((raw[i] - raw[n + i]) / 2.0)
        self.method_ = method
        self.kept_ = kept
        self.kept_fraction = float(kept.mean()) if n else 0.0
        return out
