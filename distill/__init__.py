"""bbi distill package."""
