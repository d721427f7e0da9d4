"""Result types shared by every verifier."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardResult:
    """One scored response.

    ``reward`` is what the trainer optimises (after any shaping); ``correct`` is the verdict used for
    accuracy, avg@k and pass@k; ``info`` says what was extracted and, on failure, why
    (``info["reason"]``), so a run's logs explain every zero.
    """

    reward: float
    correct: bool
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TestReport:
    """Outcome of running one program against its tests in the sandbox.

    ``verdicts`` has one entry per test that was run, each one of ``"ok"``, ``"wrong"``,
    ``"timeout"``, ``"error"``, ``"memory"``, ``"output_limit"``, ``"skipped"`` (not run after an
    earlier failure with ``stop_on_failure``), or ``"sandbox_error"`` (the harness itself failed).
    """

    passed: int
    total: int
    verdicts: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    __test__ = False  # not a pytest test class

    @property
    def all_passed(self) -> bool:
        return self.total > 0 and self.passed == self.total

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0
