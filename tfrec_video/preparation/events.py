"""`EventChunk` and `read_events`: a raw event log, read in pieces a Beam worker can take.

An event log is what a video service records: who was shown or watched what,
and when. Its columns:

* `user_id`, `video_id` (strings, required, never empty);
* `timestamp` (required): integer seconds since the epoch, or a Parquet/Arrow
  timestamp or date, or ISO 8601 text (`2026-11-01`, `2026-11-01T08:30:00`,
  `2026-11-01 08:30:00+02:00`, `...Z`); text without an offset is UTC;
* `clicked` (optional, 0/1 or boolean): without it every event is a positive
  (a watch log) and `tfrec-video prepare` samples the negatives;
* `hour` (optional, 0-23): without it, the UTC hour of `timestamp`;
* `device` (optional, string; a missing value is `""`).

Other columns are ignored. Files are Parquet or CSV (by extension), given as
files, directories or glob patterns (`list_files`).

A Parquet file is split into one chunk per row group, a CSV file is one
chunk: the unit a runner hands to a worker. Every event gets an `order`, its
place in the input (file in sorted order, then row), so that events at the
same timestamp keep the input order wherever they are processed.

Every value is checked as it is read, and the first bad one raises a
`DataValidationError` naming the file, the row (a CSV file: its line) and the
column: a missing column, an empty or missing id, an unparsable timestamp, a
`clicked` that is not 0/1, an `hour` outside 0-23, a video not in the catalog
(unless `drop_unknown`, which drops and counts them).

Example:

>>> chunks = event_chunks("logs/*.parquet")                              # doctest: +SKIP
>>> block, dropped = read_events(chunks[0], known_videos={"v1", "v2"})    # doctest: +SKIP
>>> block.user_id[:2], block.timestamp[:2]                                # doctest: +SKIP
(array(['u7', 'u7'], dtype=object), array([1761955200, 1761955260]))
"""

import dataclasses
import datetime
import re
import warnings
from typing import AbstractSet, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from tfrec_video.data.files import detect_format, file_size, list_files, open_file
from tfrec_video.data.integrity import locate
from tfrec_video.errors import DataValidationError, shorten

REQUIRED_COLUMNS = ("user_id", "video_id", "timestamp")
OPTIONAL_COLUMNS = ("clicked", "hour", "device")
EVENT_FORMATS = ("parquet", "csv")
_CSV_BYTES_PER_EVENT = 40  # About a CSV event log's line: two ids, a timestamp, a label.
# An event's `order`: file index in the high bits, row in the low 40 (a trillion rows a file).
ROW_BITS = 40


class EventBlock(NamedTuple):
    """Events as columns (numpy arrays of one length): the unit the pipeline moves.

    `hour` is -1 where the log has no hour (derived from `timestamp` later),
    `clicked` is 1 for every event of a log without the column, `device` is
    None when the log has no device column.
    """
    user_id: np.ndarray  # object (str)
    video_id: np.ndarray  # object (str)
    timestamp: np.ndarray  # int64 seconds
    order: np.ndarray  # int64, the input order
    clicked: np.ndarray  # int8
    hour: np.ndarray  # int8
    device: Optional[np.ndarray]  # object (str)

    def __len__(self):
        return len(self.user_id)

    def take(self, index) -> "EventBlock":
        """The events at `index` (an integer array or a boolean mask)."""
        return EventBlock(*(None if a is None else a[index] for a in self))

    @staticmethod
    def concat(blocks: Sequence["EventBlock"]) -> "EventBlock":
        if len(blocks) == 1:
            return blocks[0]
        has_device = blocks[0].device is not None
        return EventBlock(*(np.concatenate([b[i] for b in blocks]) if (i != 6 or has_device) else None
                            for i in range(7)))


@dataclasses.dataclass(frozen=True)
class EventChunk:
    """A piece of one event file: all of a CSV file, or one row group of a Parquet file.

    Attributes:
      path: the file.
      file_index: its place among the log's files (sorted), for the input order.
      row_group: the Parquet row group, or -1 (the whole file).
      row_offset: the file row of the chunk's first event.
      rows: its events (a CSV file: estimated from its size), to size the work.
    """
    path: str
    file_index: int
    row_group: int = -1
    row_offset: int = 0
    rows: int = 0


def event_chunks(paths: Union[str, Sequence[str]]) -> List[EventChunk]:
    """The chunks of the event log at `paths` (files, directories, glob patterns), in input order.

    Raises:
      DataValidationError: no file matches, a file is neither Parquet nor CSV,
        a file lacks a required column, or the log has no events at all.
    """
    files = list_files(paths)
    chunks, total = [], 0
    for index, path in enumerate(files):
        fmt = detect_format(path)
        if fmt not in EVENT_FORMATS:
            raise DataValidationError(f"an event log is read from Parquet or CSV files, not {fmt}", file=path,
                                      expected="a .parquet or .csv file")
        if fmt == "parquet":
            try:
                with open_file(path, "rb") as handle:
                    meta = pq.ParquetFile(handle).metadata
                    names = pq.ParquetFile(handle).schema_arrow.names
            except (pa.ArrowException, OSError) as e:
                raise DataValidationError(f"not a readable Parquet file: {shorten(str(e))}", file=path) from None
            _check_columns(path, names)
            offset = 0
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                if rows:
                    chunks.append(EventChunk(path, index, group, offset, rows))
                offset += rows
            total += offset
        else:
            with open_file(path, "rb") as handle:
                header = handle.readline().decode("utf-8", "replace").strip()
            _check_columns(path, [c.strip().strip('"') for c in header.split(",")] if header else [])
            chunks.append(EventChunk(path, index, rows=file_size(path) // _CSV_BYTES_PER_EVENT))
            total += 1  # A CSV's rows are counted as it is read: a log of header-only files fails after the run.
    if not total:
        raise DataValidationError("the event log has no events", file=files[0] if len(files) == 1 else None,
                                  expected=f"rows in {len(files)} file(s): " + ", ".join(files[:3]))
    return chunks


def _check_columns(path: str, names: Sequence[str]) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataValidationError(f"the event log lacks the column(s) {missing}", file=path,
                                  expected=f"columns {list(REQUIRED_COLUMNS)} (and optionally "
                                           f"{list(OPTIONAL_COLUMNS)}); found {list(names)[:20]}")


def log_columns(chunks: Sequence[EventChunk]) -> Tuple[str, ...]:
    """The optional columns every file of the log has (all files must agree)."""
    found = None
    for chunk in {c.path: c for c in chunks}.values():
        if detect_format(chunk.path) == "parquet":
            with open_file(chunk.path, "rb") as handle:
                names = pq.ParquetFile(handle).schema_arrow.names
        else:
            with open_file(chunk.path, "rb") as handle:
                names = [c.strip().strip('"') for c in handle.readline().decode("utf-8", "replace").split(",")]
        have = tuple(c for c in OPTIONAL_COLUMNS if c in names)
        if found is not None and have != found[1]:
            raise DataValidationError(
                f"has the optional columns {list(have)}, but {found[0]} has {list(found[1])}", file=chunk.path,
                expected="every file of one event log with the same columns")
        found = found or (chunk.path, have)
    return found[1] if found else ()


def _table(chunk: EventChunk, columns: Sequence[str]) -> pa.Table:
    try:
        with open_file(chunk.path, "rb") as handle:
            if chunk.row_group >= 0:
                return pq.ParquetFile(handle).read_row_group(chunk.row_group, columns=list(columns))
            text = {"user_id": pa.string(), "video_id": pa.string(), "device": pa.string()}
            options = pa_csv.ConvertOptions(column_types={c: t for c, t in text.items() if c in columns},
                                            include_columns=list(columns), strings_can_be_null=True)
            return pa_csv.read_csv(handle, convert_options=options)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise DataValidationError(f"could not read the event file: {shorten(str(e), 300)}",
                                  file=chunk.path) from None


def _fail(chunk: EventChunk, index: int, column: str, message: str, expected: str):
    row = chunk.row_offset + int(index)
    where = locate(chunk.path, row) if chunk.row_group < 0 else {"row": row}
    raise DataValidationError(message, file=chunk.path, feature=column, expected=expected, **where)


def _ids(chunk: EventChunk, column: str, array: pa.ChunkedArray) -> np.ndarray:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        try:
            array = pc.cast(array, pa.string())
        except pa.ArrowException:
            _fail(chunk, 0, column, f"ids of type {array.type}", "string ids")
    values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=object)
    bad = np.flatnonzero(pc.fill_null(pc.equal(array, ""), True).to_numpy(zero_copy_only=False))
    if bad.size:
        _fail(chunk, bad[0], column, "a missing or empty id", "a non-empty string")
    return values


_PLAIN_ISO = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?\Z")


def _iso_seconds(text: str) -> int:
    value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return int(value.timestamp())


def parse_timestamps(values, where=None) -> np.ndarray:
    """Seconds since the epoch (int64) from integers, Arrow timestamps/dates or ISO 8601 text.

    `where(index, message)` is called (and must raise) for the first value that
    is missing or cannot be read; without it a `ValueError` is raised.
    """
    def fail(index, message):
        if where is not None:
            where(index, message)
        raise ValueError(f"timestamp {index}: {message}")

    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if array.null_count:
        fail(int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0]), "a missing timestamp")
    kind = array.type
    if pa.types.is_integer(kind):
        return array.to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_floating(kind):
        floats = array.to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(~np.isfinite(floats))
        if bad.size:
            fail(int(bad[0]), f"the timestamp {floats[bad[0]]!r} is not a number of seconds")
        return np.floor(floats).astype(np.int64)
    if pa.types.is_date(kind):
        return pc.cast(pc.cast(array, pa.date32()), pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64) * 86400
    if pa.types.is_timestamp(kind):
        # The stored integer is in the column's unit, UTC whatever its time zone; sub-second parts are floored.
        per_second = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        return pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False).astype(np.int64) // per_second
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        fail(0, f"timestamps of type {kind}")
    texts = array.to_numpy(zero_copy_only=False)
    digits = np.array([t.strip().lstrip("-").isdigit() for t in texts], bool)
    if digits.all():
        return np.array([int(t) for t in texts], np.int64)
    # The fast path: numpy reads plain ISO 8601 without an offset, but also "now", "today" and "NaT", and a
    # bare number as a year: it is taken only when every value has the plain ISO shape.
    if all(_PLAIN_ISO.match(t) for t in texts):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return np.array(texts, dtype="datetime64[s]").astype(np.int64)
    out = np.empty(len(texts), np.int64)
    for i, text in enumerate(texts):
        try:
            out[i] = int(text) if digits[i] else _iso_seconds(text)
        except (ValueError, OverflowError):
            fail(i, f"the timestamp {shorten(text)} cannot be read")
    return out


def _small_ints(chunk, table, column, low, high, expected) -> Optional[np.ndarray]:
    if column not in table.column_names:
        return None
    array = table.column(column)
    if pa.types.is_boolean(array.type):
        array = pc.cast(array, pa.int8())
    if array.null_count:
        _fail(chunk, np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0], column,
              "a missing value", expected)
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        # One word among numbers makes a CSV column text: blame that word's row.
        texts = array.to_numpy(zero_copy_only=False)
        bad = [i for i, t in enumerate(texts) if not t.strip().lstrip("-").isdigit()]
        if bad:
            _fail(chunk, bad[0], column, f"the value {shorten(texts[bad[0]])}", expected)
        array = pa.array([int(t) for t in texts], pa.int64())
    if not (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        _fail(chunk, 0, column, f"values of type {array.type}", expected)
    values = array.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero((values < low) | (values > high) | (values != np.floor(values)))
    if bad.size:
        _fail(chunk, bad[0], column, f"the value {values[bad[0]]!r}", expected)
    return values.astype(np.int8)


def read_events(chunk: EventChunk, known_videos: Optional[AbstractSet[str]] = None, drop_unknown: bool = False,
                columns: Optional[Sequence[str]] = None) -> Tuple[EventBlock, int]:
    """Reads and checks the events of `chunk`: `(EventBlock, number of events dropped as unknown)`.

    Args:
      chunk: from `event_chunks`.
      known_videos: the catalog's video ids; None skips the check.
      drop_unknown: drop events of videos not in `known_videos` (and count
        them) instead of raising.
      columns: the optional columns to read (`log_columns`); None reads those
        the file has.

    Raises:
      DataValidationError: naming the file, row (or line) and column of the first bad value.
    """
    if columns is None:
        columns = log_columns([chunk])
    table = _table(chunk, list(REQUIRED_COLUMNS) + [c for c in columns if c in OPTIONAL_COLUMNS])
    if table.num_rows == 0:  # A header-only CSV: no events (a log with no events at all fails after the run).
        empty = np.zeros(0, np.int64)
        return EventBlock(np.zeros(0, object), np.zeros(0, object), empty, empty, empty.astype(np.int8),
                          empty.astype(np.int8), np.zeros(0, object) if "device" in columns else None), 0
    users = _ids(chunk, "user_id", table.column("user_id"))
    videos = _ids(chunk, "video_id", table.column("video_id"))
    seconds = parse_timestamps(
        table.column("timestamp"),
        lambda i, message: _fail(chunk, i, "timestamp", message,
                                 "seconds since the epoch, an Arrow timestamp or ISO 8601 text"))
    n = table.num_rows
    clicked = _small_ints(chunk, table, "clicked", 0, 1, "0 or 1")
    hour = _small_ints(chunk, table, "hour", 0, 23, "an hour from 0 to 23")
    device = None
    if "device" in columns:
        device = np.asarray(pc.fill_null(table.column("device"), "").to_numpy(zero_copy_only=False), dtype=object)
    order = (np.int64(chunk.file_index) << ROW_BITS) + chunk.row_offset + np.arange(n, dtype=np.int64)
    block = EventBlock(users, videos, seconds, order,
                       np.ones(n, np.int8) if clicked is None else clicked,
                       np.full(n, -1, np.int8) if hour is None else hour, device)
    dropped = 0
    if known_videos is not None:
        unknown = np.fromiter((v not in known_videos for v in videos), bool, n)
        if unknown.any():
            if not drop_unknown:
                first = int(np.flatnonzero(unknown)[0])
                _fail(chunk, first, "video_id", f"the video {shorten(videos[first])} is not in the catalog "
                      f"({int(unknown.sum())} event(s) of this chunk are of unknown videos)",
                      "a video_id of the catalog, or --drop-unknown to drop and count such events")
            dropped = int(unknown.sum())
            block = block.take(~unknown)
    return block, dropped
