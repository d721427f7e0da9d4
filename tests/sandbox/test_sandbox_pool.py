"""The zygote pool itself: fallbacks report themselves, config validation, crash recovery."""

from __future__ import annotations

import json
import logging
import os

import pytest

from archer.rewards.code import run_tests, run_tests_batch
from archer.sandbox.pool import SandboxConfig, SandboxPool

HONEST = [
    ("print(input())", {"inputs": ["5"], "outputs": ["5"]}),
    ("def f(x):\n    return x\n", {"assert": "assert f(1) == 1"}),
    ("def f(x):\n    return x\n", {"inputs": ["1"], "outputs": ["1"], "fn_name": "f"}),
    ("while True:\n    pass\n", {"inputs": ["5"], "outputs": ["5"]}),
]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="docker")
    with pytest.raises(ValueError, match="nproc"):
        SandboxConfig(nproc=1)
    with pytest.raises(ValueError, match="tmpfs_mb"):
        SandboxConfig(tmpfs_mb=-1)


def test_no_isolation_fallback_works_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="archer.sandbox.pool"):
        with SandboxPool(SandboxConfig(workers=1, isolation="none")) as pool:
            assert not pool.isolation["pid_namespace"] and not pool.isolation["net_namespace"]
            reps = run_tests_batch(HONEST, timeout=0.5, pool=pool)
    assert [r.verdicts for r in reps] == [["ok"], ["ok"], ["ok"], ["timeout"]]
    assert any(
        "WITHOUT" in rec.getMessage() and "net_namespace" in rec.getMessage() for rec in caplog.records
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="compares the root launcher with the user-namespace one")
def test_user_namespace_launcher_reports_no_uid_drop():
    try:
        pool = SandboxPool(SandboxConfig(workers=1, isolation="userns"))
    except Exception as exc:  # kernels that forbid unprivileged user namespaces
        pytest.skip(f"user namespaces unavailable: {exc}")
    with pool:
        assert pool.isolation["uid_drop"] is False and pool.isolation["launcher"] == "unshare-userns"
        reps = run_tests_batch(HONEST, timeout=0.5, pool=pool)
    assert [r.verdicts for r in reps] == [["ok"], ["ok"], ["ok"], ["timeout"]]


def test_dead_zygote_is_replaced():
    with SandboxPool(SandboxConfig(workers=1)) as pool:
        pool._zygotes[0].proc.kill()
        pool._zygotes[0].proc.wait()
        assert run_tests(*HONEST[0], pool=pool).all_passed


def test_zygote_death_mid_run_is_a_sandbox_error_not_a_crash():
    # isolation="none": the process is the zygote itself (not unshare), so its death is immediate
    with SandboxPool(SandboxConfig(workers=1, isolation="none")) as pool:
        zygote = pool._zygotes[0]

        def kill_then_continue(event):
            zygote.proc.kill()
            zygote.proc.wait()
            return True

        errors = pool.run(
            [
                (
                    {
                        "mode": "stdin",
                        "program": "print(1)",
                        "inputs": ["", ""],
                        "timeout": 5.0,
                        "memory_mb": 512,
                    },
                    None,
                    kill_then_continue,
                )
            ]
        )
        assert errors[0] is not None and "died" in errors[0]
        assert run_tests(*HONEST[0], pool=pool).all_passed  # replaced for the next job


def test_worker_never_receives_expected_outputs():
    """The request sent to the zygote holds inputs only: expected outputs stay in the trainer."""
    sent = []

    class Spy(SandboxPool):
        def run(self, jobs):
            sent.extend(json.dumps(req) + (part_b or b"").decode() for req, part_b, _ in jobs)
            return super().run(jobs)

    with Spy(SandboxConfig(workers=1)) as pool:
        run_tests("print(input())", {"inputs": ["in_1"], "outputs": ["EXPECTED_OUT_1"]}, pool=pool)
        run_tests(
            "def f(x):\n    return x\n",
            {"inputs": ["1"], "outputs": ['"EXPECTED_OUT_2"'], "fn_name": "f"},
            pool=pool,
        )
    assert sent and not any("EXPECTED_OUT" in s for s in sent)


def test_batch_is_spread_over_all_zygotes():
    with SandboxPool(SandboxConfig(workers=2)) as pool:
        if not pool.isolation["uid_drop"]:
            pytest.skip("zygotes are told apart by their sandbox uid")
        uids = [u["prog"] for u in pool.isolation["all_uids"]]
        assert len(set(uids)) == 2
        # each program passes only on the zygote whose uid it names
        items = [
            ("import os, time\ntime.sleep(0.1)\nprint(os.getuid())", {"inputs": [""], "outputs": [str(u)]})
            for u in uids
            for _ in range(6)
        ]
        reps = run_tests_batch(items, pool=pool)
    passing = {int(item[1]["outputs"][0]) for item, rep in zip(items, reps) if rep.all_passed}
    assert passing == set(uids)
