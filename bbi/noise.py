"""Keep library noise off the console unless ``--verbose``.

transformers' weight-loading and shard-writing bars, deprecation FutureWarnings and
liblinear's ConvergenceWarnings (hundreds per sweep) bury bbi's own progress and results
in a non-interactive log. By default bbi silences them; ``bbi --verbose`` lets them through.
Environment variables are set too, so worker processes (joblib, accelerate) inherit it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

_NOISY_LOGGERS = ("transformers", "accelerate", "peft", "datasets", "sentence_transformers")


def configure(verbose: bool = False) -> None:
    """Silence (or, with ``verbose``, allow) third-party warnings, logs and progress bars."""
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    # ConvergenceWarning and friends (UserWarning subclasses) without importing sklearn.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"sklearn(\.|$)")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Already imported (e.g. in tests): the environment variables came too late for it.
    transformers = sys.modules.get("transformers")
    if transformers is not None:
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
