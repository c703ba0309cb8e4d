"""bbi reports package."""
