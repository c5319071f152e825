"""Building config dataclasses from plain mappings (YAML, JSON, CLI flags) with clear errors.

Every config in the package (`ModelConfig`, `TrainingConfig`, the training
script's `RunConfig` sections) is a frozen dataclass whose `__post_init__`
checks its values. `from_mapping` adds the check that no key is unknown, and
suggests the closest field for a misspelled one, so a typo in a YAML file is
an error rather than a silently ignored setting.

`read_config` and `parse_config_text` read the YAML or JSON text these mappings come
from, as plain data within bounds (`MAX_CONFIG_BYTES`, `MAX_ALIASES`, `MAX_VALUES`,
`MAX_DEPTH`): a config file is input like any other, and one built to exhaust memory
(nested YAML aliases, deep nesting) is refused with an error naming the file and line.
`in_file` makes an error of the dataclasses name the file and line of the key.

Example:

>>> import dataclasses
>>> @dataclasses.dataclass(frozen=True)
... class Sizes:
...     batch_size: int = 8
>>> from_mapping(Sizes, {"batch_size": 16})
Sizes(batch_size=16)
>>> from_mapping(Sizes, {"batchsize": 16})
Traceback (most recent call last):
...
tfrec_video.errors.ConfigError: Sizes: unknown field 'batchsize' (did you mean 'batch_size'?).
"""

import dataclasses
import datetime
import difflib
import json
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Type, TypeVar

import yaml

from tfrec_video.errors import ConfigError, shorten

T = TypeVar("T")


def field_names(cls) -> list:
    """The field names of a dataclass type, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def check_known(keys, allowed, where: str) -> None:
    """Raises `ConfigError` naming each key of `keys` not in `allowed`, with the closest allowed one."""
    allowed = list(allowed)
    unknown = [k for k in keys if k not in allowed]
    if unknown:
        hints = []
        for key in unknown[:5]:  # a few, with hints: a file of 10,000 stray keys needs no 10,000 suggestions
            close = difflib.get_close_matches(str(key), allowed, 1)
            hints.append(f"{shorten(key)} (did you mean {close[0]!r}?)" if close else shorten(key))
        if len(unknown) > 5:
            hints.append(f"and {len(unknown) - 5} more")
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(f"{where}: unknown field{plural} {', '.join(hints)}.")


def from_mapping(cls: Type[T], values: Mapping, where: str = "") -> T:
    """`cls(**values)` after checking that every key is one of `cls`'s fields.

    Args:
      cls: a dataclass type.
      values: field values by name.
      where: how the error names the section (default the class name), e.g. `"cfg.yaml: model"`.

    Returns:
      The dataclass instance (its own `__post_init__` checks the values).

    Raises:
      ConfigError: `values` is not a mapping, or names a field `cls` lacks.
    """
    where = where or cls.__name__
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of field names to values, got {type(values).__name__} "
                          f"{shorten(values)}.")
    check_known(values, field_names(cls), where)
    try:
        return cls(**dict(values))
    except TypeError as error:  # e.g. a value of a type the dataclass cannot compare
        raise ConfigError(f"{where}: {error}") from None


# Bounds on a config file or a `--set` value. A run config holds a few hundred values; these refuse
# input built to exhaust memory or time before anything walks it: `yaml.safe_load` builds aliases as
# shared references, so a 700-byte "billion laughs" of nested aliases loads instantly and explodes only
# when the values are copied, compared or quoted in an error message.
MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_VALUES = 10_000
MAX_DEPTH = 32
_LIMITS = (f"a config may hold at most {MAX_ALIASES} aliases, {MAX_VALUES} values once aliases are expanded "
           f"and {MAX_DEPTH} levels of nesting")


class _Refused(Exception):
    """A bound of the loader was crossed, at `mark` (a YAML mark, or None)."""

    def __init__(self, reason: str, mark=None):
        super().__init__(reason)
        self.reason, self.mark = reason, mark


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (no tags, no Python objects) that counts aliases and nesting while composing."""

    def __init__(self, stream):
        super().__init__(stream)
        self.aliases = 0
        self.nodes = 0
        self.depth = 0

    def compose_node(self, parent, index):
        # Counted on the events, before a node exists: nothing is expanded yet.
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(f"more than {MAX_ALIASES} aliases (*name)", self.peek_event().start_mark)
        else:  # stop early: pure-Python parsing of a huge file is slow even when it is harmless
            self.nodes += 1
            if self.nodes > MAX_VALUES:
                raise _Refused(f"more than {MAX_VALUES} values", self.peek_event().start_mark)
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _measure(node, level: int, memo: dict, active: set) -> Tuple[int, int]:
    """`(values, height)` of `node` with its aliases expanded, refusing a cycle or a bound crossed.

    Memoised by node, so a shared node is measured once: the cost is that of the file, not of its expansion.
    """
    if id(node) in active:
        raise _Refused("an alias refers to a value that contains it", node.start_mark)
    if id(node) not in memo:
        if level > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded", node.start_mark)
        active.add(id(node))
        measured = [_measure(child, level + 1, memo, active) for child in _children(node)]
        active.discard(id(node))
        memo[id(node)] = (1 + sum(m[0] for m in measured), 1 + max((m[1] for m in measured), default=0))
    values, height = memo[id(node)]
    if values > MAX_VALUES:
        raise _Refused(f"more than {MAX_VALUES} values once its aliases are expanded (each use counts)",
                       node.start_mark)
    if level + height - 1 > MAX_DEPTH:
        raise _Refused(f"nested more than {MAX_DEPTH} levels deep once aliases are expanded", node.start_mark)
    return values, height


def _key_lines(node, prefix: tuple, lines: dict, level: int = 0) -> None:
    # The 1-based line of each mapping key, by its path, for errors that name a field (4 levels: tune.space.k.low).
    if not isinstance(node, yaml.MappingNode) or level >= 4:
        return
    for key, value in node.value:
        if isinstance(key, yaml.ScalarNode):
            path = prefix + (str(key.value),)
            lines.setdefault(".".join(path), key.start_mark.line + 1)
            _key_lines(value, path, lines, level + 1)


def _json_depth(value, level: int = 1) -> None:
    if level > MAX_DEPTH:
        raise _Refused(f"nested more than {MAX_DEPTH} levels deep")
    for child in value.values() if isinstance(value, dict) else value if isinstance(value, list) else ():
        _json_depth(child, level + 1)


def parse_config_text(text: str, source: str, json_format: bool = False) -> Tuple[Any, Dict[str, int]]:
    """Parses YAML (or JSON) config text as plain data, within the bounds above.

    Args:
      text: the file's (or a `--set` value's) text.
      source: how errors name it: the file path, or `--set key=value`.
      json_format: parse as JSON instead of YAML.

    Returns:
      `(value, lines)`: the parsed value (None for empty YAML), and the 1-based line of each
      mapping key by its dotted path (`{"model.embedding_dim": 4}`; YAML only).

    Raises:
      ConfigError: naming `source` and the line, for text that is not valid YAML/JSON, uses a tag,
        or crosses a bound (aliases, expanded size, nesting).
    """
    kind = "JSON" if json_format else "YAML"
    lines: Dict[str, int] = {}
    try:
        if json_format:
            value = json.loads(text)
            _json_depth(value)
            return value, lines
        loader = _BoundedLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, lines
            _measure(node, 1, {}, set())
            _key_lines(node, (), lines)
            return loader.construct_document(node), lines
        finally:
            loader.dispose()
    except _Refused as refused:
        where = f", line {refused.mark.line + 1}" if refused.mark is not None else ""
        raise ConfigError(f"{source}{where}: refused: {refused.reason}; {_LIMITS}.") from None
    except RecursionError:
        raise ConfigError(f"{source}: refused: nested more than {MAX_DEPTH} levels deep; {_LIMITS}.") from None
    except (yaml.YAMLError, ValueError) as error:  # ValueError: JSON syntax, or an integer of 4300+ digits
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f", line {mark.line + 1}, column {mark.column + 1}"
        elif isinstance(error, json.JSONDecodeError):
            where = f", line {error.lineno}, column {error.colno}"
        else:
            where = ""
        first = (str(getattr(error, "problem", None) or error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{source}{where}: not valid {kind}: {first[:300]}.") from None


def read_config_text(path: str) -> str:
    """The text of a config file, refusing a missing, unreadable, non-UTF-8 or over-`MAX_CONFIG_BYTES` one.

    Raises:
      ConfigError: naming `path` (and the line of a byte that is not UTF-8).
    """
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise ConfigError(f"the config file {shorten(str(path))} {what}.")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file: {error.strerror or error}.") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: refused: the config file is over {MAX_CONFIG_BYTES} bytes (a run config is a "
                          "few kilobytes); is it the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte {raw[error.start]:#04x} at offset "
                          f"{error.start}).") from None


def read_config(path: str) -> Tuple[Any, Dict[str, int]]:
    """`parse_config_text` of the file at `path` (`.json` as JSON, anything else as YAML)."""
    return parse_config_text(read_config_text(path), str(path), json_format=str(path).endswith(".json"))


def plain_copy(value, path: Tuple[str, ...] = ()):
    """A deep copy of parsed config data as JSON types: what YAML gives beyond them is converted or refused.

    Args:
      value: parsed YAML/JSON data.
      path: the keys above `value`, for the error message.

    Returns:
      The copy: a YAML date (`output_dir: 2024-01-01`, meant as text) becomes its ISO text, a `!!set`
      a sorted list, keys become strings as in JSON (`1` -> `"1"`, `true` -> `"true"`).

    Raises:
      ConfigError: naming the key path, for a value with no JSON form (`!!binary` bytes).
    """
    where = ".".join(path) or "the config"
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, bool) or key is None:
                key = json.dumps(key)
            elif isinstance(key, (datetime.date, datetime.datetime)):
                key = key.isoformat()
            elif isinstance(key, (int, float)):
                key = str(key)
            elif not isinstance(key, str):
                raise ConfigError(f"{where}: a key must be text, got {type(key).__name__} {shorten(key)}.")
            out[key] = plain_copy(item, path + (key,))
        return out
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)
    if isinstance(value, (list, tuple)):
        return [plain_copy(item, path + (str(i),)) for i, item in enumerate(value)]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise ConfigError(f"{where}: a config value must be plain data (text, numbers, lists, mappings), got "
                      f"{type(value).__name__} {shorten(value)}.")


# How the dataclasses name themselves in their errors, and the run config section each one is.
_CLASS_SECTIONS = {"ModelConfig.": "model.", "TrainingConfig.": "training."}


def line_of(message: str, lines: Mapping[str, int]) -> Optional[int]:
    """The line of the config key an error message names, or None.

    Args:
      message: a `ConfigError` message: `"model.embedding_dim must be ..."`, `"ModelConfig.x ..."` or
        `"...: model: unknown field 'x' ..."`.
      lines: the dotted key paths and lines from `parse_config_text`.

    Returns:
      The 1-based line of the longest key path the message names.
    """
    unknown = re.search(r"([\w.]*): unknown fields? '([^']+)'", message)
    if unknown:
        for key in (f"{unknown.group(1)}.{unknown.group(2)}", unknown.group(2)):
            if key in lines:
                return lines[key]
    for name, section in _CLASS_SECTIONS.items():
        message = message.replace(name, section)
    for key in sorted(lines, key=len, reverse=True):
        # A dotted path anywhere (`model.embedding_dim`); a top-level key only where the message starts
        # (`strategy must be ...`), since a bare word like `data` also occurs in prose.
        pattern = rf"(?<![\w.]){re.escape(key)}(?![\w])" if "." in key else rf"^{re.escape(key)}(?![\w])"
        if re.search(pattern, message):
            return lines[key]
    return None


def in_file(error: ConfigError, path: Optional[str], lines: Mapping[str, int]) -> ConfigError:
    """`error` naming `path` and the line of the key it is about (as it is when it names them already)."""
    text, path = str(error), None if path is None else str(path)
    if path is None or text.startswith(f"{path}, line "):
        return error
    if text.startswith(f"{path}: "):  # named the file (a section's `where`), not the line
        text = text[len(path) + 2:]
    line = line_of(text, lines)
    return ConfigError(f"{path}{'' if line is None else f', line {line}'}: {text}")
