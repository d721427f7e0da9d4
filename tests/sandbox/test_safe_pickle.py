"""Restricted unpickler and LiveCodeBench test decoding."""

from __future__ import annotations

import base64
import json
import os
import pickle
import zlib

import pytest

from archer.sandbox.zygote.safe_pickle import UnsafePickleError, decode_lcb_tests, restricted_loads


class _Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Point:
    def __init__(self):
        self.x = 1


PLAIN = {
    "s": "x",
    "b": b"\x00\xff",
    "i": -(2**70),
    "f": 1.5,
    "t": True,
    "n": None,
    "l": [1, [2]],
    "tu": (1, "a"),
    "set": {1, 2},
    "fs": frozenset({3}),
    "c": 1 + 2j,
    "ba": bytearray(b"ab"),
}


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_plain_data_round_trips_in_every_protocol(protocol):
    assert restricted_loads(pickle.dumps(PLAIN, protocol=protocol)) == PLAIN


def test_reduce_payload_is_refused_and_never_runs(tmp_path):
    target = tmp_path / "pwned"
    for protocol in (0, 2, 5):
        with pytest.raises(UnsafePickleError, match="system"):
            restricted_loads(pickle.dumps(_Exploit(target), protocol=protocol))
    assert not target.exists()
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps(_Point()))
    with pytest.raises(UnsafePickleError):
        restricted_loads(pickle.dumps(print))


def test_malformed_and_oversized_input():
    with pytest.raises(UnsafePickleError):
        restricted_loads(b"\x80\x04garbage")
    with pytest.raises(UnsafePickleError, match="limit"):
        restricted_loads(pickle.dumps("x" * 100), max_bytes=10)
    with pytest.raises(TypeError):
        restricted_loads("not bytes")  # type: ignore[arg-type]


def test_decode_lcb_tests_compressed_and_plain():
    inner = {"inputs": ["1\n"], "outputs": ["2\n"], "fn_name": None}
    blob = base64.b64encode(
        zlib.compress(pickle.dumps(json.dumps({"input_output": json.dumps(inner)})))
    ).decode()
    assert decode_lcb_tests(blob) == inner
    assert decode_lcb_tests(json.dumps(inner)) == inner
    cases = [{"input": "1", "output": "2", "testtype": "stdin"}]
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()
    assert decode_lcb_tests(blob) == {"tests": cases}
    evil = base64.b64encode(zlib.compress(pickle.dumps(_Exploit("/tmp/archer_pwned_lcb")))).decode()
    with pytest.raises(UnsafePickleError):
        decode_lcb_tests(evil)
    assert not os.path.exists("/tmp/archer_pwned_lcb")
    with pytest.raises(ValueError):
        decode_lcb_tests("%%% not base64 or json")
