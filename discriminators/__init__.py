"""bbi discriminators package."""
