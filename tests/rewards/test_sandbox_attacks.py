"""Issue 11, code sandbox: every class of hostile program (``sandbox_attacks.ALL``) is contained.

An attack whose defence needs a kernel facility this machine lacks (no root, no cgroup, no seccomp)
skips naming it; where the facility exists, the sandbox must use it (the layer is asserted active),
so the test fails rather than skips on a sandbox that does not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import sandbox_attacks as sa

from archer.rewards.code import run_tests
from archer.rewards.sandbox import SandboxConfig, SandboxPool

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
        assert pool.isolation[LAYER_OF[name]], f"{name} is available here but the sandbox does not use it: " + str(
            pool.isolation["errors"])


@pytest.mark.parametrize("attack", sa.ALL, ids=lambda a: f"class{a.cls}-{a.name[:48]}")
def test_attack_is_contained(attack, pool, baseline):
    require(pool, attack.needs)
    ok, detail = sa.run_attack(attack, pool, baseline)
    assert ok, f"class {attack.cls}: {attack.name}: {detail}"


def test_a_sandbox_attack_costs_only_its_own_reward(pool):
    """In one batch with honest jobs, attacks on the zygote and the trainer's comparison leave the
    honest jobs' verdicts and the zygote alone."""
    pids = sa.zygote_pids(pool)
    items = [("print('sNaN')", sa.stdin("1")), ("print(2)", sa.stdin("2")), (sa.DEEP_TREE, sa.stdin("deep")),
             (sa.FORGED_DEEP, {"inputs": ["1"], "outputs": ["[1]"], "fn_name": "f"}), ("print(3)", sa.stdin("3"))]
    from archer.rewards.code import run_tests_batch

    reps = run_tests_batch(items, pool=pool)
    assert [r.verdicts for r in reps] == [["wrong"], ["ok"], ["ok"], ["wrong"], ["ok"]]
    assert sa.zygote_pids(pool) == pids


# ------------------------------------------------------------------------------- class 4


HOG = ("import os, time\nfor _ in range(6):\n    if os.fork() == 0:\n        time.sleep(2.5)\n        os._exit(0)\n"
       "time.sleep(2.5)\nprint('hog')\n")
FORKER = ("import os\npids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n"
          "    pids.append(pid)\nfor p in pids:\n    os.waitpid(p, 0)\nprint('forked')\n")


def uid_set(pool):
    return {u for pair in pool.isolation["all_uids"] for u in (pair or {}).values()}


def test_pools_get_disjoint_uids_and_do_not_share_limits():
    if FACILITIES["namespaces"] is not None:
        pytest.skip(FACILITIES["namespaces"])
    with SandboxPool(SandboxConfig(workers=1, nproc=8)) as a, SandboxPool(SandboxConfig(workers=1, nproc=8)) as b:
        assert uid_set(a) and uid_set(b) and not uid_set(a) & uid_set(b)
        hog = threading.Thread(target=run_tests, args=(HOG, sa.stdin("hog")), kwargs={"pool": a, "timeout": 4.0})
        hog.start()
        time.sleep(1.0)  # the hog holds 7 processes of its pool: one short of nproc
        try:
            assert run_tests(FORKER, sa.stdin("forked"), pool=b).all_passed
        finally:
            hog.join()


def test_a_pool_in_another_process_gets_other_uids():
    if FACILITIES["namespaces"] is not None:
        pytest.skip(FACILITIES["namespaces"])
    probe = ("import json\nfrom archer.rewards.sandbox import SandboxPool, SandboxConfig\n"
             "with SandboxPool(SandboxConfig(workers=2)) as p:\n    print(json.dumps(p.isolation['all_uids']))\n")
    with SandboxPool(SandboxConfig(workers=2)) as mine:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        theirs = {u for pair in json.loads(out.stdout.strip().splitlines()[-1]) for u in pair.values()}
        assert theirs and not theirs & uid_set(mine)
