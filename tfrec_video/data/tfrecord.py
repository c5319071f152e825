"""TFRecord files of `tf.train.Example`: the native, fastest input format.

Conventions (one `tf.train.Example` per row; the feature key is the column name):

* `string` features are a `bytes_list` of UTF-8 text, `bytes` features a
  `bytes_list` of raw bytes (an encoded JPEG/PNG/WAV), `int64` features an
  `int64_list`, `float32` features a `float_list`.
* A scalar is a list of exactly one value; a vector (an embedding) is one
  `float_list` of exactly `length` values; a list feature (the watch `history`)
  is one list of 0 to `length` values, newest first. An empty list is written as
  an empty `bytes_list`; a reader also takes a missing key as an empty list.
* The keys of a file's *first* record are the file's columns. Every record must
  carry every scalar and vector column; keys that the first record lacks are
  ignored in later records.
* Files whose name ends in `.gz` (`part-0.tfrecord.gz`) are GZIP-compressed.

Paths may be local or use any `tf.io.gfile` scheme. Importing this module
imports `tensorflow_io`, whose file-system plugins register `s3://`, `az://`
and `hdfs://` with TensorFlow.

Reading parses in the graph: `TFRecordDataset -> batch -> tf.io.parse_example
-> unbatch`, so no Python runs per row. Validation parses eagerly in batches and
checks counts and values with numpy; only when TensorFlow refuses a batch (a
wrong value type, a record that is not an Example) does a per-record Python scan
run to name the exact row and feature.

Errors name the 0-based *row*, the index of the record in the file (`row 0` is
the first record; a corrupt or truncated file is named at the first record that
cannot be read): a TFRecord file has no lines.
"""

import logging
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data import files as data_files
from tfrec_video.data.schema import Feature, TableSchema
from tfrec_video.data.validation import RaggedColumn, batch_to_dense, check_values
from tfrec_video.errors import DataValidationError, first_line

try:  # The file-system plugins (s3://, az://, hdfs://) register on import.
    import tensorflow_io  # noqa: F401
except Exception as e:  # pragma: no cover - depends on the installed wheel
    logging.getLogger(__name__).warning(
        "tensorflow_io could not be imported (%s); s3://, az:// and hdfs:// paths will not work.", e)

# Batch size of the in-graph parse; large enough to amortise per-op overhead.
_PARSE_BATCH = 1024
# Rows per eager batch when validating or reading into numpy.
_CHECK_BATCH = 4096

_KIND = {"string": "bytes_list", "bytes": "bytes_list", "int64": "int64_list", "float32": "float_list"}


def compression_of(path: str) -> Optional[str]:
    """`"GZIP"` for a `.gz` file, else `None`."""
    return "GZIP" if path.lower().endswith(".gz") else None


def _dataset(paths, compression):
    return tf.data.TFRecordDataset(paths, compression_type=compression or "", buffer_size=1 << 20)


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


_LIST_MESSAGE = {"string": "tensorflow.BytesList", "bytes": "tensorflow.BytesList",
                 "int64": "tensorflow.Int64List", "float32": "tensorflow.FloatList"}
# Rows serialised per `tf.io.encode_proto` call when writing.
_WRITE_CHUNK = 8192


def _encode(message: str, fields, sizes, values):
    return tf.io.encode_proto(sizes, values, fields, message)


def _padded(feature: Feature, column: RaggedColumn, start: int, stop: int):
    """Rows `start:stop` of a column as a `[n, width]` array and the count of values a row."""
    values, lengths = column
    n = stop - start
    if lengths is None:
        return values[start:stop].reshape(n, 1), np.ones(n, np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    lo, hi = int(offsets[start]), int(offsets[stop])
    counts = lengths[start:stop]
    width = max(1, int(counts.max()) if n else 1)
    if values.dtype == object:
        dense = np.empty((n, width), dtype=object)
        dense[...] = feature.pad
    else:
        dense = np.zeros((n, width), dtype=values.dtype)
    rows = np.repeat(np.arange(n), counts)
    cols = np.arange(hi - lo) - np.repeat(offsets[start:stop] - lo, counts)
    dense[rows, cols] = values[lo:hi]
    return dense, counts.astype(np.int32)


def serialize(columns: Dict[str, RaggedColumn], schema: TableSchema, start: int, stop: int) -> np.ndarray:
    """Rows `start:stop` as serialized `tf.train.Example`s (an array of bytes).

    Built bottom-up with `tf.io.encode_proto` (value list -> `Feature` -> map
    entry -> `Features` -> `Example`), a whole chunk of rows per op: about
    twice as fast as filling `tf.train.Example` messages row by row in Python,
    and it produces the same messages.
    """
    n = stop - start
    ones = tf.ones([n, 1], tf.int32)
    entries = []
    for feature in schema:
        dense, counts = _padded(feature, columns[feature.name], start, stop)
        value_list = _encode(_LIST_MESSAGE[feature.dtype], ["value"], counts.reshape(n, 1),
                             [tf.constant(dense, dtype=feature.tf_dtype)])
        # Every row gets its list, even an empty one, so the kind of list is always stated.
        wrapped = _encode("tensorflow.Feature", [_KIND[feature.dtype]], ones, [tf.reshape(value_list, [n, 1])])
        entries.append(_encode("tensorflow.Features.FeatureEntry", ["key", "value"], tf.ones([n, 2], tf.int32),
                               [tf.fill([n, 1], feature.name), tf.reshape(wrapped, [n, 1])]))
    features = _encode("tensorflow.Features", ["feature"], tf.fill([n, 1], len(entries)), [tf.stack(entries, 1)])
    return _encode("tensorflow.Example", ["features"], ones, [tf.reshape(features, [n, 1])]).numpy()


def write(path: str, num_rows: int, columns: Dict[str, RaggedColumn], schema: TableSchema,
          compression: Optional[str] = None) -> None:
    """Writes validated ragged columns to `path` as one Example per row."""
    options = tf.io.TFRecordOptions(compression_type=compression or "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for start in range(0, num_rows, _WRITE_CHUNK):
            for record in serialize(columns, schema, start, min(start + _WRITE_CHUNK, num_rows)):
                writer.write(record)


# --------------------------------------------------------------------------
# Reading: columns, eager batches, and the in-graph dataset.
# --------------------------------------------------------------------------


def _corrupt(path: str, row: Optional[int], err: Exception) -> DataValidationError:
    hint = ""
    if compression_of(path) is None:
        hint = " If the file is GZIP-compressed, its name must end in '.gz'."
    return DataValidationError(
        f"corrupt or truncated TFRecord file: {first_line(err)}.{hint}",
        file=path, row=row, expected="a complete TFRecord file of tf.train.Example records")


def read_columns(path: str) -> List[str]:
    """The column names of a TFRecord file: the keys of its first record."""
    if data_files.file_size(path) == 0:
        raise DataValidationError("empty file (0 bytes)", file=path, expected="at least one record")
    try:
        first = next(iter(_dataset(path, compression_of(path)).take(1)), None)
    except tf.errors.OpError as e:
        raise _corrupt(path, 0, e) from None
    if first is None:
        raise DataValidationError("empty file (0 records)", file=path, expected="at least one record")
    try:
        example = tf.train.Example.FromString(first.numpy())
    except Exception:
        raise DataValidationError("record is not a tf.train.Example", file=path, row=0,
                                  expected="serialized tf.train.Example records") from None
    return sorted(example.features.feature.keys())


def _ragged_spec(schema: TableSchema):
    return {f.name: tf.io.RaggedFeature(f.tf_dtype, row_splits_dtype=tf.int64) for f in schema}


def _scan(records: Sequence[bytes], schema: TableSchema, path: str, row_offset: int) -> None:
    """Finds the first bad record of a batch that TensorFlow refused to parse, and raises."""
    for i, record in enumerate(records):
        row = row_offset + i
        try:
            example = tf.train.Example.FromString(record)
        except Exception:
            raise DataValidationError("record is not a tf.train.Example", file=path, row=row,
                                      expected="serialized tf.train.Example records") from None
        fmap = example.features.feature
        for feature in schema:
            if feature.name not in fmap:
                values = []
            else:
                kind = fmap[feature.name].WhichOneof("kind")
                if kind is None:
                    values = []
                elif kind != _KIND[feature.dtype]:
                    raise DataValidationError(
                        f"wrong type: stored as {kind}", file=path, row=row, feature=feature.name,
                        expected=f"{feature.describe()} in a {_KIND[feature.dtype]}")
                else:
                    values = list(getattr(fmap[feature.name], kind).value)
            arr = np.asarray(values, dtype=np.float32) if feature.dtype == "float32" else np.zeros(len(values))
            check_values(feature, RaggedColumn(arr, np.array([len(values)])), file=path, row_offset=row)


def _count_readable(path: str) -> int:
    """How many records of `path` can be read before the first corrupt one."""
    n = 0
    try:
        for _ in _dataset(path, compression_of(path)):
            n += 1
    except tf.errors.OpError:
        pass
    return n


def iter_batches(path: str, schema: TableSchema, *, batch_size: int = _CHECK_BATCH, validate: bool = True,
                 dense: bool = True) -> Iterator[Tuple[int, Dict[str, np.ndarray]]]:
    """Reads a TFRecord file eagerly in batches.

    Args:
      path: the file.
      schema: the features to read (the file's columns).
      batch_size: rows a batch.
      validate: check counts and values of every row.
      dense: yield dense numpy columns (else yield `{}`: a validation-only pass).

    Yields:
      `(row_offset, {name: np.ndarray})`; strings come as `bytes` objects.
    """
    spec = _ragged_spec(schema)
    iterator = iter(_dataset(path, compression_of(path)).batch(batch_size))
    offset = 0
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            raise _corrupt(path, _count_readable(path), e) from None
        try:
            parsed = tf.io.parse_example(serialized, spec)
            failure = None
        except (tf.errors.OpError, UnicodeDecodeError) as e:
            # TF's message can hold the raw record, which may not even decode as UTF-8.
            failure = first_line(e)
        if failure is not None:
            # Outside the `except` so the TF error is not chained onto ours.
            _scan(serialized.numpy().tolist(), schema, path, offset)
            raise DataValidationError(f"TensorFlow could not parse the records: {failure}", file=path, row=offset)
        columns = {name: RaggedColumn(rt.flat_values.numpy(), rt.row_lengths().numpy())
                   for name, rt in parsed.items()}
        n = int(serialized.shape[0])
        if dense:
            yield offset, batch_to_dense(schema, columns, file=path, row_offset=offset, validate=validate)
        else:
            if validate:
                for feature in schema:
                    check_values(feature, columns[feature.name], file=path, row_offset=offset)
            yield offset, {}
        offset += n
    if offset == 0:
        raise DataValidationError("empty file (0 records)", file=path, expected="at least one record")


def make_dataset(files: Sequence[str], schema: TableSchema) -> tf.data.Dataset:
    """An unbatched dataset of `{name: tensor}` that parses in the graph."""
    spec = {}
    for f in schema:
        if f.kind == "list":
            spec[f.name] = tf.io.RaggedFeature(f.tf_dtype, row_splits_dtype=tf.int64)
        else:
            spec[f.name] = tf.io.FixedLenFeature(f.shape, f.tf_dtype)
    lists = [f for f in schema if f.kind == "list"]

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, spec)
        for f in lists:
            parsed[f.name] = parsed[f.name].to_tensor(default_value=f.pad, shape=[None, f.length])
        return parsed

    # A dataset of file names flat-mapped to readers, never a chain of `concatenate`s: tf.distribute's
    # auto-sharding (AutoShardPolicy.FILE) finds the file list in this shape and gives each worker
    # its own files; it cannot split a concatenation (GZIP and plain files mixed).
    compressions = [compression_of(p) or "" for p in files]
    records = tf.data.Dataset.from_tensor_slices((list(files), compressions)).flat_map(
        lambda path, compression: tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=1 << 20))
    return (records.batch(_PARSE_BATCH)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .unbatch())
