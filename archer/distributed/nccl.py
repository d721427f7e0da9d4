"""NCCL settings as a validated config section, turned into the environment of every worker.

NCCL reads its settings from environment variables in each process that creates a communicator, so
they must reach the Ray workers and the torch.distributed ranks, not only the driver. Two routes,
both built from one :class:`NCCLConfig`:

- ``archer cluster start|join`` prefixes ``ray start`` with them (``NCCL_SOCKET_IFNAME=eth0 ray
  start ...``): every worker a raylet forks inherits them;
- :func:`ray_runtime_env` gives ``{"env_vars": {...}}`` for ``ray.init(runtime_env=...)`` when joining
  a cluster that was started without them.

Recipe section (YAML), the top-level ``nccl`` (``archer.config.Config.nccl``; the training ranks set
it before joining their process group)::

    nccl:
      socket_ifname: eth0      # NCCL_SOCKET_IFNAME: interface(s) for bootstrap and sockets
      ib_disable: true         # NCCL_IB_DISABLE=1: no InfiniBand (e.g. cloud VMs without RDMA)
      debug: WARN              # NCCL_DEBUG: VERSION | WARN | INFO | TRACE
      env: {NCCL_P2P_DISABLE: "1"}   # any other NCCL_* variable, verbatim
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

DEBUG_LEVELS = ("VERSION", "WARN", "INFO", "TRACE")


@dataclass
class NCCLConfig:
    """NCCL environment for every rank; ``None`` leaves NCCL's own default."""

    socket_ifname: str | None = None
    """NCCL_SOCKET_IFNAME: network interface(s) for bootstrap and sockets."""
    ib_disable: bool | None = None
    """NCCL_IB_DISABLE: true turns InfiniBand off (e.g. cloud VMs without RDMA)."""
    debug: str | None = None
    """NCCL_DEBUG: VERSION, WARN, INFO or TRACE."""
    env: dict[str, str] = field(default_factory=dict)
    """Any other NCCL_* variable, verbatim."""

    def __post_init__(self) -> None:
        if self.socket_ifname is not None and (
            not isinstance(self.socket_ifname, str) or not self.socket_ifname
        ):
            raise ValueError(f"nccl.socket_ifname must be a non-empty string, got {self.socket_ifname!r}")
        if self.ib_disable is not None and not isinstance(self.ib_disable, bool):
            raise ValueError(f"nccl.ib_disable must be true or false, got {self.ib_disable!r}")
        if self.debug is not None:
            self.debug = str(self.debug).upper()
            if self.debug not in DEBUG_LEVELS:
                raise ValueError(f"nccl.debug must be one of {DEBUG_LEVELS}, got {self.debug!r}")
        if not isinstance(self.env, dict):
            raise ValueError(
                f"nccl.env must be a mapping of NCCL_* names to values, got {type(self.env).__name__}"
            )
        for key in self.env:
            if not str(key).startswith("NCCL_"):
                raise ValueError(f"nccl.env key {key!r} is not an NCCL_* variable")
        self.env = {str(k): _env_value(v) for k, v in self.env.items()}

    @classmethod
    def from_dict(cls, section: dict[str, Any] | None) -> NCCLConfig:
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown nccl field(s) {unknown}; valid: {sorted(known)}")
        return cls(**section)

    def to_env(self) -> dict[str, str]:
        """The ``NCCL_*`` variables to set (explicit fields win over ``env``)."""
        out = dict(self.env)
        if self.socket_ifname is not None:
            out["NCCL_SOCKET_IFNAME"] = self.socket_ifname
        if self.ib_disable is not None:
            out["NCCL_IB_DISABLE"] = "1" if self.ib_disable else "0"
        if self.debug is not None:
            out["NCCL_DEBUG"] = self.debug
        return out

    def with_overrides(self, pairs: list[str]) -> NCCLConfig:
        """Apply ``KEY=VALUE`` strings (``NCCL_DEBUG=INFO`` or ``debug=INFO``) from the command line."""
        section: dict[str, Any] = {
            "socket_ifname": self.socket_ifname,
            "ib_disable": self.ib_disable,
            "debug": self.debug,
            "env": dict(self.env),
        }
        names = {
            "NCCL_SOCKET_IFNAME": "socket_ifname",
            "NCCL_IB_DISABLE": "ib_disable",
            "NCCL_DEBUG": "debug",
        }
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"--nccl expects KEY=VALUE, got {pair!r}")
            name = names.get(key.upper(), key.lower())
            if name in ("socket_ifname", "debug"):
                section[name] = value
            elif name == "ib_disable":
                section[name] = _parse_bool(value, "nccl.ib_disable")
            elif key.upper().startswith("NCCL_"):
                section["env"][key.upper()] = value
            else:
                raise ValueError(
                    f"--nccl key {key!r} is neither a field (socket_ifname, ib_disable, debug) "
                    "nor an NCCL_* variable"
                )
        return NCCLConfig.from_dict(section)


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _parse_bool(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be a boolean (true/false/1/0), got {value!r}")


def load_nccl_config(path: str | Path | None) -> NCCLConfig:
    """Read the top-level ``nccl`` section of a YAML recipe (its one home)."""
    if path is None:
        return NCCLConfig()
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a YAML mapping at the top level")
    for parent in ("cluster", "resources"):
        section = data.get(parent)
        if isinstance(section, dict) and "nccl" in section:
            raise ValueError(
                f"{path}: {parent}.nccl moved to a top-level nccl section (one home per setting)"
            )
    return NCCLConfig.from_dict(data.get("nccl"))


def ray_runtime_env(config: NCCLConfig, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """``runtime_env`` for ``ray.init`` / ``.options`` carrying the NCCL variables to every worker."""
    runtime_env = dict(base or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **config.to_env()}
    return runtime_env
