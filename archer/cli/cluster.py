"""``archer cluster``: start, join, inspect and stop a Ray cluster, NCCL settings included.

    archer cluster start --head [--port 6379] [--num-cpus N] [--num-gpus N] [--resources JSON] [--block]
    archer cluster start --hostfile FILE [--port 6379] [--print-only]
    archer cluster join HEAD_ADDRESS [--num-cpus N] [--num-gpus N] [--resources JSON]
    archer cluster status [--address auto]
    archer cluster stop

Every ``start``/``join`` accepts ``--config RECIPE.yaml`` (its NCCL section, see
:mod:`archer.distributed.nccl`) and ``--nccl KEY=VALUE`` overrides; the variables prefix the ``ray
start`` command, so every worker that node's raylet forks inherits them.

Hostfile: one host per line, the first is the head; ``#`` comments and blank lines are skipped and
anything after the host name (MPI's ``slots=8``) is ignored, so an ``/etc/mpi/hostfile`` works as is,
as with the seeds' ``start_ray.sh``. For each host the command to run there is printed; with
``ssh`` on the PATH (and no ``--print-only``) they are run over ssh, the head first (a host naming
this machine runs locally).

Limits: ``stop`` is ``ray stop``: it ends every Ray process on this node, so stop only a node you
started; ``start --head --block`` keeps the command in the foreground and ends the cluster it started
when interrupted, which is what tests and job scripts should use.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from archer.distributed.nccl import NCCLConfig, load_nccl_config

DEFAULT_PORT = 6379


def parse_hostfile(path: str | Path) -> list[str]:
    """Host names of a hostfile, head first; duplicates are an error (one raylet per host)."""
    hosts: list[str] = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        host = line.split()[0]
        if host in hosts:
            raise ValueError(f"{path}:{lineno}: host {host!r} is listed twice")
        hosts.append(host)
    if not hosts:
        raise ValueError(f"{path}: no hosts (one host per line, the first is the head)")
    return hosts


@dataclass
class NodeResources:
    num_cpus: int | None = None
    num_gpus: int | None = None
    resources: str | None = None  # JSON of custom resources: the node labels of resources.placement

    def flags(self) -> list[str]:
        out = []
        if self.num_cpus is not None:
            out += ["--num-cpus", str(self.num_cpus)]
        if self.num_gpus is not None:
            out += ["--num-gpus", str(self.num_gpus)]
        if self.resources is not None:
            out += ["--resources", self.resources]
        return out


def head_command(
    port: int,
    res: NodeResources,
    *,
    temp_dir: str | None = None,
    block: bool = False,
    dashboard: bool = False,
) -> list[str]:
    cmd = [
        "ray",
        "start",
        "--head",
        "--port",
        str(port),
        *res.flags(),
        f"--include-dashboard={str(dashboard).lower()}",
    ]
    if temp_dir:
        cmd += ["--temp-dir", temp_dir]
    if block:
        cmd.append("--block")
    return cmd


def join_command(address: str, res: NodeResources, *, block: bool = False) -> list[str]:
    cmd = ["ray", "start", "--address", address, *res.flags()]
    if block:
        cmd.append("--block")
    return cmd


def render(cmd: list[str], env: dict[str, str]) -> str:
    """A shell line: ``NCCL_X=1 ray start ...`` (what to paste on a host, or send over ssh)."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    return " ".join(prefix + [shlex.quote(c) for c in cmd])


def hostfile_plan(
    hosts: list[str], port: int, res: NodeResources, env: dict[str, str]
) -> list[tuple[str, str]]:
    """``(host, shell line)`` for each host: the head's ``ray start --head``, then the joins."""
    head = hosts[0]
    plan = [(head, render(head_command(port, res), env))]
    plan += [(h, render(join_command(f"{head}:{port}", res), env)) for h in hosts[1:]]
    return plan


def _is_local(host: str) -> bool:
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    return host in names


def _ray_argv(cmd: list[str]) -> list[str]:
    """Run ``ray ...`` with this interpreter's Ray when the ``ray`` script is not on the PATH."""
    if shutil.which("ray"):
        return cmd
    return [sys.executable, "-m", "ray.scripts.scripts", *cmd[1:]]


def _run_local(cmd: list[str], env: dict[str, str]) -> int:
    argv = _ray_argv(cmd)
    if "--block" in cmd:
        # become `ray start --block`: a signal to this process then reaches Ray, which ends its node
        sys.stdout.flush()
        os.execvpe(argv[0], argv, {**os.environ, **env})
    return subprocess.call(argv, env={**os.environ, **env})


def _nccl(args: argparse.Namespace) -> NCCLConfig:
    return load_nccl_config(args.config).with_overrides(args.nccl or [])


def _labels(text: str | None) -> str | None:
    """``--resources`` checked: a JSON object of resource name -> amount (Ray's ``--resources``)."""
    if text is None:
        return None
    import json

    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) for v in value.values()):
        raise ValueError(f"--resources {text!r}: expected a JSON object like '{{\"gen\": 1}}'")
    return json.dumps(value, separators=(",", ":"))


def _start(args: argparse.Namespace) -> int:
    if bool(args.head) == bool(args.hostfile):
        print("archer cluster start: give exactly one of --head or --hostfile FILE", file=sys.stderr)
        return 2
    env = _nccl(args).to_env()
    res = NodeResources(args.num_cpus, args.num_gpus, _labels(args.resources))
    if args.head:
        cmd = head_command(args.port, res, temp_dir=args.temp_dir, block=args.block, dashboard=args.dashboard)
        print(render(cmd, env), flush=True)
        if args.print_only:
            return 0
        return _run_local(cmd, env)
    hosts = parse_hostfile(args.hostfile)
    plan = hostfile_plan(hosts, args.port, res, env)
    ssh = shutil.which("ssh")
    print(
        "# Ray token auth: every host needs the head's ~/.ray/auth_token (or RAY_AUTH_MODE=disabled "
        "on all of them)",
        file=sys.stderr,
    )
    if args.print_only or ssh is None:
        if ssh is None and not args.print_only:
            print("# ssh not found: run each command below on its host", file=sys.stderr)
        for host, line in plan:
            print(f"[{host}] {line}")
        return 0
    for host, line in plan:  # head first: the others join it
        print(f"[{host}] {line}", flush=True)
        if _is_local(host):
            rc = subprocess.call(line, shell=True, env={**os.environ, **env})
        else:
            rc = subprocess.call([ssh, "-o", "BatchMode=yes", host, line])
        if rc != 0:
            print(f"archer cluster start: {host} failed with exit code {rc}", file=sys.stderr)
            return rc
    return 0


def _join(args: argparse.Namespace) -> int:
    env = _nccl(args).to_env()
    cmd = join_command(
        args.address, NodeResources(args.num_cpus, args.num_gpus, _labels(args.resources)), block=args.block
    )
    print(render(cmd, env), flush=True)
    return 0 if args.print_only else _run_local(cmd, env)


def _status(args: argparse.Namespace) -> int:
    from archer.distributed._ray import import_ray

    ray = import_ray()
    if ray.is_initialized():
        print("archer cluster status: this process is already connected to Ray", file=sys.stderr)
        return 1
    if args.address != "auto" and not _reachable(args.address):
        print(
            f"archer cluster status: nothing listens at {args.address!r} (is the head node started?)",
            file=sys.stderr,
        )
        return 1
    _use_local_token(args.address)
    try:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError) as exc:
        print(f"archer cluster status: no Ray cluster at {args.address!r}: {exc}", file=sys.stderr)
        return 1
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        free = ray.available_resources()
    finally:
        ray.shutdown()  # disconnects this driver only; the cluster keeps running
    print(f"{len(nodes)} node(s) alive")
    for n in nodes:
        r = n.get("Resources", {})
        print(f"  {n.get('NodeManagerAddress')}: CPU {r.get('CPU', 0):g}  GPU {r.get('GPU', 0):g}")
    for key in ("CPU", "GPU"):
        print(f"{key}: {free.get(key, 0):g} free of {total.get(key, 0):g}")
    return 0


def _reachable(address: str, timeout_s: float = 3.0) -> bool:
    """Whether ``HOST:PORT`` accepts a TCP connection (Ray's own connect retries for minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--address must be HOST:PORT or 'auto', got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def _use_local_token(address: str) -> None:
    """Send this node's Ray auth token (``~/.ray/auth_token``) to an explicit address too.

    Ray >= 2.5x enables token authentication on clusters started where a token exists, but a driver
    given an explicit address only sends the token when ``RAY_AUTH_MODE=token``; ``ray start`` and
    ``address="auto"`` already do this themselves. Uses Ray's own helper when present.
    """
    if address == "auto" or "RAY_AUTH_MODE" in os.environ:
        return
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # older Ray: no token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _stop(args: argparse.Namespace) -> int:
    return subprocess.call(_ray_argv(["ray", "stop"]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archer cluster", description="start, join and inspect a Ray cluster")
    sub = p.add_subparsers(dest="action", required=True)

    def node_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--num-cpus", type=int, default=None, help="CPUs this node offers (default: all)")
        sp.add_argument("--num-gpus", type=int, default=None, help="GPUs this node offers (default: all)")
        sp.add_argument(
            "--resources",
            default=None,
            help="custom resources as JSON, e.g. '{\"gen\": 1}': the node labels resources.placement names",
        )
        sp.add_argument("--config", default=None, help="YAML recipe whose nccl section sets the NCCL env")
        sp.add_argument(
            "--nccl",
            action="append",
            metavar="KEY=VALUE",
            help="NCCL setting override, e.g. NCCL_DEBUG=INFO or socket_ifname=eth0",
        )
        sp.add_argument("--block", action="store_true", help="stay in the foreground; Ctrl-C ends the node")
        sp.add_argument("--print-only", action="store_true", help="print the commands, run nothing")

    start = sub.add_parser("start", help="start the head node, or every host of a hostfile")
    start.add_argument("--head", action="store_true", help="start the head node on this machine")
    start.add_argument("--hostfile", default=None, help="one host per line, the first is the head")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help="head node port (GCS)")
    start.add_argument("--temp-dir", default=None, help="Ray's session directory (head only)")
    start.add_argument("--dashboard", action="store_true", help="start the Ray dashboard too")
    node_flags(start)
    join = sub.add_parser("join", help="join this machine to a running cluster")
    join.add_argument("address", help="HEAD_HOST:PORT of the head node")
    node_flags(join)
    status = sub.add_parser("status", help="nodes and free resources of a running cluster")
    status.add_argument(
        "--address", default="auto", help="HEAD_HOST:PORT (default: the cluster on this node)"
    )
    sub.add_parser("stop", help="`ray stop`: end every Ray process on this node")
    return p


ACTIONS = {"start": _start, "join": _join, "status": _status, "stop": _stop}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 0 < getattr(args, "port", DEFAULT_PORT) < 65536:
        print(f"archer cluster: --port must be in 1..65535, got {args.port}", file=sys.stderr)
        return 2
    try:
        return ACTIONS[args.action](args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"archer cluster {args.action}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
