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

Errors name the *line* an editor shows (1-based, the header is line 1): the line
a record starts on (a quoted cell may hold newlines, so a record can span
lines), or for bytes that are not UTF-8 the line of the first bad byte. Other
formats, which have no lines, name the 0-based row instead.
"""

import base64
import binascii
import codecs
import csv as _csv
import io as _io
import sys
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
# The `csv` module refuses cells over 128 KiB by default, but a base64 thumbnail that
# `write` wrote can be larger: reading raises the (process-wide) limit to this.
_FIELD_LIMIT = min(sys.maxsize, 2 ** 31 - 1)
_SCAN_CHUNK = 1 << 20


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


def _line_breaks(data: bytes) -> int:
    """Line ends in `data` as a text reader counts them: `\\n`, `\\r\\n` or a lone `\\r`."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _first_bad_utf8(path: str) -> Optional[Tuple[int, int, int, str]]:
    """`(line, byte_offset, byte, reason)` of the first byte of `path` that is not UTF-8, if any.

    The text reader that met it decodes a block ahead of the CSV parser and reports an
    offset inside that block, so the file is scanned again from the start, a block at a
    time, counting line ends up to the bad byte.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed, breaks, last = 0, 0, b""
    with data_files.open_file(path, "rb") as f:
        while True:
            chunk = f.read(_SCAN_CHUNK)
            pending = decoder.getstate()[0]  # bytes of a character cut by the previous block
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                bad = consumed - len(pending) + e.start
                head = chunk[:max(bad - consumed, 0)]
                breaks += _line_breaks(head) - (last == b"\r" and head.startswith(b"\n"))
                return breaks + 1, bad, (pending + chunk)[e.start], e.reason
            if not chunk:
                return None
            breaks += _line_breaks(chunk) - (last == b"\r" and chunk.startswith(b"\n"))
            consumed += len(chunk)
            last = chunk[-1:]


class _Rows:
    """The header and the records of a CSV file, with errors that name the file and line.

    `records` counts records from 0 (`row`, as the shared checks of
    `tfrec_video.data.validation` do) and gives the line each starts on.
    """

    def __init__(self, path: str):
        self.path = path
        if data_files.file_size(path) == 0:
            raise DataValidationError("empty file (0 bytes)", file=path,
                                      expected="a header row and at least one row")
        if _csv.field_size_limit() < _FIELD_LIMIT:
            _csv.field_size_limit(_FIELD_LIMIT)
        self.handle = _io.TextIOWrapper(data_files.open_file(path, "rb"), encoding="utf-8", newline="")
        self.reader = _csv.reader(self.handle, strict=True)
        self.row = -1
        self.line = 0
        try:
            header = self._next()
            if header is None:
                raise DataValidationError("empty file (no header row)", file=path,
                                          expected="a header row and at least one row")
        except BaseException:
            self.handle.close()  # No `with` block owns the handle yet.
            raise
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        self.header = header

    def _next(self) -> Optional[List[str]]:
        """The next non-blank record (`None` at the end); `self.line` is the line it starts on."""
        while True:
            # `line_num` counts the lines read so far, so a record starts on the next one.
            start = self.reader.line_num + 1
            try:
                record = next(self.reader)
            except StopIteration:
                return None
            except _csv.Error as e:
                # Name where the record starts (an unclosed quote runs to the end of the file).
                stop = self.reader.line_num
                at = f" (the parser stopped at line {stop})" if stop > start else ""
                raise DataValidationError(
                    f"malformed CSV in the record that starts on this line (truncated file, or a quote "
                    f"left open?){at}: {e}", file=self.path, line=start, expected="well-formed CSV") from None
            except UnicodeDecodeError:
                error = self._not_utf8(start)
                raise error from None
            if record:  # Blank lines are not records.
                self.line = start
                return record

    def _not_utf8(self, fallback_line: int) -> DataValidationError:
        found = _first_bad_utf8(self.path)
        if found is None:  # The file changed under us; name the record being read.
            return DataValidationError("the file is not UTF-8 text", file=self.path, line=fallback_line,
                                       expected="UTF-8 CSV")
        line, offset, byte, reason = found
        return DataValidationError(
            f"the file is not UTF-8 text: byte 0x{byte:02x} at byte offset {offset} cannot be decoded ({reason})",
            file=self.path, line=line, expected="UTF-8 text; re-save the file with the UTF-8 encoding")

    def records(self, batch_size: int) -> Iterator[Tuple[int, List[List[str]], List[int]]]:
        """Yields `(first_row, records, lines)`: every record has one cell a column; `lines[i]` is where it starts."""
        width = len(self.header)
        batch: List[List[str]] = []
        lines: List[int] = []
        first = 0
        while True:
            record = self._next()
            if record is None:
                break
            self.row += 1
            if len(record) != width:
                raise DataValidationError(
                    f"the record has {len(record)} cells but the header has {width} columns (truncated file?)",
                    file=self.path, line=self.line, expected=f"{width} cells: {self.header}")
            batch.append(record)
            lines.append(self.line)
            if len(batch) == batch_size:
                yield first, batch, lines
                first += len(batch)
                batch, lines = [], []
        if batch:
            yield first, batch, lines

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


def _ragged(path: str, feature: Feature, cells: List[str], lines: List[int]) -> RaggedColumn:
    """One column of a batch; an unparsable cell raises naming the line its record starts on."""
    if feature.kind == "scalar":
        try:
            return RaggedColumn(_parse_flat(feature, cells), None)
        except _BadValue as e:
            raise DataValidationError(e.message, file=path, line=lines[e.index], feature=feature.name,
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
        raise DataValidationError(e.message, file=path, line=lines[row_of_value(lengths, e.index)],
                                  feature=feature.name, expected=feature.describe()) from None
    return RaggedColumn(values, lengths)


def _at_line(error: DataValidationError, offset: int, lines: List[int]) -> DataValidationError:
    """`error` of the shared checks, which count records from 0 (`row`), naming the record's line instead."""
    if error.row is None or not 0 <= error.row - offset < len(lines):
        return error
    return DataValidationError(error.reason, file=error.file, line=lines[error.row - offset],
                               feature=error.feature, expected=error.expected)


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
      `(row_offset, {name: np.ndarray})`: `row_offset` counts records from 0 (the
      first after the header is row 0); strings come as `str` objects.

    Raises:
      DataValidationError: naming the line (1-based, as an editor shows it) of
        the first bad record.
    """
    with _Rows(path) as rows:
        index = {name: i for i, name in enumerate(rows.header)}
        total = 0
        for offset, records, lines in rows.records(batch_size):
            columns = {}
            for f in schema:
                j = index[f.name]
                columns[f.name] = _ragged(path, f, [r[j] for r in records], lines)
            try:
                if dense:
                    batch = batch_to_dense(schema, columns, file=path, row_offset=offset, validate=validate)
                else:
                    batch = {}
                    if validate:
                        for f in schema:
                            check_values(f, columns[f.name], file=path, row_offset=offset)
            except DataValidationError as error:
                raise _at_line(error, offset, lines) from None
            yield offset, batch
            total += len(records)
        if total == 0:
            raise DataValidationError("empty file (0 rows after the header)", file=path,
                                      expected="at least one row")
