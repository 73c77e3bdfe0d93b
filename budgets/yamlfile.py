"""Load a YAML file into a pydantic model, reporting every problem with its line.

A configuration file is hostile input: a served graph may be asked to load one
it has never seen. So a file is refused before any real work when it is larger
than :data:`MAX_BYTES`, not UTF-8 text, nested deeper than :data:`MAX_DEPTH`
levels, or when its aliases would expand past :data:`MAX_NODES` values (the
"billion laughs" file). The text is composed once, by PyYAML's pure-Python
safe loader with those limits added, and the plain Python values and the line
of every key are built from that one node tree. A key given twice in a
mapping is an error, where ``yaml.safe_load`` silently keeps the last one.

A problem names the file, the line and the key path, e.g. ``budgets.yaml:4:
`budgets.cto.max_tokens`: Input should be greater than 0``, and never
echoes what the file holds: a key, or a name such as a plugin's, is quoted
only when it reads as a plain name (:func:`plain_name`), else a key is
described by its line (``an unknown key at line 1``); other values and the
text around a YAML syntax error are never quoted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AllowInfNan, BaseModel, Strict, ValidationError

from budgetgraph.budgets.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

Loc = tuple[Any, ...]
"""A key path: mapping keys and sequence indexes, outermost first."""

MAX_BYTES = 1 << 20
"""Largest file read (bytes, 1 MiB); the configuration files are a few KiB."""

MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences; the configuration files need about 6."""

MAX_NODES = 20_000
"""Most values a file may hold once every alias is expanded (each key and each
value counts one). Bounds the "billion laughs" file, whose few hundred bytes of
nested aliases expand to 10^9 values."""

Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number as YAML writes one: an integer is accepted, YAML's booleans
(``yes``, ``true``), ``.inf``, ``.nan`` and quoted text are refused."""

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")
_YAML_WORD = re.compile(r"<[a-z ]+>|[,:\[\]{}]")


def plain_name(value: object) -> str | None:
    """Return ``value`` when it may be quoted in a message, else ``None``.

    A key or name read from a file is quoted only when it looks like an
    identifier (``^[A-Za-z_][A-Za-z0-9_.-]{0,63}$``), so a file that is not
    configuration at all (``/etc/shadow``, a key file) never has its content
    copied into an error.
    """
    if isinstance(value, str) and _PLAIN_NAME.fullmatch(value):
        return value
    return None


def mention(value: object) -> str:
    """Return ``" `value`"`` for a plain name (:func:`plain_name`), else ``""``.

    For messages such as ``f"unknown node{mention(name)}"``.
    """
    name = plain_name(value)
    return f" `{name}`" if name is not None else ""


class YamlDocument:
    """A parsed YAML file with the line of each key path.

    Attributes:
        path: Where the text came from (for messages).
        data: The document as plain Python values, ``{}`` for an empty file.
    """

    def __init__(self, path: str, data: Any, lines: Mapping[Loc, int], keys: Iterable[Loc] = ()) -> None:
        """Wrap parsed ``data``.

        Args:
            path: Where the text came from (for messages).
            data: The document as plain Python values.
            lines: The line (1-based) of each key path.
            keys: The key paths whose last part is a mapping key read from the
                file (the others end in a sequence index); their names are
                quoted in messages only when they are plain names.
        """
        self.path = path
        self.data = data
        self._lines = dict(lines)
        self._keys = frozenset(keys)

    @classmethod
    def read(cls, path: str | Path) -> YamlDocument:
        """Read and parse ``path``, reading at most :data:`MAX_BYTES` + 1 bytes.

        Raises:
            ConfigError: The file is missing or unreadable (the system's reason
                is given), larger than :data:`MAX_BYTES`, not UTF-8 text, or
                not valid YAML within the limits of :meth:`parse`.
        """
        name = str(path)
        try:
            with open(path, "rb") as file:
                raw = file.read(MAX_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(path=name, problems=[f"{name}: cannot read the file: {reason}"]) from exc
        if len(raw) > MAX_BYTES:
            raise _too_large(name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path=name, problems=[f"{name}: not UTF-8 text"]) from None
        return cls.parse(text, path=name)

    @classmethod
    def parse(cls, text: str, *, path: str) -> YamlDocument:
        """Parse YAML ``text``; ``path`` only names it in messages.

        Raises:
            ConfigError: The text is longer than :data:`MAX_BYTES`, holds
                control characters, is not valid YAML, nests deeper than
                :data:`MAX_DEPTH`, expands past :data:`MAX_NODES` values
                through aliases, or gives a key twice in one mapping.
        """
        if len(text) > MAX_BYTES:
            raise _too_large(path)
        try:
            loader = _BoundedLoader(text)
        except yaml.reader.ReaderError as exc:
            line = text.count("\n", 0, exc.position) + 1
            problem = f"{path}: not UTF-8 text: a control character at line {line}"
            raise ConfigError(path=path, problems=[problem]) from None
        try:
            node = loader.get_single_node()
            builder = _Builder(loader)
            data = None if node is None else builder.value(node, ())
        except _Refused as exc:
            raise ConfigError(path=path, problems=[f"{path}:{exc.line}: {exc.reason}"]) from None
        except yaml.YAMLError as exc:
            raise ConfigError(path=path, problems=[_yaml_problem(path, exc)]) from None
        finally:
            loader.dispose()
        document = cls(path, {} if data is None else data, builder.lines, builder.keys)
        if builder.problems:
            problems = [document.problem(loc, text, line=line) for loc, text, line in builder.problems]
            raise document.fail(problems)
        return document

    def line_of(self, loc: Loc) -> int | None:
        """Return the line of the deepest key of ``loc`` that exists in the file."""
        for end in range(len(loc), -1, -1):
            line = self._lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str, *, line: int | None = None) -> str:
        """Format one problem as ``file:line: `key.path`: message``.

        A key of the file that is not a plain name (:func:`plain_name`) is
        described by its line instead, and the path stops there:
        ``file:1: an unknown key at line 1`` or ``file:3: the key at line 3
        under `tenants`: ...``. Parts of ``loc`` that the file does not hold
        (a missing field, a union member's tag) come from the schema.

        Args:
            loc: The key path.
            message: What is wrong.
            line: The line to name, when it is not the line of ``loc``.
        """
        line = self.line_of(loc) if line is None else line
        where = f"{self.path}:{line}" if line is not None else self.path
        shown, hidden = self._key_path(loc)
        if hidden is None:
            return f"{where}: `{'.'.join(shown) or '(top level)'}`: {message}"
        under = f" under `{'.'.join(shown)}`" if shown else ""
        if message == "unknown key":
            return f"{where}: an unknown key at line {hidden}{under}"
        return f"{where}: the key at line {hidden}{under}: {message}"

    def validate(
        self, model: type[M], data: Any, loc: Loc = (), *, context: Mapping[str, Any] | None = None
    ) -> tuple[M | None, list[str]]:
        """Validate ``data`` (found at ``loc`` in the file) as ``model``.

        Args:
            model: The pydantic model.
            data: Part of :attr:`data`.
            loc: Where ``data`` is in the file.
            context: Passed to the model's validators (pydantic's validation context).

        Returns:
            The model instance, or ``None`` with the formatted problems.
        """
        try:
            return model.model_validate(data, context=context), []
        except ValidationError as exc:
            return None, [
                self.problem(loc + tuple(e["loc"]), _message(e)) for e in exc.errors(include_input=False)
            ]

    def fail(self, problems: Sequence[str]) -> ConfigError:
        """Build the one error that lists ``problems``."""
        return ConfigError(path=self.path, problems=problems)

    def _key_path(self, loc: Loc) -> tuple[list[str], int | None]:
        """The printable parts of ``loc``, and the line of the first key that may not be printed."""
        shown: list[str] = []
        found: Loc = ()
        for part in loc:
            here = (*found, part)
            if here in self._lines:
                found = here
                if here in self._keys and plain_name(part) is None:
                    return shown, self._lines[here]
                shown.append(str(part))
            elif plain_name(part) is not None or type(part) is int:
                shown.append(str(part))
        return shown, None


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping"
    return str(error["msg"])


def _too_large(path: str) -> ConfigError:
    limit = f"{MAX_BYTES // (1 << 20)} MiB"
    return ConfigError(path=path, problems=[f"{path}: larger than {limit}: not a configuration file"])


def _yaml_problem(path: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML syntax error, without the snippet of the file PyYAML adds."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else path
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and mark is not None and context_mark.line != mark.line:
        context = f"{context} (line {context_mark.line + 1})"
    parts = [context, getattr(exc, "problem", None)]
    detail = ": ".join(_without_content(p) for p in parts if p)
    return f"{where}: not valid YAML: {detail}" if detail else f"{where}: not valid YAML"


def _without_content(text: str) -> str:
    """PyYAML's message with the quoted text it took from the file left out.

    Quoted YAML words (``'<block end>'``, ``','``) stay; anything else quoted
    (a character, an alias, a tag) came from the file and is dropped.
    """
    kept = _QUOTED.sub(lambda m: m[0] if _YAML_WORD.fullmatch(m[0][1:-1]) else "", text)
    return re.sub(r"\s+", " ", kept).replace(" ,", ",").replace(" ;", ";").strip()


class _Refused(Exception):
    """The file passes a limit, or holds something this loader does not read."""

    def __init__(self, reason: str, mark: yaml.Mark) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = mark.line + 1


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that bounds nesting and alias expansion while it composes.

    Each node's expanded size (itself and everything under it, an alias
    counting as the whole node it names) and height are known when the node
    is finished, so an alias costs one look-up: the document's total is
    checked against :data:`MAX_NODES` as it grows, and the depth an alias
    reaches against :data:`MAX_DEPTH`. An alias to a node that is not finished
    (a recursive structure) is refused.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0
        self._total = 0
        self._shape: dict[yaml.Node, tuple[int, int]] = {}  # node -> (expanded size, height)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node, refusing it past :data:`MAX_DEPTH` or :data:`MAX_NODES`."""
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            shape = None if node is None else self._shape.get(node)
            if shape is None:
                raise _Refused("an alias refers to the mapping or sequence that holds it", mark)
            self._add(shape[0], self._depth + shape[1], mark)
            return node
        self._depth += 1
        self._add(0, self._depth, mark)
        before = self._total
        node = super().compose_node(parent, index)
        self._depth -= 1
        self._add(1, 0, mark)
        if node is not None:
            self._shape[node] = (self._total - before, 1 + max(map(self._height, _children(node)), default=0))
        return node

    def _height(self, node: yaml.Node) -> int:
        return self._shape[node][1]

    def _add(self, size: int, depth: int, mark: yaml.Mark) -> None:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels", mark)
        self._total += size
        if self._total > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values once aliases are expanded", mark)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _Builder:
    """Plain Python values and the line of each key path, from one composed node tree.

    Attributes:
        lines: The line of each key path.
        keys: The key paths that end in a mapping key.
        problems: ``(key path, message, line)`` of each key given twice, each
            key that is not a scalar and each merge (``<<``) of something
            other than mappings; the key path is the mapping's.
    """

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self._loader = loader
        self.lines: dict[Loc, int] = {}
        self.keys: set[Loc] = set()
        self.problems: list[tuple[Loc, str, int]] = []

    def value(self, node: yaml.Node, loc: Loc) -> Any:
        """The value of ``node`` found at ``loc``, recording the lines beneath it."""
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP_TAG:
                raise _Refused("a tagged mapping (`!!set`, ...); write a plain mapping", node.start_mark)
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise _Refused("a tagged sequence (`!!omap`, ...); write a plain list", node.start_mark)
            return [self.value(item, (*loc, index)) for index, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        own, merged = self._pairs(node, loc)
        result: dict[Any, Any] = {}
        given: dict[Any, int] = {}
        for key_node, value_node in own:
            key, line = self._scalar(key_node), key_node.start_mark.line + 1
            here = (*loc, key)
            if key in given:
                name = mention(key).strip() or "a key"
                self.problems.append((loc, f"{name} given at line {given[key]} and at line {line}", line))
            given[key] = line
            self.lines[here] = line
            self.keys.add(here)
            result[key] = self.value(value_node, here)
        for key_node, value_node in merged:  # merged keys never override the mapping's own
            key = self._scalar(key_node)
            if key not in result:
                here = (*loc, key)
                self.lines[here] = key_node.start_mark.line + 1
                self.keys.add(here)
                result[key] = self.value(value_node, here)
        return result

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> tuple[list[Any], list[Any]]:
        """The mapping's own ``(key, value)`` node pairs, and those its merge keys (``<<``) bring."""
        own, merged = [], []
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self.lines.setdefault(loc, line)
                self.problems.append((loc, "a key that is a mapping or a list; keys are names", line))
            elif key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    if isinstance(source, yaml.MappingNode) and source.tag == _MAP_TAG:
                        source_own, source_merged = self._pairs(source, loc)
                        merged += source_own + source_merged
                    else:
                        self.problems.append((loc, "a merge key (`<<`) takes mappings only", line))
            else:
                own.append((key_node, value_node))
        return own, merged

    def _scalar(self, node: yaml.Node) -> Any:
        try:
            value = self._loader.construct_object(node)
        except (ValueError, OverflowError):  # an integer of thousands of digits, a 13th month
            raise _Refused("a number or date that cannot be read", node.start_mark) from None
        return value
