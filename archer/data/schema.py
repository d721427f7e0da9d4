"""The one record every stage of archer passes around: a problem with a checkable answer.

Loaders (``archer.data.formats``), the synthetic task generators, the trainer, the evaluation runner
and the reward registry all speak :class:`Problem`. A math problem carries ``answer`` (a string, the
gold final answer); a code problem carries ``tests`` in one of the formats of
``archer.rewards.run_tests``::

    {"inputs": [...], "outputs": [...], "fn_name": optional}   # stdin/stdout or call-based
    {"assert": "<test code>", "entry_point": optional}          # HumanEval / MBPP style
"""

from __future__ import annotations

import ast
import functools
from dataclasses import asdict, dataclass, field
from typing import Any

KINDS = ("math", "code")


@dataclass
class Problem:
    """A prompt with a verifiable answer.

    ``prompt`` is either plain text (the user turn) or a chat list of ``{"role", "content"}`` dicts.
    ``data_source`` names where the row came from (``math500``, ``livecodebench``, ...); the reward
    registry picks the verifier from ``kind`` and may refine it by ``data_source``.
    """

    id: str
    prompt: str | list[dict[str, str]]
    kind: str
    answer: str | None = None
    tests: dict[str, Any] | None = None
    data_source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Problem {self.id!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "math" and (self.answer is None or str(self.answer).strip() == ""):
            raise ValueError(f"Problem {self.id!r}: a math problem needs a non-empty 'answer'")
        if self.kind == "code" and not isinstance(self.tests, dict):
            raise ValueError(f"Problem {self.id!r}: a code problem needs 'tests' as a dict")
        if not isinstance(self.prompt, (str, list)) or not self.prompt:
            raise ValueError(f"Problem {self.id!r}: 'prompt' must be a non-empty string or chat list")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Problem:
        known = {"id", "prompt", "kind", "answer", "tests", "data_source", "meta"}
        missing = {"id", "prompt", "kind"} - row.keys()
        if missing:
            raise ValueError(f"row is missing field(s) {sorted(missing)}")
        extra = {k: v for k, v in row.items() if k not in known}
        meta = dict(row.get("meta") or {}, **extra)
        return cls(
            id=str(row["id"]),
            prompt=row["prompt"],
            kind=row["kind"],
            answer=None if row.get("answer") is None else str(row["answer"]),
            tests=row.get("tests"),
            data_source=row.get("data_source", "unknown"),
            meta=meta,
        )


def load_problems_from_rows(rows: list[dict[str, Any]], source: str = "<rows>") -> list[Problem]:
    """Build problems from already-normalised dict rows; a bad row is an error naming the row."""
    out = []
    for i, row in enumerate(rows):
        try:
            out.append(Problem.from_dict(row))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: row {i + 1}: {exc}") from None
    return out


@functools.lru_cache(maxsize=1024)
def _helpers_needed(prompt: str, entry: str, test: str) -> bool:
    """Whether ``prompt`` defines ``entry`` at top level and some other name the test code uses."""
    try:
        top = ast.parse(prompt).body
        used = {n.id for n in ast.walk(ast.parse(test)) if isinstance(n, ast.Name)}
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    defs = {n.name for n in top if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    return entry in defs and bool((defs - {entry}) & used)


def with_prompt_setup(tests: Any, prompt: Any) -> Any:
    """HumanEval-style problems: the prompt (trusted, holding helpers such as ``poly``) becomes the
    tests' ``setup`` when the tests use one of its helpers and name none themselves."""
    if not isinstance(tests, dict) or "assert" not in tests or tests.get("setup"):
        return tests
    entry, code = tests.get("entry_point"), tests["assert"]
    test = code if isinstance(code, str) else "\n".join(map(str, code)) if isinstance(code, list) else ""
    if isinstance(entry, str) and isinstance(prompt, str) and _helpers_needed(prompt, entry, test):
        return {**tests, "setup": prompt}
    return tests
