"""Checks that need more than one value: unique ids, splits that agree, where a row is.

`tfrec_video.data.validation` checks each value where it is read (its count,
that it is finite, its documented range). The faults here need more than one row
or one file to be seen, and are checked before training starts rather than met
deep inside TensorFlow:

* a `video_id` that appears twice in the catalog (`check_unique_ids`), named by
  both of its rows: the model's catalog table holds one row per video;
* splits of the impressions (train, validation, test) whose files have
  different columns (`check_splits_agree`): a model built from the training
  columns would otherwise fail inside `tf.function` on the first validation batch;
* where a row of a file is, for messages (`locate`): a row of a CSV file is
  named by the line an editor shows, a row of a Parquet or TFRecord file by its
  0-based index.

An impression whose `video_id` is not in the catalog is found by
`tfrec_video.data.join.check_ids_in_catalog`, which uses `locate`.

Example:

>>> import numpy as np
>>> try:
...     check_unique_ids(np.array(["a", "b", "a"], object), [("catalog.parquet", 3)])
... except DataValidationError as error:
...     print(error)
catalog.parquet, row 2: feature 'video_id': duplicate video_id 'a', also at catalog.parquet, row 0 (expected each video_id once)
"""

import csv as _csv
import io as _io
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from tfrec_video.data.files import detect_format, open_file
from tfrec_video.data.schema import TableSchema, as_strings
from tfrec_video.data.tables import open_table
from tfrec_video.errors import DataValidationError, shorten

# (file, number of rows it holds), in the order a table's rows were read.
FileRows = Sequence[Tuple[str, int]]


def csv_line(path: str, row: int) -> int:
    """The 1-based line on which data row `row` (0-based, after the header) of a CSV file starts.

    Counts the way the CSV reader does: blank lines are no records, and a
    quoted cell may span lines. Reads the file up to that row (error paths only).
    """
    with _io.TextIOWrapper(open_file(path, "rb"), encoding="utf-8", newline="", errors="replace") as handle:
        reader = _csv.reader(handle)
        record = -2  # The header is record -1.
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except (StopIteration, _csv.Error):
                return start
            if cells:
                record += 1
                if record == row:
                    return start


def locate(path: str, row: int, format: Optional[str] = None) -> Dict[str, int]:
    """`{"line": N}` for a CSV file (the 1-based line an editor shows), else `{"row": row}`.

    Pass it to `DataValidationError(..., **locate(path, row))`.
    """
    if format is None:
        try:
            format = detect_format(path)
        except DataValidationError:  # Not a data file's name: a table held in memory.
            pass
    return {"line": csv_line(path, row)} if format == "csv" else {"row": int(row)}


def where(path: str, row: int, format: Optional[str] = None) -> str:
    """`"file, line N"` or `"file, row N"`: a row's place, in words."""
    place = locate(path, row, format)
    return f"{path}, line {place['line']}" if "line" in place else f"{path}, row {place['row']}"


def source_of(file_rows: FileRows, index: int) -> Tuple[str, int]:
    """The file and the row inside it of row `index` of a table read file after file."""
    for path, rows in file_rows:
        if index < rows:
            return path, index
        index -= rows
    raise IndexError(f"row {index} is past the end of the table")


def check_unique_ids(ids, file_rows: FileRows, feature: str = "video_id") -> None:
    """Raises unless every id is unique, naming the id and both rows that hold it.

    Args:
      ids: the ids in table order (`str` or `bytes`).
      file_rows: `(file, rows)` of each file the ids were read from, in order
        (`tables.read_table_numpy_with_files`).
      feature: the id column, for the message.

    Raises:
      DataValidationError: at the second row of the first repeated id, with
        the first one in the message.
    """
    ids = as_strings(ids).tolist()
    if len(set(ids)) == len(ids):
        return
    seen: Dict[str, int] = {}
    for index, value in enumerate(ids):
        if value in seen:
            path, row = source_of(file_rows, index)
            first_path, first_row = source_of(file_rows, seen[value])
            raise DataValidationError(
                f"duplicate {feature} {shorten(value)}, also at {where(first_path, first_row)}", file=path,
                feature=feature, expected=f"each {feature} once", **locate(path, row))
        seen[value] = index


def check_splits_agree(splits: Mapping[str, object], schema: TableSchema, format: Optional[str] = None) -> None:
    """Checks, before any training, that every split of a table has the same columns.

    A validation split without the `hour` and `device` columns the training files
    have would reach the model only at the first validation batch, as a
    traceback from inside `tf.function`.

    Args:
      splits: split name (`"train"`, `"validation"`, `"test"`) -> its paths;
        None paths are skipped. The first split given is the reference.
      schema: the table schema (each file is also checked against it).
      format: the files' format, or None to detect it.

    Raises:
      DataValidationError: naming a file of each of the two splits that differ
        and the columns only one of them has.

    Example:

    >>> check_splits_agree({"train": "data/train/", "validation": "data/val.csv"},
    ...                    impressions_schema())  # doctest: +SKIP
    """
    reference: Optional[Tuple[str, str, List[str]]] = None
    for split, paths in splits.items():
        if paths is None:
            continue
        files, _, sub = open_table(paths, schema, format)
        if reference is None:
            reference = (split, files[0], sub.names)
            continue
        name, first, names = reference
        if set(sub.names) != set(names):
            parts = [f"only the {label} file {shorten(path)} has {cols}" for label, path, cols in (
                (name, first, sorted(set(names) - set(sub.names))),
                (split, files[0], sorted(set(sub.names) - set(names)))) if cols]
            raise DataValidationError(
                f"the {split} and {name} files have different columns: {'; '.join(parts)}", file=files[0],
                expected=f"the columns of the {name} files, {sorted(names)}, in every split "
                         f"(add the missing columns, or drop them from every split)")
