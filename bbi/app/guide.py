"""Attack-guided distillation data, wired by the application layer.

``distill`` never imports ``discriminators``: here the train-split leak of the student
(``discriminators.leak``) becomes the sample weights ``distill.method.distil`` takes, so
``bbi distill lora|kd --guide ...`` and ``bbi run`` with ``guide:`` train where an attack
tells the student apart.
"""

from __future__ import annotations

from typing import Any

from bbi.config import GuideSettings, LoopSettings
from bbi.runstore import RunDir


def guide_weights_for(run: RunDir, settings: Any, student: str | None = None) -> Any:
    """The ``sample_weights`` of a guided distillation (None when ``settings.guide`` is
    none): the student's leak is cross-fitted now, before any model loads; each training
    example is then weighted by it (``(weights, summary)``, the summary recorded as the
    distill record's ``guide``)."""
    if not isinstance(settings, GuideSettings) or settings.guide == "none":
        return None
    from discriminators.leak import guide_weights, train_leak
    from distill.method import guide_source, pick_student_spec
    from distill.student import normalize_base_spec

    seed = settings.seed if isinstance(settings, LoopSettings) else 0
    base_spec = normalize_base_spec(student or pick_student_spec(run))
    leak = train_leak(
        run,
        guide_source(run, base_spec, settings.guide_from),
        adversary=settings.guide_adversary,
        folds=settings.guide_folds,
        seed=seed,
    )

    def weights(ds: Any) -> tuple[Any, dict]:
        return guide_weights(leak, ds.prompt_ids, ds.categories, settings.guide, settings.guide_mix)

    return weights


__all__ = ["guide_weights_for"]
