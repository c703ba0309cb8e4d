"""Students that close the gap to the teacher: one training loop, one objective per method.

- ``distill.trainer``: the loop (Accelerate): optimizer, schedule, accumulation, clipping,
  eval, metrics JSONL, exact checkpoint/resume.
- ``distill.objectives``: what is minimised: ``sft`` (cross-entropy on the teacher's
  responses) and ``kd`` (token-level KL/JSD to the teacher's distribution, on- or
  off-policy).
- ``distill.method``: run dir -> data -> trainable student (LoRA or full) -> loop ->
  saved, registered student; ``distill.lora`` and ``distill.kd`` are its two methods.
- ``distill.methods``: the registry of distillation methods (``lora``, ``kd``, ``wda``,
  ``bird``, ``circuit``, and plug-ins by entry point ``bbi.distill_methods``): each its
  settings model, run options and run function; ``bbi distill`` is generated from it.
"""
