"""bbi: bounded behavioral indistinguishability for teacher/student LLM pairs."""

from bbi.errors import BbiError

__version__ = "0.1.0"
__all__ = ["BbiError", "__version__"]
