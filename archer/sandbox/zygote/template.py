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

Messages (one per packet: 16 bytes of nonce, then JSON). Zygote -> template: ``{"op": "fork", "id",
"role", "targets", "workdir", "memory_mb", "cpu_s", "report"}`` with one descriptor per target fd
number (no answer; with ``report`` the template sends ``{"exit": id, "status"}`` when that child
ends, status ``FORK_FAILED`` if it could not be forked); ``{"op": "kill"}`` (SIGKILL every run
process, reap them), answered ``{"killed": true}``. Every answer carries the nonce of the message it
answers; the zygote draws a fresh one per message and accepts an answer only with the nonce it is
waiting for, and anything else on the socket (malformed, unexpected, wrong nonce) means the template
is no longer trustworthy: the zygote ends (the trainer starts a fresh one). The template keeps each
nonce in a bytearray of its own and a forked child wipes them before anything else, so no run
process holds one. The socket itself is not among the descriptors a run child keeps
(``isolation.keep_only``).

The template is the run processes' parent and subreaper; from it ``kill(-1)`` reaches every process
of the pid namespace except pid 1 (the zygote) and itself. It dies with the zygote (PDEATHSIG) and
the zygote exits when the template is gone (a later template could only be forked from memory that
has seen requests).
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
from typing import Any

DATA_FD = 9  # in a run child: the memfd holding {"fn", "args"} for the harness
FORK_FAILED = 71  # exit status reported for a child the template could not fork (EAGAIN, ENOMEM)
MAX_FDS = 8
MAX_PACKET = 1 << 16
NONCE_BYTES = 16  # leads every packet both ways: the zygote's fresh random value for that message
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
        # pid -> (pidfd, id, nonce) of children whose exit is awaited; a nonce lives only in its own
        # bytearray (received in place, sent with sendmsg), so a forked child can wipe every copy
        self.children: dict[int, tuple[int, int, bytearray]] = {}
        self.others: list[int] = []  # pids of the other children (reaped by the next kill)
        self.rbuf = bytearray(MAX_PACKET)

    def send(self, nonce: bytearray, msg: dict[str, Any]) -> None:
        self.sock.sendmsg([nonce, json.dumps(msg).encode()])

    def recv(self) -> tuple[bytearray, dict[str, Any], list[int]] | None:
        """The zygote's next message: (its nonce, the JSON body, descriptors); None at EOF."""
        n, anc, flags, _ = self.sock.recvmsg_into([self.rbuf], socket.CMSG_SPACE(MAX_FDS * 4))
        fds: list[int] = []
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds += array.array("i", data[: len(data) - len(data) % 4]).tolist()
        if not n:
            return None
        nonce = bytearray(NONCE_BYTES)
        view = memoryview(self.rbuf)
        nonce[:] = view[:NONCE_BYTES]
        self.rbuf[:NONCE_BYTES] = bytes(NONCE_BYTES)
        body = json.loads(bytes(view[NONCE_BYTES:n]))
        view.release()
        return nonce, body, fds

    def loop(self) -> None:
        while True:
            pidfds = [pidfd for pidfd, _, _ in self.children.values()]
            ready, _, _ = select.select([self.sock, *pidfds], [], [])
            for pid, (pidfd, run_id, nonce) in list(self.children.items()):
                if pidfd in ready:
                    _, raw = os.waitpid(pid, 0)
                    os.close(pidfd)
                    del self.children[pid]
                    self.send(nonce, {"exit": run_id, "status": os.waitstatus_to_exitcode(raw)})
            if self.sock not in ready:
                continue
            got = self.recv()
            if got is None:
                return  # the zygote is gone
            nonce, op, fds = got
            if op["op"] == "fork":
                try:
                    pid = self.fork(op, dict(zip(op["targets"], fds)), nonce)
                except OSError:  # no task or memory left in the slot's cgroup: the run's doing
                    pid = None
                for fd in fds:
                    os.close(fd)
                if pid is None:
                    if op.get("report"):
                        self.send(nonce, {"exit": op["id"], "status": FORK_FAILED})
                elif op.get("report"):
                    self.children[pid] = (os.pidfd_open(pid), op["id"], nonce)
                else:
                    self.others.append(pid)
            elif op["op"] == "kill":
                self.isolation.kill_tree(self.report, [*self.children, *self.others])
                for pidfd, _, _ in self.children.values():
                    os.close(pidfd)
                self.children.clear()
                self.others.clear()
                self.send(nonce, {"killed": True})

    def fork(self, op: dict[str, Any], fds: dict[int, int], nonce: bytearray) -> int:
        pid = os.fork()
        if pid:
            return pid
        # the run child: wipe every nonce it inherited (its own and those of running siblings), so
        # nothing it runs can sign a report even if it reached the control socket
        for buf in [nonce, *(n for _, _, n in self.children.values())]:
            buf[:] = bytes(len(buf))
        try:  # isolate first, then read what to run
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
