"""bbi probes package."""
