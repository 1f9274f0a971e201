"""What a run prints: text progress when nobody watches live, and known harmless library messages silenced.

Light on purpose (no torch, no transformers): `helpers/__init__` calls silence_known_noise() on first import,
before bitsandbytes is imported and logs its optional-kernel message.
"""
from __future__ import annotations

import logging
import re
import warnings

from tqdm import auto as _auto
from tqdm import std as _std

__all__ = ["HEADLESS_REFRESH_S", "headless", "tqdm", "KNOWN_WARNINGS", "KNOWN_LOG_MESSAGES", "silence_known_noise"]

# (category, start of the message) of library warnings that tell a cookbook reader nothing they can act on.
KNOWN_WARNINGS = (
    # peft's PeftModel reads transformers' old property name; harmless until transformers v6.
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
)
# (logger, start of the message) of library log records of the same kind.
KNOWN_LOG_MESSAGES = (
    # bitsandbytes on a CPU with AVX512-BF16 looks for an optional kernel package, then uses its own code.
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward"),
    # Checkpoints are then ordered by step number, which is what latest_checkpoint does anyway.
    ("transformers.trainer_utils", "mtime may not be reliable"),
)
HEADLESS_REFRESH_S = 10.0  # seconds between text refreshes of a bar when nobody watches live
_log_filters: dict = {}  # (logger, message) -> the filter installed for it


def headless() -> bool:
    """True unless a live Jupyter frontend runs this code: papermill/nbclient runs, scripts and tests are headless."""
    try:
        from IPython import get_ipython
    except ImportError:
        return True
    kernel = getattr(get_ipython(), "kernel", None)
    # A frontend that can draw widgets also answers input(); papermill and nbclient execute with allow_stdin=False,
    # and widget state is not saved with a notebook, so their bars would stay frozen at 0%.
    return kernel is None or not getattr(kernel, "_allow_stdin", True)


def tqdm(*args, **kwargs):
    """A progress bar: a widget in a live notebook, text ending at 100% anywhere else (saved notebooks, logs)."""
    if not headless():
        return _auto.tqdm(*args, **kwargs)
    # Every text refresh is kept in a saved notebook: a few per minute read as well as a log and keep it small.
    return _std.tqdm(*args, **{"mininterval": HEADLESS_REFRESH_S, **kwargs})


def _drop_message(prefix: str):
    return lambda record: not record.getMessage().startswith(prefix)


def silence_known_noise() -> None:
    """Hide exactly the KNOWN_WARNINGS (by category and message) and KNOWN_LOG_MESSAGES (by logger and message)."""
    for category, message in KNOWN_WARNINGS:  # re-adding a filter replaces the identical one: safe to call again
        warnings.filterwarnings("ignore", message=re.escape(message), category=category)
    for logger, message in KNOWN_LOG_MESSAGES:
        if (logger, message) not in _log_filters:
            _log_filters[logger, message] = _drop_message(message)
            logging.getLogger(logger).addFilter(_log_filters[logger, message])
