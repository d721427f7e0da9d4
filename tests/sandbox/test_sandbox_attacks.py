"""Issue 11, code sandbox: every class of hostile program (``sandbox_attacks.ALL``) is contained.

An attack whose defence needs a kernel facility this machine lacks (no root, no cgroup, no seccomp)
skips naming it; where the facility exists, the sandbox must use it (the layer is asserted active),
so the test fails rather than skips on a sandbox that does not.
"""

from __future__ import annotations

import pytest
import sandbox_attacks as sa

from archer.sandbox.pool import SandboxConfig, SandboxPool

FACILITIES = sa.facilities()
LAYER_OF = {"namespaces": "ipc_per_run", "seccomp": "seccomp", "cgroup": "cgroup"}


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(SandboxConfig(workers=1, nproc=16)) as p:
        yield p


@pytest.fixture(scope="module")
def baseline(pool):
    hits = sa.scan_hits(pool)
    assert hits is not None, "the memory scanner itself must run"
    return hits


def require(pool, facilities):
    for name in facilities:
        if FACILITIES[name] is not None:
            pytest.skip(f"{name}: {FACILITIES[name]}")
        assert pool.isolation[LAYER_OF[name]], (
            f"{name} is available here but the sandbox does not use it: " + str(pool.isolation["errors"])
        )


@pytest.mark.parametrize("attack", sa.ALL, ids=lambda a: f"class{a.cls}-{a.name[:48]}")
def test_attack_is_contained(attack, pool, baseline):
    require(pool, attack.needs)
    ok, detail = sa.run_attack(attack, pool, baseline)
    assert ok, f"class {attack.cls}: {attack.name}: {detail}"


def test_a_sandbox_attack_costs_only_its_own_reward(pool):
    """In one batch with honest jobs, attacks on the zygote and the trainer's comparison leave the
    honest jobs' verdicts and the zygote alone."""
    pids = sa.zygote_pids(pool)
    items = [
        ("print('sNaN')", sa.stdin("1")),
        ("print(2)", sa.stdin("2")),
        (sa.DEEP_TREE, sa.stdin("deep")),
        (sa.FORGED_DEEP, {"inputs": ["1"], "outputs": ["[1]"], "fn_name": "f"}),
        ("print(3)", sa.stdin("3")),
    ]
    from archer.rewards.code import run_tests_batch

    reps = run_tests_batch(items, pool=pool)
    assert [r.verdicts for r in reps] == [["wrong"], ["ok"], ["ok"], ["wrong"], ["ok"]]
    assert sa.zygote_pids(pool) == pids


# ------------------------------------------------------------------------------- class 4


@pytest.mark.parametrize("name", list(sa.POOL_ATTACKS))
def test_pools_never_share_uids(name):
    if FACILITIES["namespaces"] is not None:
        pytest.skip(FACILITIES["namespaces"])
    ok, detail = sa.POOL_ATTACKS[name]()
    assert ok, f"class 4: {name}: {detail}"


# ------------------------------------------------------------------------------ issue 20


def test_always_none_scores_zero_after_a_takeover_attempt(pool):
    """Issue 20's figure: always-None HumanEval programs scored 122-136/164 once a program had left a
    daemon answering the zygote's control socket in the same pool; it must stay 0/164."""
    import json

    from archer.rewards.code import run_tests, run_tests_batch, with_prompt_setup

    plant = run_tests(sa.TAKEOVER, sa.stdin("no socket"), pool=pool)
    assert plant.all_passed, plant.info  # no socket reached the program
    rows = [json.loads(line) for line in open(sa.REPO / "archer/data/bundled/code/humaneval.jsonl")]
    items = [
        (
            r["prompt"] + "    return None\n",
            with_prompt_setup(
                {"assert": f"{r['test']}\n\ncheck({r['entry_point']})\n", "entry_point": r["entry_point"]},
                r["prompt"],
            ),
        )
        for r in rows
    ]
    reps = run_tests_batch(items, pool=pool, stop_on_failure=True)
    assert len(rows) == 164
    assert sum(r.all_passed for r in reps) == 0


@pytest.mark.parametrize("name", list(sa.SLOT_ATTACKS))
def test_slots_do_not_interfere(name):
    if FACILITIES["cgroup"] is not None:
        pytest.skip(FACILITIES["cgroup"])
    ok, detail = sa.SLOT_ATTACKS[name]()
    assert ok, f"issue 20: {name}: {detail}"


def test_a_broken_call_input_is_still_a_sandbox_error(pool):
    """The zygote, not the program, labels a test input that is not JSON lines."""
    from archer.rewards.code import run_tests

    rep = run_tests(
        "def f(x):\n    return x\n",
        {"inputs": ["{oops", "1"], "outputs": ["1", "1"], "fn_name": "f"},
        pool=pool,
    )
    assert rep.verdicts == ["sandbox_error", "ok"]


def test_alternating_hostile_and_honest_runs_on_one_slot(pool):
    """Issue 20: each honest run right after a hostile one on the same slot gets the whole slot: the
    hostile run's daemon is gone, its SysV memory is no longer charged, its files are removed."""
    from archer.rewards.code import run_tests_batch

    if FACILITIES["cgroup"] is not None:
        pytest.skip(FACILITIES["cgroup"])
    hostile = sa.SHM_464.replace(
        "print(n * 16)",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
        "    time.sleep(60)\nopen('junk', 'wb').write(b'z' * (4 << 20))\nprint(n * 16)",
    )
    honest = "import os\nx = bytearray(440 << 20)\nprint(len(os.listdir('.')))\n"
    items = [(hostile, sa.stdin("464")), (honest, sa.stdin("0"))] * 4
    reps = run_tests_batch(items, pool=pool, memory_mb=512, timeout=10.0)
    assert [r.verdicts for r in reps[1::2]] == [["ok"]] * 4, [r.info for r in reps[1::2]]
    assert all(r.all_passed for r in reps[::2])  # the hostile run itself did what it wanted
