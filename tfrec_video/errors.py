"""Errors that tell the user which file, row and feature is wrong, and what was expected."""

from typing import Optional


class DataValidationError(ValueError):
    """Bad input data: names the file, the row (0-based, where known), the feature and what was expected.

    Args:
      message: what is wrong, in words.
      file: the path of the offending file, if any.
      row: the 0-based row (record) index inside `file`, if known.
      feature: the offending feature (column) name, if any.
      expected: what was expected instead.

    Example:

    >>> str(DataValidationError("NaN value", file="cat.parquet", row=3, feature="image_embedding",
    ...                         expected="finite float32 values"))
    "cat.parquet, row 3: feature 'image_embedding': NaN value (expected finite float32 values)"
    """

    def __init__(self, message: str, *, file: Optional[str] = None, row: Optional[int] = None,
                 feature: Optional[str] = None, expected: Optional[str] = None):
        self.file = None if file is None else str(file)
        self.row = row
        self.feature = feature
        self.expected = expected
        self.reason = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if row is not None:
            where.append(f"row {row}")
        text = ", ".join(where)
        if feature is not None:
            text = f"{text}: feature {feature!r}" if text else f"feature {feature!r}"
        text = f"{text}: {message}" if text else message
        if expected:
            text += f" (expected {expected})"
        super().__init__(text)


class ConfigError(ValueError):
    """A bad configuration value: names the field and what was expected."""
