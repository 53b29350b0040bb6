"""YAML documents (scenarios, cost profiles) read with limits: a file is read
only up to a size, and a document nested deeper than ``MAX_NESTING`` levels
of lists and mappings is refused before PyYAML's recursive composer would
exhaust the Python stack (a thousand levels or so); aliases and scalars do
not nest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_NESTING = 32     # a scenario nests 5 levels (vms, a VM, its nics, a NIC), a profile 3


class TooDeep(yaml.MarkedYAMLError):
    """Nested deeper than MAX_NESTING; ``problem_mark`` is where."""


class TooLarge(ValueError):
    """The file holds more than the limit it was read with."""


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
