"""The sandbox zygote: a pre-warmed interpreter that runs one unprivileged child per program run.

Started by ``archer.sandbox.pool`` as ``[unshare ...] python -I worker.py CONFIG_JSON``;
it speaks length-prefixed JSON frames on stdin/stdout and imports only the standard library (plus
``harness.py``, ``isolation.py``, ``template.py`` and
``archer/sandbox/zygote/safe_pickle.py`` loaded by path).
It holds the common imports, so a run costs a ``fork`` instead of an interpreter start. The zygote
never forks a run child itself: a clean copy forked before its first request (the run template,
``template.py``) does, and the program or test code reaches the child in a memfd, so nothing
of an earlier request is in the memory a run inherits.

Protocol, per request: the trainer sends part A (program, test inputs, limits: never expected
outputs), then for assert-style tests part B (the test code, which only the judge process receives).
For each test the zygote sends ``{"event": "test", "i", "status", ...}`` and waits for
``{"continue": bool}``: the trainer compares, and stops the run at the first failure when it wants
to. The run ends with ``{"event": "done"}``.

After every child the whole process tree is killed: the template sends SIGKILL to every other
process of the pid namespace but the zygote (setsid/double-fork escapes included; it is their
subreaper, so it reaps them); without a pid namespace, helpers holding the sandbox uids do
the same with ``kill(-1)``; without either, only the children's process groups are killed (see
``sandbox_isolation.kill_tree``). Then the run's files are removed; if that fails the zygote exits
and the trainer starts a fresh one rather than run anything on a dirty work directory. With a cgroup,
the next run starts only once the slot holds no process of the last one and its memory charge is
back near the idle level (:meth:`Zygote.settle`).

The control socket to the template is authenticated by position and nonce (``template.py``): no
run child holds it, every answer must carry the nonce of the message it answers, and anything
unexpected on it raises :class:`TemplateBroken`, which ends the zygote (never a half-trusted state).
"""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import socket
import sys
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATE_TIMEOUT = 60.0  # the template answers at once; this only catches one that hangs
SETTLE_S = 3.0  # the longest a slot waits for the previous run's processes and memory to be gone
SETTLE_SLACK = 16 << 20  # charge above the idle level a next run may start with (page cache, stock)
IDLE_TASKS = 2  # the zygote and its run template
CALL_STATUSES = ("ok", "error", "memory")  # what a call-mode child's frame may claim


def _load(name: str, path: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


harness = _load("archer_sandbox_harness", os.path.join(_HERE, "harness.py"))
template = _load("archer_sandbox_template", os.path.join(_HERE, "template.py"))
isolation = _load("archer_sandbox_isolation", os.path.join(_HERE, "isolation.py"))
safe_pickle = _load("archer_safe_pickle", os.path.join(_HERE, "safe_pickle.py"))

# what competitive-programming and HumanEval solutions usually import; loaded once, shared by fork.
# Not `threading` (nor `queue`, which imports it): its at-fork hook makes every fork several times
# slower, and most programs never use it.
PRELOAD = (
    "array bisect collections copy dataclasses datetime decimal enum fractions functools hashlib "
    "heapq io itertools json math numbers operator random re statistics string sys "
    "textwrap typing unicodedata cmath inspect traceback ast pickle"
).split()


class FrameReader:
    """Non-blocking reader of length-prefixed frames from an untrusted child."""

    def __init__(self, fd: int, max_bytes: int) -> None:
        self.fd, self.max_bytes, self.buf, self.eof = fd, max_bytes, bytearray(), False

    def feed(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.eof = True
        self.buf += chunk
        if len(self.buf) > self.max_bytes + 4:
            self.eof = True  # flooding the result pipe: treat as a broken child

    def frames(self) -> list[dict[str, Any]]:
        out = []
        while len(self.buf) >= 4:
            n = int.from_bytes(self.buf[:4], "big")
            if n > self.max_bytes:
                self.eof, self.buf = True, bytearray()
                break
            if len(self.buf) < 4 + n:
                break
            raw, self.buf = bytes(self.buf[4 : 4 + n]), self.buf[4 + n :]
            try:
                msg = json.loads(raw)
            except Exception:  # malformed, or nested deeper than the parser's recursion limit
                continue
            if isinstance(msg, dict) and isinstance(msg.get("i"), int) and isinstance(msg.get("status"), str):
                out.append(msg)
        return out


class TemplateBroken(RuntimeError):
    """The run template died, hung or sent something it would never send: the zygote must end."""


class Zygote:
    """The long-lived process: holds the imports, the jail and the protocol; runs one request at a time.

    It never forks a run child itself: the run template (``template.py``), forked once before
    the first request, does, so no child inherits memory that has seen a request.
    """

    def __init__(self, cfg: dict[str, Any], proto_in: int, proto_out: int) -> None:
        self.cfg, self.proto_in, self.proto_out = cfg, proto_in, proto_out
        self.report = isolation.setup(cfg)
        self.runs = 0
        self.pending_b = 0  # bytes of part B announced but not read yet
        self.oom_before = 0
        self.exits: dict[int, int] = {}  # exit statuses the template reported, by run child id
        self.pending: dict[int, bytes] = {}  # run child id -> nonce its exit report must carry
        self.awaiting: dict[str, bytes] = {}  # answer awaited ("killed") -> nonce it must carry
        self.template_pid, self.ctl = template.start(
            isolation, harness, safe_pickle.restricted_loads, self.report, [proto_in, proto_out]
        )
        if self.report["cgroup"]:  # the OOM kills counted so far; each run compares against it
            self.oom_before = isolation.cgroup.oom_kills(self.report["cgroup_dirs"])
        # what the slot holds with no run in it (zygote + template); a run is handed the slot only
        # once the previous run's charge is back near it (see settle)
        self.idle_memory = (
            isolation.cgroup.usage(self.report["cgroup_dirs"])[0] if self.report["cgroup"] else None
        )

    # ------------------------------------------------------------------ protocol

    def send(self, msg: dict[str, Any]) -> None:
        harness.send_frame(self.proto_out, json.dumps(msg).encode())

    def recv(self) -> dict[str, Any] | None:
        raw = harness.recv_frame(self.proto_in, 1 << 30)
        return None if raw is None else json.loads(raw)

    def read_part_b(self, n: int) -> bytearray:
        """Read ``n`` raw bytes of part B (the test code)."""
        blob = bytearray(n)
        view, got = memoryview(blob), 0
        while got < n:
            k = os.readv(self.proto_in, [view[got:]])
            if k == 0:
                sys.exit(0)
            got += k
        view.release()
        return blob

    def event(self, i: int, status: str, **extra: Any) -> bool:
        """Report one test and wait for the trainer's go-ahead."""
        self.send({"event": "test", "i": i, "status": status, **extra})
        reply = self.recv()
        if reply is None:
            sys.exit(0)
        return bool(reply.get("continue", False))

    def serve(self) -> None:
        self.send({"event": "hello", "isolation": isolation.public(self.report)})
        while True:
            req = self.recv()
            if req is None:
                if not self.report["chroot"]:  # a host temp dir, not a private tmpfs
                    try:
                        isolation.remove_tree_contents(self.report["work_root"])
                        os.rmdir(self.report["work_root"])
                    except OSError:
                        pass
                return
            if not self.serve_one(req):
                sys.exit(1)  # the trainer sees EOF and starts a fresh zygote

    def serve_one(self, req: dict[str, Any]) -> bool:
        """Run one request and report it; False if the zygote must not serve another one."""
        mode = req.get("mode")
        handler = {"stdin": self.run_stdin, "call": self.run_call, "assert": self.run_assert}.get(mode)
        if handler is None:
            self.send({"event": "done", "error": f"unknown mode {mode!r}"})
            return True
        deadline = time.monotonic() + float(req.get("budget") or 1e9)
        self.pending_b = int(req.get("part_b_len") or 0)
        try:
            if self.report["cgroup"]:
                isolation.cgroup.set_limits(
                    self.report["cgroup_dirs"],
                    int(req.get("memory_mb", 1024)) << 20,
                    self.report["limits"]["tasks"],
                    self.report["limits"]["cpus"],
                )
            handler(req, deadline)
        except Exception as exc:  # a harness failure ends this request, not the zygote
            healthy = not isinstance(exc, TemplateBroken)  # never talk to that template again
            try:
                if healthy:
                    self.cleanup([])
            except Exception:
                healthy = False  # left dirty (or the template is gone): a fresh zygote is needed
            if self.pending_b:  # keep the protocol in step: discard the unread test code
                self.read_part_b(self.pending_b)
            self.send({"event": "done", "error": f"zygote: {type(exc).__name__}: {exc}"})
            return healthy
        self.send({"event": "done"})
        return True

    # ---------------------------------------------------------------- template

    def control(self, msg: dict[str, Any], want: str) -> dict[str, Any]:
        """Send one message to the template and return its answer holding ``want``."""
        nonce = os.urandom(template.NONCE_BYTES)
        self.awaiting[want] = nonce
        self.ctl.send(nonce + json.dumps(msg).encode())
        while want in self.awaiting:
            reply = self.control_event(TEMPLATE_TIMEOUT)
            if want in reply:
                return reply
        raise TemplateBroken(f"no {want!r} answer")

    def control_event(self, timeout: float) -> dict[str, Any]:
        """The template's next message; exit reports are recorded on the way.

        Authenticated by position and nonce: a message must be an answer the zygote is waiting for,
        carrying the nonce it drew for that message. Anything else raises :class:`TemplateBroken`."""
        ready, _, _ = select.select([self.ctl], [], [], timeout)
        raw = self.ctl.recv(template.MAX_PACKET) if ready else b""
        if not raw:
            raise TemplateBroken("the run template died or hung")
        nonce, body = raw[: template.NONCE_BYTES], raw[template.NONCE_BYTES :]
        try:
            msg = json.loads(body)
        except (ValueError, RecursionError):
            raise TemplateBroken("malformed message from the run template") from None
        if not isinstance(msg, dict):
            raise TemplateBroken("malformed message from the run template")
        if set(msg) == {"exit", "status"} and type(msg["exit"]) is int and type(msg["status"]) is int:
            if self.pending.get(msg["exit"]) != nonce:
                raise TemplateBroken("exit report for no awaited run, or with the wrong nonce")
            del self.pending[msg["exit"]]
            self.exits[msg["exit"]] = msg["status"]
            return msg
        if msg == {"killed": True} and self.awaiting.get("killed") == nonce:
            del self.awaiting["killed"]
            return msg
        raise TemplateBroken("unexpected message from the run template")

    # ---------------------------------------------------------------- children

    def fork(
        self,
        role: str,
        req: dict[str, Any],
        fds: dict[int, int],
        call: tuple[str, list[Any]],
        cpu_s: float,
        report: bool = True,
    ) -> int:
        """Ask the template for a run child: new session, rlimits, dropped uid, private cwd, only
        ``fds`` left open; it then runs ``harness.<call[0]>(*call[1])``, read from a memfd. Returns
        the child's id for :meth:`wait_child` (its exit is reported only if ``report``)."""
        self.runs += 1
        workdir = isolation.make_workdir(self.report, self.runs, role)
        data = os.memfd_create("run")
        try:
            harness.write_all(data, json.dumps({"fn": call[0], "args": call[1]}).encode())
            os.lseek(data, 0, os.SEEK_SET)
            targets = {**fds, template.DATA_FD: data}
            msg = {
                "op": "fork",
                "id": self.runs,
                "role": role,
                "targets": list(targets),
                "workdir": workdir,
                "memory_mb": int(req.get("memory_mb", 1024)),
                "cpu_s": float(cpu_s),
                "report": report,
            }
            nonce = os.urandom(template.NONCE_BYTES)
            if report:
                self.pending[self.runs] = nonce
            socket.send_fds(self.ctl, [nonce + json.dumps(msg).encode()], list(targets.values()))
        finally:
            os.close(data)
        return self.runs

    def cleanup(self, ids: list[int]) -> bool:
        """Kill the run's processes and remove its files; True if the cgroup OOM-killed one of them."""
        self.control({"op": "kill"}, want="killed")
        self.exits.clear()
        self.pending.clear()  # the template reaped them without reporting
        isolation.remove_workdirs(self.report)
        if os.listdir(self.report["work_root"]):  # never start the next run on a dirty work root
            raise RuntimeError("the run's files could not be removed")
        if not self.report["cgroup"]:
            return False
        self.settle()
        before, self.oom_before = self.oom_before, isolation.cgroup.oom_kills(self.report["cgroup_dirs"])
        return self.oom_before > before

    def settle(self) -> bool:
        """Wait (at most SETTLE_S) until the slot holds no process of the last run and its memory is
        back within SETTLE_SLACK of the idle level. A dead run's SysV segments and IPC namespace are
        freed asynchronously by the kernel, still charged to the slot meanwhile: the next run would
        otherwise start with part of its memory limit taken. True if it settled in time; if not,
        the current level becomes the idle one (the zygote's own memory may have grown), so a
        lasting charge costs one wait, not one per run."""
        dirs = self.report["cgroup_dirs"]
        deadline = time.monotonic() + SETTLE_S
        pause = 0.001
        while True:
            mem, tasks = isolation.cgroup.usage(dirs)
            quiet_tasks = tasks is None or tasks <= IDLE_TASKS
            if mem is None or self.idle_memory is None:
                quiet_mem = True
            else:
                quiet_mem = mem <= self.idle_memory + SETTLE_SLACK
            if quiet_tasks and quiet_mem:
                if mem is not None and self.idle_memory is not None:
                    self.idle_memory = min(self.idle_memory, mem)
                return True
            if time.monotonic() >= deadline:
                if mem is not None:
                    self.idle_memory = max(self.idle_memory or 0, mem - SETTLE_SLACK)
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.02)

    def wait_child(
        self, run_id: int, readers: dict[int, Any], deadline: float, on_frame: Any = None, max_output: int = 0
    ) -> tuple[str | None, int | None]:
        """Pump the child's pipes until it exits or the deadline passes.

        ``readers`` maps fd -> bytearray (raw capture) or FrameReader. ``on_frame`` gets each frame and
        returns the new deadline (or None to stop). Returns (limit_status or None, exit status or None).
        """
        for fd in readers:
            os.set_blocking(fd, False)
        status: int | None = self.exits.get(run_id)
        open_fds = set(readers)
        ctl = self.ctl.fileno()
        # drain what the pipes already hold, without waiting for grandchildren that keep them open
        drain_until = time.monotonic() + 0.05 if status is not None else 0.0
        while True:
            now = time.monotonic()
            if status is not None and (not open_fds or now >= drain_until):
                return None, status
            if now >= deadline and status is None:
                return "timeout", None
            watch = list(open_fds) + ([ctl] if status is None else [])
            wait = (drain_until if status is not None else deadline) - now
            ready, _, _ = select.select(watch, [], [], max(0.0, min(wait, 1.0)))
            for fd in ready:
                if fd == ctl:
                    self.control_event(TEMPLATE_TIMEOUT)
                    if run_id in self.exits:
                        status = self.exits[run_id]
                        drain_until = time.monotonic() + 0.05
                    continue
                sink = readers[fd]
                if isinstance(sink, FrameReader):
                    sink.feed()
                    for frame in sink.frames():
                        deadline = on_frame(frame)
                        if deadline is None:
                            return "stopped", None
                    if sink.eof:
                        open_fds.discard(fd)
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    open_fds.discard(fd)
                sink += chunk
                if max_output and len(sink) > max_output:
                    return "output_limit", None

    @staticmethod
    def classify(limit: str | None, code: int | None, oom: bool = False) -> str:
        if oom:
            return "memory"
        if limit is not None:
            return limit
        if code == 0:
            return "ok"
        if code == harness.EXIT_MEMORY:
            return "memory"
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            return "timeout"
        return "error"

    # ------------------------------------------------------------------- modes

    def run_stdin(self, req: dict[str, Any], budget_deadline: float) -> None:
        program, timeout = req["program"], float(req["timeout"])
        max_output = int(req.get("max_output", 1 << 22))
        for i, text in enumerate(req["inputs"]):
            in_fd = os.memfd_create("stdin")
            harness.write_all(in_fd, text.encode())
            os.lseek(in_fd, 0, os.SEEK_SET)
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            start = time.monotonic()
            pid = self.fork("prog", req, {0: in_fd, 1: out_w, 2: err_w}, ("stdin_child", [program]), timeout)
            for fd in (in_fd, out_w, err_w):
                os.close(fd)
            out, err = bytearray(), bytearray()
            deadline = min(start + timeout, budget_deadline)
            limit, code = self.wait_child(pid, {out_r: out, err_r: err}, deadline, max_output=max_output)
            elapsed = time.monotonic() - start
            oom = self.cleanup([pid])
            os.close(out_r)
            os.close(err_r)
            status = self.classify(limit, code, oom)
            more = self.event(
                i,
                status,
                stdout=out.decode("utf-8", "replace"),
                stderr=err[-2000:].decode("utf-8", "replace"),
                time=round(elapsed, 4),
            )
            if not more or time.monotonic() >= budget_deadline:
                return

    def run_call(self, req: dict[str, Any], budget_deadline: float) -> None:
        program, timeout, fn_name, inputs = (
            req["program"],
            float(req["timeout"]),
            req["fn_name"],
            req["inputs"],
        )
        bad_inputs = {i for i, text in enumerate(inputs) if not _json_lines(text)}
        start = 0
        while start < len(inputs):
            res_r, res_w = os.pipe()
            cpu = timeout * (len(inputs) - start) + 1
            first = start
            pid = self.fork(
                "prog", req, {3: res_w}, ("call_child", [program, fn_name, inputs, first, 3]), cpu
            )
            os.close(res_w)
            reader = FrameReader(res_r, int(req.get("max_output", 1 << 22)))
            state = {"next": start, "stop": False}

            def on_frame(frame: dict[str, Any], state: dict[str, Any] = state) -> float | None:
                i = frame["i"]
                if i != state["next"]:
                    return None  # out of order: forged by the program; the run is broken
                state["next"] = i + 1
                result = frame.get("result") if isinstance(frame.get("result"), str) else None
                # the frame comes from the program's own process: it may only say ok (with a result
                # the trainer compares), error or memory; a broken test input is the zygote's call
                status = frame["status"] if frame["status"] in CALL_STATUSES else "error"
                if status == "ok" and result is None:
                    status = "error"
                if i in bad_inputs:
                    status = "sandbox_error"
                exact = frame.get("exact") if isinstance(frame.get("exact"), str) else None
                if not self.event(i, status, result=result, detail=str(frame.get("detail", "")), exact=exact):
                    state["stop"] = True
                    return None
                return min(time.monotonic() + timeout, budget_deadline)

            limit, code = self.wait_child(
                pid, {res_r: reader}, min(time.monotonic() + timeout, budget_deadline), on_frame=on_frame
            )
            oom = self.cleanup([pid])
            os.close(res_r)
            if state["stop"]:
                return
            pending = state["next"]
            if pending >= len(inputs):
                return
            status = "error" if limit == "stopped" and not oom else self.classify(limit, code, oom)
            if status == "ok":
                status = "error"  # exited without answering every test
            if not self.event(pending, status, result=None, detail="the program stopped before this test"):
                return
            if time.monotonic() >= budget_deadline:
                return
            start = pending + 1

    def run_assert(self, req: dict[str, Any], budget_deadline: float) -> None:
        program, timeout, n_tests = req["program"], float(req["timeout"]), int(req["n_tests"])
        j2p_r, j2p_w = os.pipe()
        p2j_r, p2j_w = os.pipe()
        ver_r, ver_w = os.pipe()
        # the judge first: a program that fills its cgroup's task or memory limit at once cannot keep
        # it from starting (no child ever inherits this process's memory, so the order leaks nothing)
        blob = self.read_part_b(int(req["part_b_len"]))
        self.pending_b = 0
        entry, setup = req.get("entry_point"), str(req.get("setup") or "")
        judge = self.fork(
            "judge",
            req,
            {3: j2p_w, 4: p2j_r, 5: ver_w},
            ("judge", [blob.decode("utf-8", "replace"), setup, entry]),
            timeout * n_tests + 1,
        )
        self.fork(
            "prog",
            req,
            {3: j2p_r, 4: p2j_w},
            ("program_server", [program, 3, 4]),
            timeout * n_tests + 1,
            report=False,
        )
        for fd in (j2p_r, j2p_w, p2j_r, p2j_w, ver_w):
            os.close(fd)
        reader = FrameReader(ver_r, 1 << 20)
        state = {"next": 0, "stop": False}

        def on_frame(frame: dict[str, Any]) -> float | None:
            i = frame["i"]
            if i != state["next"]:
                return None
            state["next"] = i + 1
            if not self.event(i, frame["status"], detail=str(frame.get("detail", ""))):
                state["stop"] = True
                return None
            if state["next"] >= n_tests:
                return None
            return min(time.monotonic() + timeout, budget_deadline)

        limit, code = self.wait_child(
            judge, {ver_r: reader}, min(time.monotonic() + timeout, budget_deadline), on_frame=on_frame
        )
        oom = self.cleanup([judge])
        os.close(ver_r)
        if state["stop"] or state["next"] >= n_tests:
            return
        status = "memory" if oom else "timeout" if limit == "timeout" else "error"
        self.event(state["next"], status, detail="the judge stopped before this test")


def _json_lines(text: Any) -> bool:
    """Whether a call-mode test input parses (one JSON value per non-blank line), as the child will."""
    if not isinstance(text, str):
        return False
    try:
        harness._parse_args(text)
    except (ValueError, RecursionError):
        return False
    return True


def _add_site_packages() -> None:
    """Started with -S (no .pth side effects, which import threading): make site-packages importable."""
    import site

    sys.path.extend(p for p in site.getsitepackages() if os.path.isdir(p) and p not in sys.path)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    _add_site_packages()
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(devnull, fd)
    if not cfg.get("debug"):
        os.dup2(devnull, 2)
    os.close(devnull)
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    Zygote(cfg, proto_in, proto_out).serve()


if __name__ == "__main__":
    main()
