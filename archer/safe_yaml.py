"""YAML for configs and data files that may be hostile: refuse alias bombs, deep nesting and huge
documents before anything is built from them.

``yaml.safe_load`` stops code execution but not size attacks: a 400-byte "billion laughs" document
(each anchor a list of ten aliases to the previous one) loads instantly as a graph of shared lists,
and the first thing that walks it as a tree (``copy.deepcopy``, a dataclass conversion, ``json``)
spends minutes and gigabytes. :func:`load_yaml` composes the node graph (aliases not expanded),
counts the nodes the document would have once every alias is expanded (memoised per node, so the
count itself is linear in the document), checks the depth, and only then constructs the data with
PyYAML's ``SafeLoader``. Every refusal is a ``ValueError`` whose message names ``source``.

Limits (keyword arguments of :func:`load_yaml`): ``max_bytes`` of text (default 10 MB),
``max_nodes`` after alias expansion (default 1,000,000; a training config has a few hundred),
``max_depth`` of nested collections (default 100). A document that refers to itself through an
alias (``&a [*a]``) is refused. Only the first document of a stream is read (a second one is an
error, as in ``yaml.safe_load``).
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 10 * 1024 * 1024
MAX_NODES = 1_000_000
MAX_DEPTH = 100


def load_yaml(
    text: str | bytes,
    *,
    source: str,
    max_bytes: int = MAX_BYTES,
    max_nodes: int = MAX_NODES,
    max_depth: int = MAX_DEPTH,
) -> Any:
    """Parse one YAML document with ``SafeLoader`` after checking its expanded size and depth.

    Returns what ``yaml.safe_load`` would (``None`` for an empty document). Raises ``ValueError``
    naming ``source`` (a file path, or a description such as ``"override model.lr"``) for malformed
    YAML, an alias bomb, nesting deeper than ``max_depth`` or text longer than ``max_bytes``."""
    if isinstance(text, bytes):
        if len(text) > max_bytes:
            raise ValueError(f"{source}: YAML of {len(text)} bytes exceeds the limit of {max_bytes}")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source}: YAML is not UTF-8 text (byte {exc.start})") from None
    if not isinstance(text, str):
        raise TypeError(f"load_yaml needs str or bytes, got {type(text).__name__}")
    if len(text) > max_bytes:
        raise ValueError(f"{source}: YAML of {len(text)} characters exceeds the limit of {max_bytes}")
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise ValueError(f"{source}: YAML nests too deeply (limit {max_depth} levels)") from None
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: invalid YAML: {_one_line(exc)}") from None
        if node is None:
            return None
        _check_graph(node, source, max_nodes, max_depth)
        try:
            return loader.construct_document(node)
        except yaml.YAMLError as exc:
            raise ValueError(f"{source}: invalid YAML: {_one_line(exc)}") from None
    finally:
        loader.dispose()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _check_graph(root: yaml.Node, source: str, max_nodes: int, max_depth: int) -> None:
    """Expanded node count and depth of the graph under ``root``, iteratively (no recursion limit),
    each node visited once: ``size[n] = 1 + sum(size[child])`` over the children with aliases."""
    size: dict[int, int] = {}
    depth_of: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            total = 1 + sum(size[id(c)] for c in children)
            depth = 1 + max((depth_of[id(c)] for c in children), default=0)
            if total > max_nodes:
                raise ValueError(
                    f"{source}: YAML expands to more than {max_nodes} nodes (aliases repeat anchors); refused"
                )
            if depth > max_depth:
                raise ValueError(f"{source}: YAML nests more than {max_depth} levels deep; refused")
            size[key], depth_of[key] = total, depth
            continue
        if key in size:
            continue
        if key in on_path:
            raise ValueError(f"{source}: YAML refers to itself through an alias; refused")
        on_path.add(key)
        stack.append((node, True))
        if len(on_path) > max_depth:
            raise ValueError(f"{source}: YAML nests more than {max_depth} levels deep; refused")
        for child in children:
            if id(child) in on_path:
                raise ValueError(f"{source}: YAML refers to itself through an alias; refused")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
