"""Code that runs inside sandboxed child processes: the untrusted program and the assert judge.

This file is loaded by the zygote (``worker.py``) by path, never by the trainer; it uses only
the standard library. Each function here runs in a freshly forked child that has already dropped to
an unprivileged uid, set its rlimits and closed every file descriptor except the numbered ones below.

Three roles:

- :func:`stdin_child`: runs the program as ``__main__`` with stdin = the test input; the zygote
  captures stdout, the trainer compares it. Early ``sys.exit(0)`` only stops the output.
- :func:`call_child`: LiveCodeBench's functional convention. Runs the program once, then for each
  test parses the input (one JSON value per line = the arguments), calls ``Solution().<fn_name>`` or
  the top-level ``<fn_name>``, and sends the JSON-serialised return value on fd 3. Expected outputs
  are never in this process; the trainer compares.
- :func:`program_server` + :func:`judge`: assert-style tests (HumanEval ``check(candidate)``, MBPP
  assert lists) run in two processes with different uids. The judge executes the (trusted) test code
  against the real builtins and never sees the program's source: only the entry point (given, or
  the one function the tests use and do not define: :func:`program_names`) comes from the
  program, as a proxy that sends the pickled arguments to the program process and gets back a
  return value, accepted only if it is plain builtin data (decoded by the restricted unpickler).
  Helpers the tests need besides the entry point (HumanEval's ``poly``, ``encode_cyclic``) come from
  trusted ``setup`` code (the HumanEval prompt), never from the program; standard modules a test
  uses without importing them are imported for real. So the program can't rebind a name the test
  uses, can't see the test's frames or constants, can't return an object whose ``__eq__`` lies, and
  exiting early just breaks the connection. The judge alone writes the verdicts, on an fd the
  program process never holds, so nothing the program does can forge a completion.

Limits: a test that relies on the candidate mutating its arguments in place, that uses a class the
program defines, or that reads a program global other than a function, fails under the proxy
(values cross a process boundary by copy); so does a test calling a helper of the program that is
neither the entry point nor in ``setup``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import os
import pickle
import struct
import sys
import traceback
import types
from typing import Any

EXIT_MEMORY = 3  # exit status that tells the zygote the program hit MemoryError
MAX_FRAME = 64 << 20
_HEADER = struct.Struct(">I")
_PLAIN_SCALARS = (int, float, complex, str, bytes, bool, type(None))
_PLAIN_CONTAINERS = (list, tuple, set, frozenset, dict)
# exceptions that are control flow to the code around a call, not failures of the call
ITERATION_PROTOCOL = (StopIteration, StopAsyncIteration)


# --------------------------------------------------------------------------- framing


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def send_frame(fd: int, payload: bytes) -> None:
    write_all(fd, _HEADER.pack(len(payload)) + payload)


def read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def recv_frame(fd: int, max_bytes: int = MAX_FRAME) -> bytes | None:
    head = read_exact(fd, _HEADER.size)
    if head is None:
        return None
    (n,) = _HEADER.unpack(head)
    if n > max_bytes:
        raise ValueError(f"frame of {n} bytes exceeds {max_bytes}")
    return read_exact(fd, n)


# ---------------------------------------------------------------------- program runs


def _fresh_globals() -> dict[str, Any]:
    return {"__name__": "__main__", "__builtins__": builtins, "__file__": "main.py"}


def _exit_status(exc: BaseException) -> int:
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code & 0xFF
        return 1
    if isinstance(exc, MemoryError):
        return EXIT_MEMORY
    return 1


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass


# written on stderr when the program ran to its end (returned or raised): a program that ends its own
# process (os._exit) never writes it. Only the LiveCodeBench-fidelity grader reads it (the official
# grader runs the program in its own process, which such a program kills): a convenience, not a
# security boundary, since forging it gains nothing a normal ending does not give.
FINISHED_MARK = "\n[archer: program finished]\n"


def stdin_child(program: str) -> None:
    """fd 0 = the test input, fd 1 = captured stdout, fd 2 = captured stderr (tail kept)."""
    status = 0
    try:
        exec(compile(program, "main.py", "exec"), _fresh_globals())
    except BaseException as exc:  # the program's own failure; report it by exit status
        status = _exit_status(exc)
        if not isinstance(exc, SystemExit):
            traceback.print_exc(limit=4)
    _flush_std()
    try:
        os.write(2, FINISHED_MARK.encode())
    except OSError:
        pass
    os._exit(status)


def _call_target(g: dict[str, Any], fn_name: str) -> Any:
    sol = g.get("Solution")
    if isinstance(sol, type) and hasattr(sol, fn_name):
        return getattr(sol(), fn_name)
    fn = g.get(fn_name)
    if not callable(fn):
        raise NameError(f"neither Solution.{fn_name} nor a function {fn_name} is defined")
    return fn


def _parse_args(text: str) -> list[Any]:
    return [json.loads(line) for line in text.split("\n") if line.strip()]


# LeetCode-style starter code uses List, Optional, deque, ... without importing them; LiveCodeBench
# prepends a header of star imports for the same reason (a shorter one here).
CALL_HEADER = (
    "from typing import *\nfrom collections import *\nfrom heapq import *\nfrom bisect import *\n"
    "from itertools import *\nfrom functools import *\nfrom math import *\n"
    "import math, heapq, bisect, itertools, functools, collections, string, re, sys\n"
    "sys.setrecursionlimit(50000)\n"
)


def call_child(program: str, fn_name: str, inputs: list[str], start: int, result_fd: int) -> None:
    """Runs tests ``start..`` of a call-based problem; one JSON frame per test on ``result_fd``."""

    def report(
        i: int, status: str, result: str | None = None, detail: str = "", exact: str | None = None
    ) -> None:
        msg = {"i": i, "status": status, "result": result, "detail": detail[-2000:], "exact": exact}
        send_frame(result_fd, json.dumps(msg).encode())

    try:
        g = _fresh_globals()
        exec(CALL_HEADER, g)
        exec(compile(program, "main.py", "exec"), g)
        target = _call_target(g, fn_name)
    except BaseException as exc:
        report(start, "memory" if isinstance(exc, MemoryError) else "error", detail=_describe(exc))
        os._exit(_exit_status(exc) or 1)
    for i in range(start, len(inputs)):
        try:
            args = _parse_args(inputs[i])
        except ValueError as exc:  # the zygote, not this process, labels it sandbox_error
            report(i, "error", detail=f"test input is not JSON lines: {exc}")
            continue
        try:
            value = target(*args)
            exact = _exact_json(value)
            if isinstance(value, tuple):
                value = list(value)
            encoded = json.dumps(value)
        except BaseException as exc:
            report(i, "memory" if isinstance(exc, MemoryError) else "error", detail=_describe(exc))
            if isinstance(exc, SystemExit):
                os._exit(1)
            continue
        report(i, "ok", result=encoded, exact=exact)
    _flush_std()
    os._exit(0)


def _tagged(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON data that keeps what JSON loses: tuples and dicts with non-string keys."""
    if depth > 100:
        raise ValueError("nested too deep")
    kind = type(value)
    if kind is tuple:
        return {"__tuple__": [_tagged(v, depth + 1) for v in value]}
    if kind is list:
        return [_tagged(v, depth + 1) for v in value]
    if kind is dict:
        if all(type(k) is str for k in value):
            return {k: _tagged(v, depth + 1) for k, v in value.items()}
        return {"__pairs__": [[_tagged(k, depth + 1), _tagged(v, depth + 1)] for k, v in value.items()]}
    return value


def _exact_json(value: Any) -> str | None:
    """The return value with its exact container types (for graders that tell a tuple from a list);
    None when it is not plain data."""
    try:
        return json.dumps(_tagged(value))
    except (TypeError, ValueError, RecursionError):
        return None


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]


# ------------------------------------------------------------------- assert-style tests


def is_plain(value: Any, depth: int = 0) -> bool:
    """Exactly builtin data (no subclasses, so no overridden ``__eq__``), nested at most 100 deep."""
    if depth > 100:
        return False
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind in (list, tuple, set, frozenset):
        return all(is_plain(v, depth + 1) for v in value)
    if kind is dict:
        return all(is_plain(k, depth + 1) and is_plain(v, depth + 1) for k, v in value.items())
    return False


def program_server(program: str, req_fd: int, resp_fd: int) -> None:
    """Loads the program, then answers ``(name, args, kwargs)`` calls from the judge until EOF."""
    try:
        g = _fresh_globals()
        exec(compile(program, "main.py", "exec"), g)
    except BaseException as exc:
        os._exit(_exit_status(exc) or 1)
    while True:
        frame = recv_frame(req_fd)
        if frame is None:
            os._exit(0)
        name, args, kwargs = pickle.loads(frame)
        try:
            if name not in g:
                raise NameError(f"name {name!r} is not defined")
            value = g[name](*args, **kwargs)
            if is_plain(value):
                reply = ("ok", value)
            else:
                reply = ("bad_type", type(value).__name__)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                os._exit(1)
            reply = ("exc", type(exc).__name__, str(exc)[:500])
        try:
            data = pickle.dumps(reply, protocol=4)
        except BaseException:
            data = pickle.dumps(("bad_type", "unpicklable"), protocol=4)
        send_frame(resp_fd, data)


_IMPORT_SIDE_EFFECTS = frozenset({"antigravity", "this", "idlelib", "turtledemo", "__hello__", "__phello__"})


def _bound_names(tree: ast.AST) -> set[str]:
    """Every name the code binds anywhere (assignment, def, class, import, argument, loop target)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            out.add(node.name)
    return out


def program_names(tests: list[str], setup: str, entry_point: str | None) -> tuple[list[str], list[str]]:
    """The name the (trusted) test code takes from the program, and stdlib modules it uses unimported.

    Exactly one name comes from the program: ``entry_point``, or without one the single free name
    of the tests (used but bound neither by the tests nor by ``setup``, not a builtin, not a
    standard-library module). Tests with several such names get none (they fail with a NameError:
    name the entry point, or put the helpers in ``setup``), so a program can never supply a helper
    the test trusts (``isclose``) next to the function under test. A free name that is a standard
    module is imported for real by the judge, as if the test had imported it.
    """
    used: set[str] = set()
    bound = _bound_names(ast.parse(setup)) if setup else set()
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        bound |= _bound_names(tree)
        used |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    free = used - bound - set(dir(builtins))
    modules = sorted(n for n in free if n in stdlib and n not in _IMPORT_SIDE_EFFECTS and n != entry_point)
    if entry_point:
        return [entry_point], modules
    candidates = sorted(n for n in free if n not in stdlib)
    return (candidates if len(candidates) == 1 else []), modules


def _module_names(codes: list[Any], entry_point: str) -> list[str]:
    """Standard modules whose names the compiled tests mention (as globals or attributes): a superset
    of those they use without importing. Importing one more real module is harmless; the tests' own
    assignments and imports still take precedence at run time."""
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    names: set[str] = set()
    stack = [c for c in codes if isinstance(c, types.CodeType)]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(k for k in code.co_consts if isinstance(k, types.CodeType))
    return sorted(n for n in names if n in stdlib and n not in _IMPORT_SIDE_EFFECTS and n != entry_point)


def _calls_check(test: str) -> bool:
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return True
    for node in tree.body:
        call = node.value if isinstance(node, ast.Expr) else None
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "check":
            return True
    return False


def _make_proxy(name: str, req_fd: int, resp_fd: int, loads: Any, broken: Any) -> Any:
    """The judge's stand-in for the program's ``name``: pickled arguments to the program process, the
    reply accepted only as plain builtin data; ``broken(detail)`` ends the judge on any protocol fault."""

    def proxy(*args: Any, **kwargs: Any) -> Any:
        try:
            payload = pickle.dumps((name, args, kwargs), protocol=4)
        except Exception as exc:
            broken(f"arguments of {name} are not picklable: {exc}")
        try:
            send_frame(req_fd, payload)
            frame = recv_frame(resp_fd)
        except (OSError, ValueError):
            frame = None
        if frame is None:
            broken(f"the program exited during a call to {name}")
        try:
            reply = loads(frame)
        except Exception as exc:
            broken(f"reply of {name} is not plain data: {exc}")
        if type(reply) is not tuple or not reply:
            broken("malformed reply")
        if reply[0] == "ok" and len(reply) == 2:
            return reply[1]
        if reply[0] == "exc" and len(reply) == 3:
            exc_type = getattr(builtins, str(reply[1]), None)
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                exc_type = RuntimeError
            if issubclass(exc_type, ITERATION_PROTOCOL):
                # raised inside map()/zip()/a generator of the test, StopIteration would end the
                # iteration early and skip the remaining checks (`all(map(f, xs))` is True): it
                # becomes RuntimeError at the boundary, as PEP 479 does for generators
                raise RuntimeError(f"{name} raised {exc_type.__name__}: {str(reply[2])}")
            raise exc_type(str(reply[2]))
        broken(f"{name} returned a {reply[1] if len(reply) > 1 else '?'}, not plain builtin data")

    proxy.__name__ = proxy.__qualname__ = name
    return proxy


def _judge_namespace(
    tests: list[str], setup: str, entry_point: str | None, verdict: Any
) -> tuple[dict[str, Any], list[Any], list[str]]:
    """The judge's namespace (real builtins, the trusted setup, the modules the tests use), each test
    compiled (or the error compiling it raised), and the program names the tests call."""
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    codes: list[Any] = []
    for i, test in enumerate(tests):
        try:
            codes.append(compile(test, f"<test {i}>", "exec"))
        except BaseException as exc:  # reported when its turn comes
            codes.append(exc)
    try:
        if setup:
            exec(compile(setup, "<setup>", "exec"), ns)
        if entry_point:  # the one program name is known; modules from the compiled code (no AST walk)
            names, modules = [entry_point], _module_names(codes, entry_point)
        else:
            names, modules = program_names(tests, setup, entry_point)
        for module in modules:
            if module not in ns:
                try:
                    ns[module] = importlib.import_module(module)
                except ImportError:
                    pass
    except BaseException as exc:
        verdict(0, "sandbox_error", f"test setup failed: {_describe(exc)}")
        os._exit(0)
    return ns, codes, names


def judge(
    tests_blob: bytes,
    setup: str,
    entry_point: str | None,
    req_fd: int,
    resp_fd: int,
    verdict_fd: int,
    loads: Any,
) -> None:
    """Runs each assert test against the real builtins; writes one verdict per test on ``verdict_fd``.

    The judge never sees the program's source. Its namespace holds the real builtins, what the
    trusted ``setup`` code defines (e.g. HumanEval's helper functions from the prompt), standard
    modules the tests use, and for each name of :func:`program_names` a proxy that sends the pickled
    arguments to the program process and returns the reply, accepted only if it is plain builtin data
    (decoded by ``loads``, the restricted unpickler). Nothing the program defines runs here.
    """
    current = [0]

    def verdict(i: int, status: str, detail: str = "") -> None:
        send_frame(verdict_fd, json.dumps({"i": i, "status": status, "detail": detail[-2000:]}).encode())

    def broken(detail: str) -> None:
        # the program died, lied about a type or broke the protocol: the current test fails and the
        # judge stops at once, so no `except:` in the test code can swallow the failure
        verdict(current[0], "error", detail)
        os._exit(0)

    tests = json.loads(tests_blob.decode())
    ns, codes, names = _judge_namespace(tests, setup, entry_point, verdict)
    for name in names:
        ns[name] = _make_proxy(name, req_fd, resp_fd, loads, broken)
    for i, (test, code) in enumerate(zip(tests, codes)):
        current[0] = i
        try:
            if isinstance(code, BaseException):
                raise code
            exec(code, ns)
            if entry_point and callable(ns.get("check")) and not _calls_check(test):
                ns["check"](ns[entry_point])
        except AssertionError as exc:
            verdict(i, "wrong", _describe(exc))
            continue
        except BaseException as exc:
            verdict(i, "memory" if isinstance(exc, MemoryError) else "error", _describe(exc))
            continue
        verdict(i, "ok")
    os._exit(0)
