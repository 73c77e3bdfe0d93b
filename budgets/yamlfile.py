"""Load a YAML file into a pydantic model, reporting every problem with its line.

YAML is read with ``yaml.safe_load``; the same text is composed once more to
learn the line of every key, so a validation error can name the file, the
line and the key path, e.g. ``budgets.yaml:4: `budgets.cto.max_tokens`: Input
should be greater than 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from budgetgraph.budgets.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

Loc = tuple[str | int, ...]


class YamlDocument:
    """A parsed YAML file with the line of each key path.

    Attributes:
        path: Where the text came from (for messages).
        data: The document as plain Python values (``yaml.safe_load``).
    """

    def __init__(self, path: str, data: Any, lines: Mapping[Loc, int]) -> None:
        self.path = path
        self.data = data
        self._lines = dict(lines)

    @classmethod
    def read(cls, path: str | Path) -> YamlDocument:
        """Read and parse ``path``.

        Raises:
            ConfigError: The file is missing, unreadable or not valid YAML.
        """
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(path=name, problems=[f"cannot read the file: {exc.strerror}"]) from exc
        return cls.parse(text, path=name)

    @classmethod
    def parse(cls, text: str, *, path: str) -> YamlDocument:
        """Parse YAML ``text``; ``path`` only names it in messages.

        Raises:
            ConfigError: The text is not valid YAML.
        """
        try:
            data = yaml.safe_load(text)
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"{mark.line + 1}" if mark is not None else "?"
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(path=path, problems=[f"{path}:{line}: not valid YAML: {problem}"]) from exc
        lines: dict[Loc, int] = {}
        if node is not None:
            _index_lines(node, (), lines)
        return cls(path, {} if data is None else data, lines)

    def line_of(self, loc: Loc) -> int | None:
        """Return the line of the deepest key of ``loc`` that exists in the file."""
        for end in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str) -> str:
        """Format one problem as ``file:line: `key.path`: message``."""
        line = self.line_of(loc)
        where = f"{self.path}:{line}" if line is not None else self.path
        key = ".".join(str(part) for part in loc) or "(top level)"
        return f"{where}: `{key}`: {message}"

    def validate(self, model: type[M], data: Any, loc: Loc = ()) -> tuple[M | None, list[str]]:
        """Validate ``data`` (found at ``loc`` in the file) as ``model``.

        Returns:
            The model instance, or ``None`` with the formatted problems.
        """
        try:
            return model.model_validate(data), []
        except ValidationError as exc:
            return None, [self.problem(loc + tuple(e["loc"]), _message(e)) for e in exc.errors()]

    def fail(self, problems: Sequence[str]) -> ConfigError:
        """Build the one error that lists ``problems``."""
        return ConfigError(path=self.path, problems=problems)


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    return str(error["msg"])


def _index_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[loc + (key,)] = key_node.start_mark.line + 1
            _index_lines(value_node, loc + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, loc + (index,), lines)
