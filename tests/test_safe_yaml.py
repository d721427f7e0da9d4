"""archer.safe_yaml.load_yaml: what yaml.safe_load returns for ordinary documents, a fast one-line
ValueError naming the source for alias bombs, self-reference, deep nesting, size and bad syntax."""

from __future__ import annotations

import time

import pytest
import yaml

from archer.safe_yaml import load_yaml


def _laughs(levels: int, fanout: int = 10) -> str:
    """The classic alias bomb: level k is a list of ``fanout`` aliases to level k-1."""
    names = [f"l{k}" for k in range(levels + 1)]
    lines = [f"{names[0]}: &{names[0]} [" + ",".join(["lol"] * fanout) + "]"]
    for k in range(1, levels + 1):
        lines.append(f"{names[k]}: &{names[k]} [" + ",".join([f"*{names[k - 1]}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        "lr: 0.001\nmodel:\n  name: qwen\n  layers: [1, 2, 3]\n",
        "base: &b {lr: 0.1, steps: 3}\nrun:\n  <<: *b\n  steps: 5\n",  # merge keys still work
        "shared: &s [1, 2]\na: *s\nb: *s\n",
        "- 1\n- two\n- {three: 3}\n",
        "",
        "# only a comment\n",
        _laughs(3),  # 1,111 leaves expanded: a legitimate amount of sharing
    ],
)
def test_same_result_as_safe_load(text):
    assert load_yaml(text, source="cfg.yaml") == yaml.safe_load(text)


def test_alias_bomb_is_refused_fast():
    bomb = _laughs(9)  # 500 bytes, 10**10 leaves once expanded
    assert len(bomb) == 500
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^bomb\.yaml: YAML expands to more than 1000000 nodes"):
        load_yaml(bomb, source="bomb.yaml")
    assert time.monotonic() - start < 1.0  # the check is linear in the document, not in its expansion


def test_node_limit_is_exact():
    doc = "a: &a [1, 2, 3]\nb: [*a, *a]\n"  # expanded: root map 1 + keys 2 + a (4) + b (1 + 4 + 4) = 16
    assert load_yaml(doc, source="s", max_nodes=16) == {"a": [1, 2, 3], "b": [[1, 2, 3], [1, 2, 3]]}
    with pytest.raises(ValueError, match="more than 15 nodes"):
        load_yaml(doc, source="s", max_nodes=15)


def test_self_reference_is_refused():
    with pytest.raises(ValueError, match=r"^loop\.yaml: YAML refers to itself"):
        load_yaml("a: &a [1, *a]\n", source="loop.yaml")


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        "a:\n" + "".join("  " * k + f"k{k}:\n" for k in range(1, 150)) + "  " * 150 + "v",
    ],
)
def test_deep_nesting_is_refused_without_recursion_error(text):
    with pytest.raises(ValueError, match=r"^deep\.yaml: YAML nests"):
        load_yaml(text, source="deep.yaml")


def test_depth_limit_is_exact():
    assert load_yaml("[[[1]]]", source="s", max_depth=4) == [[[1]]]  # three lists and a scalar
    with pytest.raises(ValueError, match="more than 3 levels"):
        load_yaml("[[[1]]]", source="s", max_depth=3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: [1,\n", r"^x\.yaml: invalid YAML: while parsing a flow"),
        (
            "x: !!python/object/apply:os.system ['true']\n",
            r"^x\.yaml: invalid YAML: could not determine a constructor",
        ),
        ("a: 1\n---\nb: 2\n", r"^x\.yaml: invalid YAML: expected a single document"),
        (b"a: \xff\xfe\n", r"^x\.yaml: YAML is not UTF-8 text \(byte 3\)"),
        ("x" * 101, r"^x\.yaml: YAML of 101 characters exceeds the limit of 100"),
    ],
)
def test_bad_documents_name_the_source_on_one_line(text, message):
    with pytest.raises(ValueError, match=message) as info:
        load_yaml(text, source="x.yaml", max_bytes=100)
    assert "\n" not in str(info.value)
