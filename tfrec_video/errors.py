"""Errors that tell the user which file, line or row and feature is wrong, and what was expected.

Every message is cut to `MAX_MESSAGE` characters, and `shorten` cuts a quoted value, so a
hostile or runaway input (a YAML alias bomb, a 10 MB string cell) cannot blow up a log line.
"""

from typing import Any, Optional

# The longest message an error of this package carries; what is cut is counted, not lost silently.
MAX_MESSAGE = 2000
# The longest single value quoted in a message.
MAX_QUOTED = 200


def shorten(value: Any, limit: int = MAX_QUOTED) -> str:
    """`repr(value)`, cut to about `limit` characters with a count of what was cut.

    Args:
      value: anything to quote in an error message.
      limit: the most characters of the `repr` kept.

    Returns:
      The `repr`, whole when it fits, else its head plus `... (N more characters)`.

    Example:

    >>> shorten("abc")
    "'abc'"
    >>> shorten("x" * 500, limit=10)
    "'xxxxxxxxx... (492 more characters)"
    """
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def first_line(error: BaseException, limit: int = 300, last: bool = False) -> str:
    """One line of an exception's message, for quoting a library's error inside ours.

    TensorFlow's messages run to many lines (a stack of ops, sometimes the raw record),
    so only one line is quoted. `OpError.message` is preferred over `str(error)`, which
    repeats the op's traceback.

    Args:
      error: the exception caught.
      limit: the most characters kept; a longer line ends in `...`.
      last: quote the last line instead of the first (decoders put the cause last).

    Returns:
      The line, or the exception's type name when the message is empty.

    Example:

    >>> first_line(ValueError("bad shape\n  in op Foo"))
    'bad shape'
    >>> first_line(ValueError("context\nthe cause"), last=True)
    'the cause'
    """
    lines = str(getattr(error, "message", None) or error).strip().splitlines()
    line = (lines[-1] if last else lines[0]) if lines else type(error).__name__
    return line if len(line) <= limit else line[:limit] + "..."


def _cut(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE} more characters cut)"


class DataValidationError(ValueError):
    """Bad input data: names the file, the line or row, the feature and what was expected.

    Args:
      message: what is wrong, in words.
      file: the path of the offending file, if any.
      row: the 0-based row (record) index inside `file`, if known: for Parquet and
        TFRecord files, whose rows have no line an editor shows.
      feature: the offending feature (column) name, if any.
      expected: what was expected instead.
      line: the 1-based line number an editor shows (text files such as CSV, the
        header being line 1); given instead of `row`.

    Example:

    >>> str(DataValidationError("NaN value", file="cat.parquet", row=3, feature="image_embedding",
    ...                         expected="finite float32 values"))
    "cat.parquet, row 3: feature 'image_embedding': NaN value (expected finite float32 values)"
    >>> str(DataValidationError("not a number", file="train.csv", line=2, feature="hour"))
    "train.csv, line 2: feature 'hour': not a number"
    """

    def __init__(self, message: str, *, file: Optional[str] = None, row: Optional[int] = None,
                 feature: Optional[str] = None, expected: Optional[str] = None, line: Optional[int] = None):
        self.file = None if file is None else str(file)
        self.row = row
        self.line = line
        self.feature = feature
        self.expected = expected
        self.reason = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if line is not None:
            where.append(f"line {line}")
        elif row is not None:
            where.append(f"row {row}")
        text = ", ".join(where)
        if feature is not None:
            text = f"{text}: feature {feature!r}" if text else f"feature {feature!r}"
        text = f"{text}: {message}" if text else message
        if expected:
            text += f" (expected {expected})"
        super().__init__(_cut(text))


class ConfigError(ValueError):
    """A bad configuration value: names the field and what was expected (the message cut to `MAX_MESSAGE`)."""

    def __init__(self, message: str = "", *args):
        super().__init__(_cut(str(message)), *args)
