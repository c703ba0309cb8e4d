"""A nano zoo configuration shared by the zoo tests: the micro one with a few steps."""

from __future__ import annotations

import dataclasses

from bbi import zoo


def nano_config(student_steps: int = 2) -> zoo.ZooConfig:
    """The micro config as ``nano``: 6 prompts per category, 3 teacher steps and
    ``student_steps`` student steps, so a build takes seconds."""
    micro = zoo.CONFIGS["micro"]
    return dataclasses.replace(
        micro,
        name="nano",
        per_category=6,
        teacher=dataclasses.replace(micro.teacher, steps=3),
        student=dataclasses.replace(micro.student, steps=student_steps),
    )
