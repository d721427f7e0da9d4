"""The Ray launcher's choices that need no cluster: which launcher, how many nodes, labels, config checks."""

from __future__ import annotations

import pytest

from archer.config import load_config
from archer.distributed import launch
from archer.distributed.placement import LABEL_SHARE, label_resources
from archer.errors import ConfigError


def _node(cpus: float, alive: bool = True, **labels: float) -> dict:
    return {"Alive": alive, "Resources": {"CPU": cpus, **labels}}


def test_launcher_is_chosen_by_resources_nodes():
    assert launch.launcher_name(load_config("tiny_math", [])) == "local"
    assert launch.launcher_name(load_config("tiny_math", ["resources.nodes=2"])) == "ray"
    assert set(launch.LAUNCHERS) == {"local", "ray"}


def test_nodes_to_use_takes_what_fits_down_to_min_nodes_and_says_why_not():
    from archer.distributed.ray_launch import nodes_to_use

    cfg = load_config("tiny_math", ["resources.nodes=2", "resources.train_procs=2", "resources.min_nodes=1"])
    bundle = {"CPU": 2.0, "train": 2 * LABEL_SHARE}
    fits = _node(2, train=1)
    assert nodes_to_use([fits, fits, fits], bundle, cfg) == 2
    # one node too small, one dead, one without the label: only one fits, min_nodes allows it
    others = [_node(1, train=1), _node(4, alive=False, train=1), _node(8)]
    assert nodes_to_use([fits, *others], bundle, cfg) == 1
    strict = load_config("tiny_math", ["resources.nodes=2", "resources.train_procs=2"])
    with pytest.raises(
        launch.NoRestart, match=r"^only 1 of 3 alive Ray node\(s\) can host 2 training rank\(s\)"
    ):
        nodes_to_use([fits, *others], bundle, strict)


def test_labels_and_their_config_checks():
    assert label_resources({"rollout": "gen"}, "rollout") == {"gen": LABEL_SHARE}
    assert label_resources({"rollout": "gen"}, "reward") == {}
    with pytest.raises(ValueError, match="unknown role 'critic'"):
        label_resources({}, "critic")
    with pytest.raises(ConfigError, match=r"^resources.placement: unknown value 'critic'"):
        load_config("tiny_math", ["resources.placement={critic: x}"])
    with pytest.raises(
        ConfigError, match=r"^resources.min_nodes: must be between 1 and resources.nodes \(2\)"
    ):
        load_config("tiny_math", ["resources.nodes=2", "resources.min_nodes=3"])
    with pytest.raises(ConfigError, match=r"^resources.min_nodes: needs resources.nodes > 0"):
        load_config("tiny_math", ["resources.min_nodes=1"])
    with pytest.raises(ConfigError, match=r"^resources.nodes: must be >= 0"):
        load_config("tiny_math", ["resources.nodes=-1"])


def test_a_restart_that_cannot_happen_is_final_with_its_reason(tmp_path):
    from types import SimpleNamespace

    calls = []

    def once(resume, attempt):
        calls.append(attempt)
        raise launch.NoRestart("only 1 of 2 alive Ray node(s) can host 1 training rank(s)")

    cfg = SimpleNamespace(trainer=SimpleNamespace(max_restarts=3))
    with pytest.raises(launch.RankFailure) as info:
        launch.with_restarts(once, cfg, tmp_path)
    assert str(info.value) == "only 1 of 2 alive Ray node(s) can host 1 training rank(s); cannot restart"
    assert calls == [0]
