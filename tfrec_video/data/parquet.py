"""Parquet files, read and written with pyarrow (list columns are native).

Conventions (the column name is the feature name):

* scalar columns are plain: `string` -> Arrow `string` (also `large_string` or
  dictionary-encoded strings on read), `bytes` -> `binary` (also `large_binary`,
  `fixed_size_binary`), `int64` -> `int64` (any integer or boolean type is
  accepted and cast), `float32` -> `float` (`double` and integers are accepted
  and cast).
* a vector (an embedding) is `list<float>` with exactly `length` values a row;
  `fixed_size_list<float>` and `double` values are accepted and cast.
* a list feature (the watch `history`) is `list<string>` with 0 to `length`
  values a row, newest first.
* nulls are errors, naming the row and the feature: a null scalar, a null list
  or a null inside a list. An empty list is not null and is fine.

Reading streams record batches with `pyarrow.parquet.ParquetFile.iter_batches`
(bounded memory) and feeds them to `tf.data` a few thousand rows at a time
(`stream_dataset`: strings cross as one byte blob per column and batch).
`tensorflow_io`'s Parquet reader is not used: it flattens list columns.
Writing splits the table into row groups of about 64 MiB, so readers never
hold more than that per file.

Paths may be local or use any `tf.io.gfile` scheme (read through `GFile`).

Errors name the 0-based *row* (`row 0` is the file's first row, counted across its
row groups): a Parquet file has no lines. A column of the wrong type is named at
row 0, the first of its rows that cannot be read.
"""

from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tfrec_video.data import files as data_files
from tfrec_video.data.schema import Feature, TableSchema
from tfrec_video.data.validation import RaggedColumn, batch_to_dense, check_values, row_of_value
from tfrec_video.errors import DataValidationError

# Rows per record batch handed to tf.data: amortises the Python hop per batch.
READ_BATCH = 4096
_ROW_GROUP_BYTES = 64 << 20

_ARROW_TYPE = {"string": pa.string(), "bytes": pa.binary(), "int64": pa.int64(), "float32": pa.float32()}


def _arrow_type(feature: Feature) -> pa.DataType:
    base = _ARROW_TYPE[feature.dtype]
    return base if feature.kind == "scalar" else pa.list_(base)


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


def _row_bytes(feature: Feature, column: RaggedColumn, num_rows: int) -> float:
    values = column.values
    if values.dtype == object:
        sample = values[:1000]
        per_value = float(np.mean([len(v) for v in sample])) + 4 if len(sample) else 4.0
    else:
        per_value = values.dtype.itemsize
    return per_value * max(values.shape[0], 1) / max(num_rows, 1)


def _arrow_column(feature: Feature, column: RaggedColumn, start: int, stop: int) -> pa.Array:
    values, lengths = column
    base = _ARROW_TYPE[feature.dtype]
    if lengths is None:
        return pa.array(values[start:stop], type=base)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    lo, hi = int(offsets[start]), int(offsets[stop])
    flat = pa.array(values[lo:hi], type=base)
    if feature.kind == "scalar":
        return flat
    return pa.ListArray.from_arrays(pa.array(offsets[start:stop + 1] - lo, type=pa.int32()), flat)


def write(path: str, num_rows: int, columns: Dict[str, RaggedColumn], schema: TableSchema,
          compression: Optional[str] = None) -> None:
    """Writes validated ragged columns to `path`, in row groups of about 64 MiB."""
    del compression  # Parquet compresses inside the file.
    arrow_schema = pa.schema([pa.field(f.name, _arrow_type(f), nullable=False) for f in schema])
    row_bytes = sum(_row_bytes(f, columns[f.name], num_rows) for f in schema)
    group = int(min(1 << 20, max(1024, _ROW_GROUP_BYTES // max(row_bytes, 1.0))))
    with data_files.open_file(path, "wb") as sink:
        with pq.ParquetWriter(sink, arrow_schema) as writer:
            for start in range(0, num_rows, group):
                stop = min(start + group, num_rows)
                arrays = [_arrow_column(f, columns[f.name], start, stop) for f in schema]
                writer.write_table(pa.Table.from_arrays(arrays, schema=arrow_schema), row_group_size=group)


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


class _Opened:
    """A `ParquetFile` that also closes the `GFile` under it (remote paths)."""

    def __init__(self, path: str):
        self.path = path
        self.handle = None
        if data_files.file_size(path) == 0:
            raise DataValidationError("empty file (0 bytes)", file=path, expected="a Parquet file with rows")
        try:
            if data_files.is_local(path):
                self.file = pq.ParquetFile(path)
            else:
                self.handle = data_files.open_file(path, "rb")
                self.file = pq.ParquetFile(self.handle)
        except (pa.ArrowException, OSError, ValueError) as e:
            self.close()
            raise DataValidationError(f"not a readable Parquet file (corrupt or truncated?): {e}", file=path,
                                      expected="a complete Parquet file") from None

    def close(self):
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_columns(path: str) -> List[str]:
    """The column names of a Parquet file (from its footer; no data is read)."""
    with _Opened(path) as opened:
        if opened.file.metadata.num_rows == 0:
            raise DataValidationError("empty file (0 rows)", file=path, expected="at least one row")
        return list(opened.file.schema_arrow.names)


def _base_type_ok(dtype: str, t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if dtype == "string":
        return pa.types.is_string(t) or pa.types.is_large_string(t)
    if dtype == "bytes":
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)
    if dtype == "int64":
        return pa.types.is_integer(t) or pa.types.is_boolean(t)
    return pa.types.is_floating(t) or pa.types.is_integer(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _check_type(path: str, feature: Feature, t: pa.DataType) -> None:
    ok = _is_list(t) and _base_type_ok(feature.dtype, t.value_type) if feature.kind != "scalar" else (
        not _is_list(t) and _base_type_ok(feature.dtype, t))
    if not ok:
        raise DataValidationError(
            f"wrong type: the Parquet column has type {t}", file=path, row=0, feature=feature.name,
            expected=f"{feature.describe()} (Parquet {_arrow_type(feature)})")


def _first_null(arr: pa.Array) -> int:
    return int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))


def _values(feature: Feature, arr: pa.Array) -> np.ndarray:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if feature.dtype == "int64":
        return arr.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if feature.dtype == "float32":
        # Unsafe so that doubles beyond float32 range become inf and fail the finite check by row.
        return pc.cast(arr, pa.float32(), safe=False).to_numpy(zero_copy_only=False)
    return arr.to_numpy(zero_copy_only=False)


def _checked(path: str, feature: Feature, arr: pa.Array, offset: int) -> Tuple[pa.Array, Optional[np.ndarray]]:
    """A column's flat values and row lengths (None for scalars), refusing nulls by row."""
    if arr.null_count:
        raise DataValidationError("missing value (null)", file=path, row=offset + _first_null(arr),
                                  feature=feature.name, expected=feature.describe())
    if feature.kind == "scalar":
        return arr, None
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(arr)
    if flat.null_count:
        raise DataValidationError("null value inside the list", file=path,
                                  row=offset + row_of_value(lengths, _first_null(flat)), feature=feature.name,
                                  expected=feature.describe())
    return flat, lengths


def _ragged(path: str, feature: Feature, arr: pa.Array, offset: int) -> RaggedColumn:
    flat, lengths = _checked(path, feature, arr, offset)
    return RaggedColumn(_values(feature, flat), lengths)


def _record_batches(path: str, schema: TableSchema, batch_size: int) -> Iterator[Tuple[int, pa.RecordBatch]]:
    """`(row_offset, record batch)` of a file's `schema` columns, their types checked first."""
    with _Opened(path) as opened:
        arrow_schema = opened.file.schema_arrow
        for feature in schema:
            _check_type(path, feature, arrow_schema.field(feature.name).type)
        offset = 0
        batches = opened.file.iter_batches(batch_size=batch_size, columns=schema.names)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as e:
                raise DataValidationError(f"corrupt or truncated Parquet data: {e}", file=path, row=offset,
                                          expected="a complete Parquet file") from None
            yield offset, batch
            offset += batch.num_rows
        if offset == 0:
            raise DataValidationError("empty file (0 rows)", file=path, expected="at least one row")


def iter_batches(path: str, schema: TableSchema, *, batch_size: int = READ_BATCH, validate: bool = True,
                 dense: bool = True) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """Reads a Parquet file in record batches.

    Args:
      path: the file.
      schema: the features to read (the file's columns).
      batch_size: rows a batch.
      validate: check counts and values of every row (nulls and types are
        always checked: they cannot be converted).
      dense: yield dense numpy columns (else `{}`: a validation-only pass).

    Yields:
      `(row_offset, {name: np.ndarray})`; strings come as `str` objects.
    """
    for offset, batch in _record_batches(path, schema, batch_size):
        columns = {f.name: _ragged(path, f, batch.column(f.name), offset) for f in schema}
        if dense:
            yield offset, batch_to_dense(schema, columns, file=path, row_offset=offset, validate=validate)
        else:
            if validate:
                for f in schema:
                    check_values(f, columns[f.name], file=path, row_offset=offset)
            yield offset, {}


# --------------------------------------------------------------------------
# Streaming into tf.data without a Python object per value.
# --------------------------------------------------------------------------


def _byte_buffer(arr: pa.Array) -> Tuple[bytes, np.ndarray]:
    """A string or binary array as one `bytes` blob and int64 value offsets into it."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_large_binary(arr.type):
        try:
            arr = arr.cast(pa.large_binary())
        except pa.ArrowNotImplementedError:  # e.g. fixed_size_binary
            arr = pa.array(arr.to_pylist(), type=pa.large_binary())
    _, offsets, data = arr.buffers()
    offsets = np.frombuffer(offsets, np.int64)[arr.offset:arr.offset + len(arr) + 1]
    start, stop = int(offsets[0]), int(offsets[-1])
    blob = data.slice(start, stop - start).to_pybytes() if data is not None and stop > start else b""
    return blob, offsets - start


def _stream_parts(path: str, schema: TableSchema, batch: pa.RecordBatch, offset: int) -> Dict[str, object]:
    parts = {}
    for feature in schema:
        flat, lengths = _checked(path, feature, batch.column(feature.name), offset)
        if lengths is not None:
            bad = np.any(lengths != feature.length) if feature.kind == "vector" else (
                len(lengths) and lengths.max() > feature.length)
            if bad:  # raises, naming the first row whose count is wrong
                check_values(feature, RaggedColumn(np.zeros(0, feature.numpy_dtype), lengths), file=path,
                             row_offset=offset)
            parts[f"{feature.name}/lengths"] = lengths
        if feature.dtype in ("string", "bytes"):
            parts[f"{feature.name}/bytes"], parts[f"{feature.name}/offsets"] = _byte_buffer(flat)
        else:
            parts[f"{feature.name}/values"] = _values(feature, flat)
    return parts


def stream_dataset(files, schema: TableSchema):
    """An unbatched `tf.data.Dataset` of `{name: tensor}` over Parquet files, in file order.

    Record batches are read in Python (pyarrow), but each string column crosses
    into TensorFlow as one byte blob and its offsets, split into a string
    tensor by `tf.strings.substr` in the graph, and lists are padded there too:
    no Python object is made per value, which `Dataset.from_generator` would
    otherwise convert one at a time while holding the GIL. Nulls, types and
    list or vector counts are checked (they cannot be converted); values are
    not (`read_table(validate=True)` does that first).
    """
    import tensorflow as tf

    files = list(files)
    signature = {}
    for feature in schema:
        if feature.kind != "scalar":
            signature[f"{feature.name}/lengths"] = tf.TensorSpec((None,), tf.int64)
        if feature.dtype in ("string", "bytes"):
            signature[f"{feature.name}/bytes"] = tf.TensorSpec((), tf.string)
            signature[f"{feature.name}/offsets"] = tf.TensorSpec((None,), tf.int64)
        else:
            signature[f"{feature.name}/values"] = tf.TensorSpec((None,), feature.tf_dtype)

    def batches():
        for path in files:
            for offset, batch in _record_batches(path, schema, READ_BATCH):
                yield _stream_parts(path, schema, batch, offset)

    def assemble(parts):
        out = {}
        for feature in schema:
            if feature.dtype in ("string", "bytes"):
                offsets = parts[f"{feature.name}/offsets"]
                values = tf.strings.substr(parts[f"{feature.name}/bytes"], offsets[:-1], offsets[1:] - offsets[:-1])
            else:
                values = parts[f"{feature.name}/values"]
            if feature.kind == "scalar":
                out[feature.name] = values
            elif feature.kind == "vector":
                out[feature.name] = tf.reshape(values, [-1, feature.length])
            else:
                ragged = tf.RaggedTensor.from_row_lengths(values, parts[f"{feature.name}/lengths"], validate=False)
                out[feature.name] = ragged.to_tensor(default_value=feature.pad, shape=[None, feature.length])
        return out

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # The generator runs a couple of record batches ahead; the graph part runs in parallel with it.
    return dataset.prefetch(2).map(assemble, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
