"""Result types shared by every verifier, and the scorer interface a training step calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from archer.errors import RewardFunctionError


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


class Scorer(Protocol):
    def score(self, responses: list[str], problems: list[Any]) -> list[RewardResult]: ...

    def close(self) -> None: ...


def safe_score(scorer: Scorer, responses: list[str], problems: list[Any]) -> list[RewardResult]:
    """``scorer.score`` that always returns one result per response and raises only a user's reward
    function's :class:`archer.errors.RewardFunctionError` (a mistake in the user's code ends the run;
    a verifier or sandbox failure is tolerated as reward 0)."""
    try:
        results = list(scorer.score(responses, problems))
        if len(results) != len(responses):
            raise RuntimeError(f"scorer returned {len(results)} results for {len(responses)} responses")
        return results
    except RewardFunctionError:
        raise
    except Exception as exc:  # the run goes on with zero reward; the reason is logged per sample
        reason = f"scorer failed: {type(exc).__name__}: {exc}"
        return [RewardResult(0.0, False, {"reason": reason}) for _ in responses]
