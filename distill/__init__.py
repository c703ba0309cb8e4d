"""Students that close the gap to the teacher: LoRA (``distill.lora``) and friends."""
