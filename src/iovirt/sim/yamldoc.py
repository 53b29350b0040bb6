"""YAML documents (scenarios, cost profiles) read with limits: a file is read
only up to a size, and a document nested deeper than ``MAX_NESTING`` levels
of lists and mappings is refused before PyYAML's recursive composer would
exhaust the Python stack (a thousand levels or so); aliases and scalars do
not nest.  A key given twice in one mapping is refused (YAML 1.2, 3.2.1.1:
keys are unique), and ``2e3`` is a number, as in YAML 1.2's core schema
(YAML 1.1's float needs a dot and reads it as a string)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import re

import yaml

MAX_NESTING = 32     # a scenario nests 5 levels (vms, a VM, its nics, a NIC), a profile 3


class TooDeep(yaml.MarkedYAMLError):
    """Nested deeper than MAX_NESTING; ``problem_mark`` is where."""


class TooLarge(ValueError):
    """The file holds more than the limit it was read with."""


class Duplicate(yaml.MarkedYAMLError):
    """A key given twice in one mapping; ``problem_mark`` is the second."""


# YAML 1.2 core schema, 10.3.2: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?,
# here only the exponent forms without a dot that YAML 1.1 leaves as strings.
_EXPONENT = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_NESTING and not self.check_event(yaml.AliasEvent, yaml.ScalarEvent):
            raise TooDeep(problem=f"expected at most {MAX_NESTING} levels of nested lists and mappings, got deeper",
                          problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node)
                if key in seen:
                    raise Duplicate(problem=f"expected each key once in a mapping, got {key!r} again",
                                    problem_mark=key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789"))


def load(text: str) -> Any:
    """``yaml.safe_load``, refusing documents nested deeper than MAX_NESTING (TooDeep)."""
    return yaml.load(text, Loader=_Loader)


def read(path: Path, limit: int) -> str:
    """The file's UTF-8 text; TooLarge past ``limit`` bytes, read no further
    (a device or a pipe never ends)."""
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(f"more than {limit} bytes")
    return raw.decode("utf-8")
