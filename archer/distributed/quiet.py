"""Third-party chatter filtered to what a user needs; ``--verbose`` (``ARCHER_VERBOSE=1``) shows it all.

On CPU vLLM logs ``RotaryEmbedding: Failed to load weights`` once per weight push (the layer has no
weights, only a cos/sin cache it computes itself: nothing failed) and a dozen start-up warnings about
Triton, LD_PRELOAD, thread binding and compilation modes that a user cannot act on; transformers warns
about deprecated arguments that vLLM or a checkpoint passes; Ray prints its start-up banner. Without
``--verbose`` those known lines are dropped, any other vLLM message is shown once, transformers shows
errors only and Ray starts at WARNING. archer's own notes and warnings are never filtered.
"""

from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "ARCHER_VERBOSE"

# substrings of vLLM log lines that carry nothing a user can act on (vLLM 0.x, CPU and CUDA)
VLLM_NOISE = (
    "Failed to load weights",  # RotaryEmbedding on every weight push: it has no weights
    "The global random seed is set",
    "Enforce eager set",
    "Inductor compilation was disabled",
    "Triton is not installed",
    "Reset SSM cache type",
    "Model Runner V2 requires Triton",
    "is not found in LD_PRELOAD",
    "doesn't allow to use `torch.set_num_threads`",
    "`torch_dtype` is deprecated",
)


def verbose() -> bool:
    """True when the command was given ``--verbose`` (or ``ARCHER_VERBOSE=1`` is set)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_process(verbose_flag: bool = False) -> None:
    """Set this process's (and its children's) third-party log levels; ``verbose_flag`` keeps them all
    (exported as ``ARCHER_VERBOSE=1`` so Ray workers and engine processes see it too)."""
    if verbose_flag:
        os.environ[VERBOSE_ENV] = "1"
    if verbose():
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
        return
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass
    for module in (r"vllm(\..*)?", r"ray(\..*)?", r"triton(\..*)?"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)


class _DropNoise(logging.Filter):
    """Drops :data:`VLLM_NOISE` lines and repeats of any other line."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        message = record.getMessage()
        if any(noise in message for noise in VLLM_NOISE) or message in self.seen:
            return False
        self.seen.add(message)
        return True


_FILTER = _DropNoise()


def noise_filter() -> logging.Filter:
    """The one filter instance (its memory of lines already shown is shared); a ``dictConfig`` factory."""
    return _FILTER


def quiet_vllm() -> None:
    """Filter vLLM's log handler (call after ``import vllm``); no-op when verbose. vLLM rebuilds its
    handler from ``vllm.logger.DEFAULT_LOGGING_CONFIG`` whenever an engine starts, so the filter is
    added there as well as to the handler in place now."""
    if verbose():
        return
    try:
        import vllm.logger as vllm_logger

        config = vllm_logger.DEFAULT_LOGGING_CONFIG
        config.setdefault("filters", {})["archer_quiet"] = {"()": f"{__name__}.noise_filter"}
        handler = config["handlers"]["vllm"]
        handler["filters"] = sorted({*handler.get("filters", []), "archer_quiet"})
    except Exception:  # noqa: BLE001 - another vLLM version: the handlers in place are still filtered
        pass
    for handler in logging.getLogger("vllm").handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


def ray_logging_level() -> int:
    """``logging_level`` for ``ray.init``: WARNING unless verbose."""
    return logging.INFO if verbose() else logging.WARNING
