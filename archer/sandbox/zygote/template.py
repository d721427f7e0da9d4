"""The run template: a clean copy of the zygote that forks every run child and holds no run's data.

Loaded by path inside the sandbox zygote (standard library only). The zygote (pid 1 of the sandbox's
pid namespace) talks to the trainer and so holds programs, test inputs, test code and captured
outputs in its memory. A child forked from it would inherit all of that, and a program that scans
its own address space could find an earlier run's output (another sample's correct answer). So the
zygote forks this *template* once, before its first request, and never forks a run child itself:
it asks the template, over a ``SOCK_SEQPACKET`` socket, to fork one, passing the child's file
descriptors (SCM_RIGHTS) and only control values (role, limits, work directory). The program, its
inputs or the test code reach the child afterwards, in a memfd read by the child once it is
isolated. The template never receives or produces run data, so the memory every run inherits is the
same clean image for the zygote's whole life.

Messages (JSON, one per packet). Zygote -> template: ``{"op": "fork", "id", "role", "targets",
"workdir", "memory_mb", "cpu_s", "report"}`` with one descriptor per target fd number (no answer;
with ``report`` the template sends ``{"exit": id, "status"}`` when that child ends, status
``FORK_FAILED`` if it could not be forked); ``{"op": "kill"}`` (SIGKILL every run process, reap
them), answered ``{"killed": true}``.

The template is the run processes' parent and subreaper; from it ``kill(-1)`` reaches every process
of the pid namespace except pid 1 (the zygote) and itself. It dies with the zygote (PDEATHSIG) and
the zygote exits when the template is gone (a later template could only be forked from memory that
has seen requests).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
from typing import Any

DATA_FD = 9  # in a run child: the memfd holding {"fn", "args"} for the harness
FORK_FAILED = 71  # exit status reported for a child the template could not fork (EAGAIN, ENOMEM)
MAX_FDS = 8
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36


def start(
    isolation: Any, harness: Any, loads: Any, report: dict[str, Any], close: list[int]
) -> tuple[int, Any]:
    """Fork the template (in the zygote, before any request); returns (its pid, the zygote's socket)."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            mine.close()
            for fd in close:  # the trainer's pipes: only the zygote may hold them
                os.close(fd)
            libc = isolation._libc()
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != zygote:
                os._exit(0)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
            Template(isolation, harness, loads, report, theirs).loop()
            code = 0
        finally:
            os._exit(code)
    theirs.close()
    return pid, mine


class Template:
    def __init__(self, isolation: Any, harness: Any, loads: Any, report: dict[str, Any], sock: Any) -> None:
        self.isolation, self.harness, self.loads, self.report, self.sock = (
            isolation,
            harness,
            loads,
            report,
            sock,
        )
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (pidfd, id) of children whose exit is awaited
        self.others: list[int] = []  # pids of the other children (reaped by the next kill)

    def send(self, msg: dict[str, Any]) -> None:
        self.sock.send(json.dumps(msg).encode())

    def loop(self) -> None:
        while True:
            pidfds = [pidfd for pidfd, _ in self.children.values()]
            ready, _, _ = select.select([self.sock, *pidfds], [], [])
            for pid, (pidfd, run_id) in list(self.children.items()):
                if pidfd in ready:
                    _, raw = os.waitpid(pid, 0)
                    os.close(pidfd)
                    del self.children[pid]
                    self.send({"exit": run_id, "status": os.waitstatus_to_exitcode(raw)})
            if self.sock not in ready:
                continue
            msg, fds, _, _ = socket.recv_fds(self.sock, 1 << 16, MAX_FDS)
            if not msg:
                return  # the zygote is gone
            op = json.loads(msg)
            if op["op"] == "fork":
                try:
                    pid = self.fork(op, dict(zip(op["targets"], fds)))
                except OSError:  # no task or memory left in the slot's cgroup: the run's doing
                    pid = None
                for fd in fds:
                    os.close(fd)
                if pid is None:
                    if op.get("report"):
                        self.send({"exit": op["id"], "status": FORK_FAILED})
                elif op.get("report"):
                    self.children[pid] = (os.pidfd_open(pid), op["id"])
                else:
                    self.others.append(pid)
            elif op["op"] == "kill":
                self.isolation.kill_tree(self.report, [*self.children, *self.others])
                for pidfd, _ in self.children.values():
                    os.close(pidfd)
                self.children.clear()
                self.others.clear()
                self.send({"killed": True})

    def fork(self, op: dict[str, Any], fds: dict[int, int]) -> int:
        pid = os.fork()
        if pid:
            return pid
        try:  # the run child: isolate first, then read what to run
            self.isolation.enter_child(
                self.report, op["role"], fds, op["workdir"], int(op["memory_mb"]), float(op["cpu_s"])
            )
        except BaseException as exc:  # never run the program half-isolated
            try:
                os.write(2, f"sandbox: setting up the run failed: {exc!r}\n".encode())
            finally:
                os._exit(70)
        try:
            chunks = []
            while chunk := os.read(DATA_FD, 1 << 20):
                chunks.append(chunk)
            os.close(DATA_FD)
            call = json.loads(b"".join(chunks))
            fn, args = call["fn"], call["args"]
            h = self.harness
            if fn == "judge":
                tests, setup, entry = args
                h.judge(tests.encode(), setup, entry, 3, 4, 5, self.loads)
            else:
                {
                    "stdin_child": h.stdin_child,
                    "call_child": h.call_child,
                    "program_server": h.program_server,
                }[fn](*args)
        except BaseException:
            os._exit(70)
        os._exit(0)
