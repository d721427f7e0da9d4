"""Loading pickles that only hold plain data, and decoding LiveCodeBench's compressed private tests.

LiveCodeBench publishes its private test cases as ``base64(zlib(pickle(json_string)))``. A plain
``pickle.loads`` on downloaded data runs whatever a ``__reduce__`` payload asks for (``os.system``),
so :func:`restricted_loads` refuses every global lookup except a few constructors of builtin data
types. What it accepts: ``str, bytes, bytearray, int, float, complex, bool, None`` and ``list, tuple,
dict, set, frozenset`` of those. Anything else (a class instance, a function reference, a persistent
id) raises :class:`UnsafePickleError`.

Decompression is bounded: a row whose tests inflate past ``MAX_DECOMPRESSED_BYTES`` (256 MiB; the
largest published LiveCodeBench private tests are tens of MB) is refused while inflating, so a
zlib bomb costs at most that much memory instead of gigabytes; with a ``budget`` the rows of one
file share one limit (``archer.data.formats.decoded_limit``), so many rows under the per-row limit
cannot add up to gigabytes either.

The sandbox also uses :func:`restricted_loads` to read return values sent back by untrusted programs,
so this module imports nothing from archer and only the standard library.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import zlib
from typing import Any

MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024

# (module, name) pairs a pickle may reference: constructors of builtin data types, nothing callable
# beyond them. Protocol 0-2 pickles build sets, frozensets, bytearrays and complex numbers by REDUCE.
_ALLOWED_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("__builtin__", "bytearray"): bytearray,
    ("__builtin__", "complex"): complex,
    ("_codecs", "encode"): None,  # protocol < 3 bytes; handled below (only latin-1 str -> bytes)
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references something other than plain builtin data."""


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    if not isinstance(obj, str) or encoding != "latin1":
        raise UnsafePickleError("_codecs.encode is only allowed as str -> latin1 bytes")
    return obj.encode("latin1")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise UnsafePickleError(f"pickle references {module}.{name}; only plain data is accepted")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("persistent ids are not accepted")


def restricted_loads(data: bytes, max_bytes: int | None = None) -> Any:
    """``pickle.loads`` for plain data only; raises :class:`UnsafePickleError` on anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"restricted_loads needs bytes, got {type(data).__name__}")
    if max_bytes is not None and len(data) > max_bytes:
        raise UnsafePickleError(f"pickle of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return _RestrictedUnpickler(io.BytesIO(bytes(data))).load()
    except UnsafePickleError:
        raise
    except RecursionError as exc:
        raise UnsafePickleError("pickle nests too deeply") from exc
    except Exception as exc:  # truncated or malformed stream
        raise UnsafePickleError(f"malformed pickle: {type(exc).__name__}: {exc}") from exc


def bounded_decompress(data: bytes, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """``zlib.decompress`` that stops, with ``ValueError``, once the output passes ``max_bytes``."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, max_bytes + 1)
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise ValueError(f"compressed tests inflate past the limit of {max_bytes} bytes; refused")
    out += inflater.flush()
    if len(out) > max_bytes:
        raise ValueError(f"compressed tests inflate past the limit of {max_bytes} bytes; refused")
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return out


def decode_lcb_tests(
    s: str | bytes | dict, max_bytes: int = MAX_DECOMPRESSED_BYTES, budget: list[int] | None = None
) -> dict:
    """LiveCodeBench tests as a dict, from plain JSON or ``base64(zlib(pickle(json)))``.

    A payload of the form ``{"input_output": "<json>"}`` (the Archer/verl layout) is unwrapped to the
    inner ``{"inputs", "outputs", "fn_name"}`` dict; a list of ``{"input", "output", "testtype"}``
    cases (upstream private tests) is returned as ``{"tests": [...]}``; any other dict as is.
    Raises ``ValueError`` when neither form decodes, or when the compressed form inflates past
    ``max_bytes``. ``budget`` (a one-element list) is what the rows of one file may still inflate to
    together: the limit is the smaller of the two and the inflated size is taken from it, so a file
    of many rows just under ``max_bytes`` each is refused once their sum passes the budget.
    """
    if isinstance(s, dict):
        return s
    text = s.decode() if isinstance(s, (bytes, bytearray)) else s
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            return _as_dict(json.loads(stripped))
        except json.JSONDecodeError:
            pass
    try:
        compressed = base64.b64decode(stripped, validate=False)
    except Exception as exc:
        raise ValueError(
            f"tests are neither JSON nor base64(zlib(...)): {type(exc).__name__}: {exc}"
        ) from exc
    if budget is not None:
        max_bytes = max(0, min(max_bytes, budget[0]))
    try:
        raw = bounded_decompress(compressed, max_bytes)
    except ValueError:
        if budget is not None and max_bytes < MAX_DECOMPRESSED_BYTES:
            raise ValueError(
                f"compressed tests inflate past the limit of {max_bytes} bytes left to this file "
                "(its rows together); refused"
            ) from None
        raise
    except Exception as exc:
        raise ValueError(
            f"tests are neither JSON nor base64(zlib(...)): {type(exc).__name__}: {exc}"
        ) from exc
    if budget is not None:
        budget[0] -= len(raw)
    obj = restricted_loads(raw)
    if isinstance(obj, (bytes, bytearray)):
        obj = obj.decode()
    if isinstance(obj, str):
        obj = json.loads(obj)
    return _as_dict(obj)


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        inner = obj.get("input_output")
        if len(obj) == 1 and isinstance(inner, str):
            inner = json.loads(inner)
        return inner if isinstance(inner, dict) else obj
    if isinstance(obj, list):
        return {"tests": obj}
    raise ValueError(f"decoded tests are a {type(obj).__name__}, expected a dict or list")
