"""Checks shared by every file format, so that TFRecord, Parquet and CSV agree.

Each reader turns a batch of rows into one *ragged column* per feature: a flat
array of `values` and, for vectors and lists, the number of values each row has
(`lengths`). The checks below run on that form, vectorised with numpy, so they
cost little even on millions of rows, and they report the first bad row:

* the file's columns: required ones present, no unknown ones (with a "did you
  mean" hint), no duplicates;
* a scalar has exactly one value a row, a vector exactly `length`, a list at
  most `length`;
* float values are finite (no NaN or infinity);
* values lie in the feature's documented range (`Feature.min_value`,
  `max_value`, `non_empty`: `clicked` 0 or 1, `hour` 0 to 23, ...).

Writers use `normalize_columns` to turn what the user passes (numpy arrays,
Python lists, padded 2-D arrays) into the same ragged form, so a file that
`write_table` accepts is a file that `read_table` accepts.

Every problem is raised as `tfrec_video.errors.DataValidationError`, which names
the file, the 0-based row inside that file, the feature and what was expected.
"""

import difflib
import itertools
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from tfrec_video.data.schema import Feature, TableSchema
from tfrec_video.errors import DataValidationError, shorten


class RaggedColumn(NamedTuple):
    """One feature over a batch of rows.

    `values` holds every value of every row, in row order: an object array of
    `str` (string features) or `bytes` (bytes features), or an int64 / float32
    array. `lengths[i]` is how many of them row `i` has; `None` means one value
    a row (scalar columns whose reader already guarantees that).
    """

    values: np.ndarray
    lengths: Optional[np.ndarray]


# --------------------------------------------------------------------------
# Column names.
# --------------------------------------------------------------------------


def check_column_names(file: str, names: Sequence[str], schema: TableSchema) -> TableSchema:
    """Checks a file's column names against `schema`.

    Args:
      file: the file the names come from (for messages).
      names: the columns the file has.
      schema: the table schema.

    Returns:
      `schema.select(names)`: the features this file provides, in schema order.

    Raises:
      DataValidationError: on a duplicate or unknown column, or a missing
        required one.
    """
    seen = set()
    for name in names:
        if name in seen:
            raise DataValidationError(
                "the column appears more than once", file=file, feature=name,
                expected="each column once")
        seen.add(name)
    for name in names:
        if name not in schema:
            close = difflib.get_close_matches(name, schema.names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataValidationError(
                f"unknown column, not in the {schema.name!r} schema{hint}", file=file, feature=name,
                expected=f"one of {schema.names}")
    for name in schema.required:
        if name not in seen:
            raise DataValidationError(
                "required column is missing", file=file, feature=name,
                expected=schema[name].describe())
    return schema.select(names)


# --------------------------------------------------------------------------
# Values.
# --------------------------------------------------------------------------


def row_of_value(lengths: Optional[np.ndarray], value_index: int) -> int:
    """The row that holds flat value number `value_index`."""
    if lengths is None:
        return int(value_index)
    return int(np.searchsorted(np.cumsum(lengths), value_index, side="right"))


def check_values(feature: Feature, column: RaggedColumn, *, file: Optional[str], row_offset: int = 0) -> None:
    """Checks value counts and finiteness of one feature over a batch of rows.

    Args:
      feature: the feature.
      column: its values in ragged form.
      file: the file they come from, for messages.
      row_offset: index (within `file`) of the batch's first row.

    Raises:
      DataValidationError: naming the first bad row.
    """
    values, lengths = column
    if lengths is not None:
        lengths = np.asarray(lengths)
        if feature.kind == "scalar":
            bad = np.nonzero(lengths != 1)[0]
            if bad.size:
                row = int(bad[0])
                got = int(lengths[row])
                msg = "missing value" if got == 0 else f"has {got} values"
                raise DataValidationError(msg, file=file, row=row_offset + row, feature=feature.name,
                                          expected=feature.describe())
        elif feature.kind == "vector":
            bad = np.nonzero(lengths != feature.length)[0]
            if bad.size:
                row = int(bad[0])
                raise DataValidationError(
                    f"wrong vector length: expected {feature.length} values, got {int(lengths[row])}",
                    file=file, row=row_offset + row, feature=feature.name, expected=feature.describe())
        else:
            bad = np.nonzero(lengths > feature.length)[0]
            if bad.size:
                row = int(bad[0])
                raise DataValidationError(
                    f"list too long: {int(lengths[row])} values, at most {feature.length} allowed",
                    file=file, row=row_offset + row, feature=feature.name, expected=feature.describe())
    if feature.dtype == "float32" and values.size:
        finite = np.isfinite(values)
        if not finite.all():
            index = int(np.argmin(finite))
            what = "NaN" if np.isnan(values[index]) else "infinite"
            raise DataValidationError(
                f"{what} value", file=file, row=row_offset + row_of_value(lengths, index), feature=feature.name,
                expected="finite float32 values")
    check_range(feature, column, file=file, row_offset=row_offset)


def check_range(feature: Feature, column: RaggedColumn, *, file: Optional[str], row_offset: int = 0) -> None:
    """Checks that every value of one feature lies in its documented range.

    A label of 2 or -1, an hour of 24 or a negative duration reads and trains
    without any error from TensorFlow (a `clicked` of 2 makes the loss go
    negative and keep falling), so the schema's bounds are checked here, where
    every reader and writer passes.

    Args:
      feature: the feature, with its `min_value`, `max_value` and `non_empty`.
      column: its values in ragged form.
      file: the file they come from, for messages.
      row_offset: index (within `file`) of the batch's first row.

    Raises:
      DataValidationError: naming the first row with a value out of range.
    """
    values, lengths = column
    if not values.size:
        return
    about = f" — {feature.description}" if feature.description else ""
    if feature.non_empty:
        if values.dtype.kind in "US":
            empty = np.char.str_len(values) == 0
        else:  # Object arrays of `str` (or `bytes`): `==` compares element by element.
            empty = (values == "") | (values == b"")
        if empty.any():
            index = int(np.argmax(empty))
            raise DataValidationError(
                "empty value", file=file, row=row_offset + row_of_value(lengths, index), feature=feature.name,
                expected=f"a non-empty {feature.dtype}{about}")
        return
    if feature.min_value is None and feature.max_value is None:
        return
    low = -np.inf if feature.min_value is None else feature.min_value
    high = np.inf if feature.max_value is None else feature.max_value
    outside = (values < low) | (values > high)
    if outside.any():
        index = int(np.argmax(outside))
        value = values[index]
        raise DataValidationError(
            f"value {shorten(value.item() if hasattr(value, 'item') else value)} is out of range",
            file=file, row=row_offset + row_of_value(lengths, index), feature=feature.name,
            expected=f"a value {feature.describe_range()}{about}")


def to_dense(feature: Feature, column: RaggedColumn, *, file: Optional[str] = None, row_offset: int = 0) -> np.ndarray:
    """Turns a ragged column into the array a reader yields.

    Scalars give shape `[n]`, vectors `[n, length]`, lists `[n, length]` padded
    on the right with `feature.pad`. Counts that cannot be made dense raise,
    even when the caller skipped validation.
    """
    values, lengths = column
    if lengths is None:
        if feature.kind != "scalar":
            raise ValueError(f"{feature.name}: a {feature.kind} column needs row lengths")
        return values
    lengths = np.asarray(lengths, dtype=np.int64)
    n = lengths.shape[0]
    if feature.kind == "scalar":
        if not np.all(lengths == 1):
            check_values(feature, RaggedColumn(values[:0], lengths), file=file, row_offset=row_offset)
        return values
    if feature.kind == "vector":
        if not np.all(lengths == feature.length):
            check_values(feature, RaggedColumn(values[:0], lengths), file=file, row_offset=row_offset)
        return values.reshape(n, feature.length)
    if n and lengths.max() > feature.length:
        check_values(feature, RaggedColumn(values[:0], lengths), file=file, row_offset=row_offset)
    if feature.numpy_dtype is object:
        dense = np.empty((n, feature.length), dtype=object)
        dense[...] = feature.pad
    else:
        dense = np.full((n, feature.length), feature.pad, dtype=feature.numpy_dtype)
    if values.size:
        rows = np.repeat(np.arange(n), lengths)
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(values.shape[0]) - np.repeat(starts, lengths)
        dense[rows, cols] = values
    return dense


def batch_to_dense(schema: TableSchema, columns: Mapping[str, RaggedColumn], *, file: Optional[str],
                   row_offset: int, validate: bool) -> Dict[str, np.ndarray]:
    """Validates (optionally) and densifies every column of one batch."""
    out = {}
    for feature in schema:
        column = columns[feature.name]
        if validate:
            check_values(feature, column, file=file, row_offset=row_offset)
        out[feature.name] = to_dense(feature, column, file=file, row_offset=row_offset)
    return out


# --------------------------------------------------------------------------
# Normalising what a user passes to `write_table`.
# --------------------------------------------------------------------------


class _BadValue(Exception):
    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index
        self.message = message


def _type_name(value: Any) -> str:
    return type(value).__name__


def _convert_flat(feature: Feature, values: Any) -> np.ndarray:
    """Converts a flat sequence of one feature's values to its numpy dtype.

    Raises `_BadValue(index, message)` for the first value of the wrong type.
    """
    dtype = feature.dtype
    arr = values if isinstance(values, np.ndarray) else None
    if dtype in ("int64", "float32"):
        if arr is None:
            try:
                arr = np.asarray(values)
            except (ValueError, TypeError):
                arr = np.empty(len(values), dtype=object)
                arr[:] = list(values)
            if arr.ndim != 1:
                raise _BadValue(0, f"got a nested sequence {values[0]!r}, not a number")
        if arr.dtype.kind in "iub" or (dtype == "float32" and arr.dtype.kind == "f"):
            if dtype == "int64" and arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
                raise _BadValue(int(np.argmax(arr > np.iinfo(np.int64).max)), "integer does not fit in int64")
            # Doubles beyond float32 range become inf here; the finite check then names the row.
            with np.errstate(over="ignore"):
                return arr.astype(np.int64 if dtype == "int64" else np.float32).reshape(-1)
        if arr.dtype.kind == "f" and arr.size:
            raise _BadValue(0, f"got a float value {arr.reshape(-1)[0]!r}")
        # Mixed or non-numeric input: check value by value, on the values as given
        # (np.asarray would have turned [0, "yes"] into strings).
        seq = values if not isinstance(values, np.ndarray) else arr.reshape(-1).tolist()
        out = np.empty(len(seq), dtype=np.int64 if dtype == "int64" else np.float32)
        numeric = (int, np.integer, bool, np.bool_) if dtype == "int64" else (int, float, np.integer, np.floating,
                                                                               bool, np.bool_)
        for i, v in enumerate(seq):
            if v is None:
                raise _BadValue(i, "missing value (None)")
            if not isinstance(v, numeric):
                raise _BadValue(i, f"got {_type_name(v)} {v!r}")
            try:
                with np.errstate(over="ignore"):
                    out[i] = v
            except OverflowError:
                raise _BadValue(i, f"value {v!r} does not fit in {dtype}") from None
        return out
    # string / bytes: object arrays of str / bytes.
    if arr is not None and arr.dtype.kind == "U" and dtype == "string":
        return arr.reshape(-1).astype(object)
    if arr is not None and arr.dtype.kind == "S" and dtype == "bytes":
        return arr.reshape(-1).astype(object)
    seq = arr.reshape(-1) if arr is not None else values
    out = np.empty(len(seq), dtype=object)
    # Fast path: every value already has the right type (checked at C speed).
    if set(map(type, seq)) <= ({str} if dtype == "string" else {bytes}):
        out[:] = seq
        return out
    for i, v in enumerate(seq):
        if dtype == "string":
            if isinstance(v, str):
                out[i] = str(v)
            elif isinstance(v, (bytes, bytearray, memoryview)):
                try:
                    out[i] = bytes(v).decode("utf-8")
                except UnicodeDecodeError:
                    raise _BadValue(i, "bytes that are not valid UTF-8 text") from None
            elif v is None:
                raise _BadValue(i, "missing value (None)")
            else:
                raise _BadValue(i, f"got {_type_name(v)} {v!r}")
        else:
            if isinstance(v, (bytes, bytearray, memoryview)):
                out[i] = bytes(v)
            elif v is None:
                raise _BadValue(i, "missing value (None)")
            else:
                raise _BadValue(i, f"got {_type_name(v)}; bytes features take bytes (encoded media), not text"
                                if isinstance(v, str) else f"got {_type_name(v)}")
    return out


def _normalize_column(feature: Feature, values: Any, *, file: Optional[str]) -> RaggedColumn:
    name = feature.name

    def fail(row, message):
        raise DataValidationError(message, file=file, row=row, feature=name, expected=feature.describe())

    bad: Optional[_BadValue] = None

    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        fail(None, f"expected one entry per row (an array or list), got {_type_name(values)}")
    if isinstance(values, np.ndarray) and values.ndim > 2:
        fail(None, f"expected a 1-D or 2-D array, got shape {values.shape}")

    if feature.kind == "scalar":
        if isinstance(values, np.ndarray) and values.ndim != 1:
            fail(None, f"a scalar column must be 1-D, got shape {values.shape}")
        try:
            flat = _convert_flat(feature, values)
        except _BadValue as e:
            bad = e
        if bad is not None:  # Raised outside `except`, so no chained internal exception.
            fail(bad.index, bad.message)
        if flat.shape[0] != len(values):
            fail(None, "a scalar column takes one value per row, got nested sequences")
        return RaggedColumn(flat, None)

    # Vectors and lists.
    if isinstance(values, np.ndarray) and values.ndim == 2:
        n, width = values.shape
        if feature.kind == "list":
            # A padded 2-D array: trailing pad values are padding, not data.
            if feature.dtype in ("string", "bytes"):
                if values.dtype.kind in "US":
                    mask = np.char.str_len(values) > 0
                else:
                    mask = (values != "") & (values != b"")
            else:
                mask = values != feature.pad
            lengths = np.where(mask.any(axis=1), width - np.argmax(mask[:, ::-1], axis=1), 0).astype(np.int64)
            keep = np.arange(width)[None, :] < lengths[:, None]
            flat_in = values[keep]
        else:
            lengths = np.full(n, width, dtype=np.int64)
            flat_in = values.reshape(-1)
    else:
        rows = list(values) if not isinstance(values, np.ndarray) else values.tolist() if values.dtype != object \
            else list(values)
        if set(map(type, rows)) <= {list, tuple}:  # Fast path for the common ragged input.
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            flat_in = list(itertools.chain.from_iterable(rows))
        else:
            lengths = np.empty(len(rows), dtype=np.int64)
            flat_in = []
            for i, row in enumerate(rows):
                if row is None:
                    fail(i, "missing value (None); write an empty list instead" if feature.kind == "list"
                         else "missing value (None)")
                if isinstance(row, (str, bytes)) or not hasattr(row, "__len__"):
                    fail(i, f"expected a sequence of values for this row, got {_type_name(row)}")
                row = row.tolist() if isinstance(row, np.ndarray) else row
                lengths[i] = len(row)
                flat_in.extend(row)
    try:
        flat = _convert_flat(feature, flat_in)
    except _BadValue as e:
        bad = e
    if bad is not None:
        fail(row_of_value(lengths, bad.index), bad.message)
    if flat.shape[0] != int(lengths.sum()):
        fail(None, "each row must be a flat sequence of values, got nested sequences")
    return RaggedColumn(flat, lengths)


def normalize_columns(columns: Mapping[str, Any], schema: TableSchema, *, file: Optional[str]
                      ) -> Tuple[int, Dict[str, RaggedColumn], TableSchema]:
    """Turns user-given columns into validated ragged columns, ready to write.

    Args:
      columns: feature name -> per-row values. Scalars: 1-D array or list.
        Vectors: 2-D `[n, length]` array or a list of sequences. Lists: a list
        of sequences (ragged) or a 2-D array padded with `feature.pad`.
      schema: the table schema.
      file: the destination, for messages.

    Returns:
      `(num_rows, {name: RaggedColumn}, sub_schema)` where `sub_schema` is the
      schema of the columns given, in schema order.

    Raises:
      DataValidationError: with the file, row and feature of the first problem.
    """
    if not isinstance(columns, Mapping):
        raise DataValidationError(f"columns must be a mapping of feature name to values, got "
                                  f"{_type_name(columns)}", file=file)
    sub = check_column_names(file, list(columns), schema)
    out: Dict[str, RaggedColumn] = {}
    num_rows = None
    first = None
    for feature in sub:
        column = _normalize_column(feature, columns[feature.name], file=file)
        n = column.values.shape[0] if column.lengths is None else column.lengths.shape[0]
        if num_rows is None:
            num_rows, first = n, feature.name
        elif n != num_rows:
            raise DataValidationError(
                f"has {n} rows but column {first!r} has {num_rows}", file=file, feature=feature.name,
                expected="the same number of rows in every column")
        check_values(feature, column, file=file)
        out[feature.name] = column
    if not num_rows:
        raise DataValidationError("no rows to write; an empty file is not a valid table", file=file,
                                  expected="at least one row")
    return num_rows, out, sub
