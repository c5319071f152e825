"""Building config dataclasses from plain mappings (YAML, JSON, CLI flags) with clear errors.

Every config in the package (`ModelConfig`, `TrainingConfig`, the training
script's `RunConfig` sections) is a frozen dataclass whose `__post_init__`
checks its values. `from_mapping` adds the check that no key is unknown, and
suggests the closest field for a misspelled one, so a typo in a YAML file is
an error rather than a silently ignored setting.

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
import difflib
from typing import Mapping, Type, TypeVar

from tfrec_video.errors import ConfigError

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
        for key in unknown:
            close = difflib.get_close_matches(str(key), allowed, 1)
            hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
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
                          f"{values!r}.")
    check_known(values, field_names(cls), where)
    try:
        return cls(**dict(values))
    except TypeError as error:  # e.g. a value of a type the dataclass cannot compare
        raise ConfigError(f"{where}: {error}") from None
