"""CSV files: the format people open in a spreadsheet or write by hand.

Conventions:

* UTF-8 (a leading byte-order mark is ignored), a header row of column names,
  then one row per record. Cells are quoted the way Python's `csv` module
  quotes them, so text with commas, quotes, newlines or any script round-trips.
* scalars are written as text: `12`, `0.25`, `hello`. An empty cell is an empty
  string for `string` features and a missing value (an error) for numbers.
* a list feature (the watch `history`) joins its values with `|`, newest first:
  `v12|v7|v3`; an empty cell is an empty list. So a list of strings cannot hold
  `|` or an empty string; the writer refuses those.
* a vector (an embedding) joins its values with a space: `0.1 -0.5 2.0`.
* `bytes` features (encoded media) are base64 (standard alphabet, padded).
* floats are written in the shortest form that reads back as the same float32.

The Python `csv` module does the parsing (so reading costs Python time per row;
prefer TFRecord or Parquet for large tables). Paths may be local or use any
`tf.io.gfile` scheme.
"""

import base64
import binascii
import csv as _csv
import io as _io
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from tfrec_video.data import files as data_files
from tfrec_video.data.schema import Feature, TableSchema
from tfrec_video.data.validation import RaggedColumn, _BadValue, batch_to_dense, check_values, row_of_value
from tfrec_video.errors import DataValidationError

READ_BATCH = 4096
_WRITE_CHUNK = 8192
LIST_SEPARATOR = "|"
VECTOR_SEPARATOR = " "


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


def _texts(feature: Feature, values: np.ndarray) -> List[str]:
    if feature.dtype == "string":
        return list(values)
    if feature.dtype == "bytes":
        return [base64.b64encode(v).decode("ascii") for v in values]
    return values.astype(str).tolist()


def check_writable(path: str, columns: Dict[str, RaggedColumn], schema: TableSchema) -> None:
    """Refuses list values that the `|`-joined cell could not give back."""
    for feature in schema:
        if feature.kind != "list" or feature.dtype != "string":
            continue
        values, lengths = columns[feature.name]
        for i, text in enumerate(values):
            if text == "" or LIST_SEPARATOR in text:
                what = "an empty string" if text == "" else f"the value {text!r}, which contains '|'"
                raise DataValidationError(
                    f"CSV cannot hold {what} inside a list (values are joined with '|')", file=path,
                    row=row_of_value(lengths, i), feature=feature.name,
                    expected="list values that are non-empty and have no '|'; use TFRecord or Parquet")


def _cells(feature: Feature, column: RaggedColumn) -> List[str]:
    values, lengths = column
    texts = _texts(feature, values)
    if lengths is None:
        return texts
    return _join(feature, texts, lengths)


def _join(feature: Feature, texts: List[str], lengths: np.ndarray) -> List[str]:
    sep = VECTOR_SEPARATOR if feature.kind == "vector" else LIST_SEPARATOR
    offsets = np.concatenate([[0], np.cumsum(lengths)]).tolist()
    return [sep.join(texts[offsets[i]:offsets[i + 1]]) for i in range(len(lengths))]


def write(path: str, num_rows: int, columns: Dict[str, RaggedColumn], schema: TableSchema,
          compression: Optional[str] = None) -> None:
    """Writes validated ragged columns to `path` as UTF-8 CSV with a header row."""
    del compression  # `write_table` has already run `check_writable`.
    cells = [_cells(f, columns[f.name]) for f in schema]
    with data_files.open_file(path, "wb") as sink:
        buffer = _io.StringIO()
        writer = _csv.writer(buffer, lineterminator="\n")
        writer.writerow(schema.names)
        for start in range(0, num_rows, _WRITE_CHUNK):
            writer.writerows(zip(*(c[start:start + _WRITE_CHUNK] for c in cells)))
            sink.write(buffer.getvalue().encode("utf-8"))
            buffer.seek(0)
            buffer.truncate()


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


class _Rows:
    """The header and the records of a CSV file, with errors that name the file and row."""

    def __init__(self, path: str):
        self.path = path
        if data_files.file_size(path) == 0:
            raise DataValidationError("empty file (0 bytes)", file=path,
                                      expected="a header row and at least one row")
        self.handle = _io.TextIOWrapper(data_files.open_file(path, "rb"), encoding="utf-8", newline="")
        self.reader = _csv.reader(self.handle, strict=True)
        self.row = -1
        header = self._next()
        if header is None:
            raise DataValidationError("empty file (no header row)", file=path,
                                      expected="a header row and at least one row")
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        self.header = header

    def _next(self) -> Optional[List[str]]:
        while True:
            try:
                record = next(self.reader)
            except StopIteration:
                return None
            except _csv.Error as e:
                raise DataValidationError(f"malformed CSV (truncated file?): {e}", file=self.path,
                                          row=max(self.row + 1, 0), expected="well-formed CSV") from None
            except UnicodeDecodeError as e:
                raise DataValidationError(f"the file is not UTF-8 text: {e}", file=self.path,
                                          row=max(self.row + 1, 0), expected="UTF-8 CSV") from None
            if record:  # Blank lines are not records.
                return record

    def records(self, batch_size: int) -> Iterator[Tuple[int, List[List[str]]]]:
        """Yields `(first_row, rows)`; every row is checked to have one cell a column."""
        width = len(self.header)
        batch: List[List[str]] = []
        first = 0
        while True:
            record = self._next()
            if record is None:
                break
            self.row += 1
            if len(record) != width:
                raise DataValidationError(
                    f"row has {len(record)} cells but the header has {width} columns (truncated file?)",
                    file=self.path, row=self.row, expected=f"{width} cells: {self.header}")
            batch.append(record)
            if len(batch) == batch_size:
                yield first, batch
                first += len(batch)
                batch = []
        if batch:
            yield first, batch

    def close(self):
        self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_columns(path: str) -> List[str]:
    """The column names of a CSV file (its header row)."""
    with _Rows(path) as rows:
        if rows._next() is None:
            raise DataValidationError("empty file (0 rows after the header)", file=path,
                                      expected="at least one row")
        return list(rows.header)


def _parse_flat(feature: Feature, texts: List[str]) -> np.ndarray:
    """Parses cell texts into values, raising `_BadValue(index, ...)` at the first bad one."""
    if feature.dtype == "string":
        out = np.empty(len(texts), dtype=object)
        out[:] = texts
        return out
    if feature.dtype == "bytes":
        out = np.empty(len(texts), dtype=object)
        for i, text in enumerate(texts):
            try:
                out[i] = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                raise _BadValue(i, f"not valid base64: {text[:40]!r}") from None
        return out
    np_dtype = np.int64 if feature.dtype == "int64" else np.float32
    try:
        return np.array(texts, dtype=str).astype(np_dtype) if texts else np.zeros(0, np_dtype)
    except (ValueError, OverflowError):
        pass
    # Slow path, only to find which value is bad.
    for i, text in enumerate(texts):
        if text.strip() == "":
            raise _BadValue(i, "missing value (empty cell)")
        try:
            np.array([text]).astype(np_dtype)
        except (ValueError, OverflowError):
            raise _BadValue(i, f"not a valid {feature.dtype}: {text[:40]!r}") from None
    raise AssertionError("unreachable")


def _ragged(path: str, feature: Feature, cells: List[str], offset: int) -> RaggedColumn:
    if feature.kind == "scalar":
        try:
            return RaggedColumn(_parse_flat(feature, cells), None)
        except _BadValue as e:
            raise DataValidationError(e.message, file=path, row=offset + e.index, feature=feature.name,
                                      expected=feature.describe()) from None
    if feature.kind == "vector":
        parts = [cell.split() for cell in cells]
    else:
        parts = [cell.split(LIST_SEPARATOR) if cell != "" else [] for cell in cells]
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    flat = [v for p in parts for v in p]
    try:
        values = _parse_flat(feature, flat)
    except _BadValue as e:
        raise DataValidationError(e.message, file=path, row=offset + row_of_value(lengths, e.index),
                                  feature=feature.name, expected=feature.describe()) from None
    return RaggedColumn(values, lengths)


def iter_batches(path: str, schema: TableSchema, *, batch_size: int = READ_BATCH, validate: bool = True,
                 dense: bool = True) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """Reads a CSV file in batches of rows.

    Args:
      path: the file.
      schema: the features to read (the file's columns).
      batch_size: rows a batch.
      validate: check counts and values of every row (unparsable cells always raise).
      dense: yield dense numpy columns (else `{}`: a validation-only pass).

    Yields:
      `(row_offset, {name: np.ndarray})`; strings come as `str` objects.
    """
    with _Rows(path) as rows:
        index = {name: i for i, name in enumerate(rows.header)}
        total = 0
        for offset, records in rows.records(batch_size):
            columns = {}
            for f in schema:
                j = index[f.name]
                columns[f.name] = _ragged(path, f, [r[j] for r in records], offset)
            if dense:
                yield offset, batch_to_dense(schema, columns, file=path, row_offset=offset, validate=validate)
            else:
                if validate:
                    for f in schema:
                        check_values(f, columns[f.name], file=path, row_offset=offset)
                yield offset, {}
            total += len(records)
        if total == 0:
            raise DataValidationError("empty file (0 rows after the header)", file=path,
                                      expected="at least one row")
