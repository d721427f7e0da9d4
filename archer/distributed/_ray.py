"""Lazy, guarded access to Ray (an optional extra: ``pip install 'archer[ray]'``).

Everything in :mod:`archer.distributed` that needs Ray goes through :func:`import_ray`, so a missing
install is one clear error naming the extra instead of an ``ImportError`` deep in a stack.
"""

from __future__ import annotations

from typing import Any

from archer.distributed.quiet import ray_logging_level

INSTALL_HINT = "Ray is not installed; install the extra with `pip install 'archer[ray]'` (ray[default]>=2.40)"


def import_ray() -> Any:
    """Return the ``ray`` module or raise ``ImportError`` with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return ray


def ensure_ray(address: str | None = None, **init_kwargs: Any) -> Any:
    """Connect to Ray once: reuse a running session, else ``ray.init(address=...)``.

    ``address=None`` starts a local single-node cluster (or joins the one in ``RAY_ADDRESS``); pass
    ``"auto"`` to join a cluster started with ``archer cluster start`` on this node.
    """
    ray = import_ray()
    if not ray.is_initialized():
        init_kwargs.setdefault("include_dashboard", False)
        init_kwargs.setdefault("log_to_driver", False)
        init_kwargs.setdefault("logging_level", ray_logging_level())  # no start-up banner unless --verbose
        ray.init(address=address, **init_kwargs)
    return ray


def actor_died_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Exception types meaning "the actor is gone": its in-flight work must be redone elsewhere."""
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "WorkerCrashedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))
