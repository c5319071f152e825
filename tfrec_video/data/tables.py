"""Reading and writing tables in any supported format, locally or remotely.

A *table* (the catalog, the impressions) is one or more files of one format
(`tfrec_video.data.files` lists them and tells their format); each format has
its module, `tfrec_video.data.tfrecord`, `parquet` and `csv`, and this module
dispatches to it.

A `TableSchema` says what every column must hold, and every reader checks it:
`read_table` first streams over all files (bounded memory) and raises a
`DataValidationError` naming the file, row and feature of the first problem,
then returns a `tf.data.Dataset` that yields one unbatched row at a time as
`{feature_name: tensor}` with fully static shapes:

* scalars have shape `()`, vectors `(length,)`, lists `(length,)` padded with
  the feature's pad value (`""` for strings);
* dtypes are `tf.int64`, `tf.float32` or `tf.string`.

Example:

>>> import tfrec_video
>>> from tfrec_video.data import write_table, read_table
>>> from tfrec_video.data.schema import impressions_schema
>>> schema = impressions_schema(history_length=3)
>>> path = write_table({"user_id": ["u1"], "video_id": ["v9"], "clicked": [1],
...                     "history": [["v4", "v2"]]}, "/tmp/imp.tfrecord", schema)
>>> row = next(iter(read_table(path, schema)))
>>> row["history"].numpy()
array([b'v4', b'v2', b''], dtype=object)
"""

import importlib
import os
import random
import uuid
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from tfrec_video.data.files import (
    TEMP_MARKER,
    PathLike,
    check_format,
    detect_format,
    files_format,
    gfile,
    is_local,
    list_files,
    path_str,
    shard_files,
)
from tfrec_video.data.schema import TableSchema
from tfrec_video.errors import DataValidationError

_MODULES = {"tfrecord": "tfrec_video.data.tfrecord", "parquet": "tfrec_video.data.parquet",
            "csv": "tfrec_video.data.csv"}


def _module(fmt: str):
    return importlib.import_module(_MODULES[check_format(fmt)])


def table_columns(paths: Union[PathLike, Sequence[PathLike]], format: Optional[str] = None) -> List[str]:
    """The column names of a table's first file (`read_table` checks that the others agree)."""
    files = list_files(paths, format)
    return list(_module(files_format(files, format)).read_columns(files[0]))


def open_table(paths, schema: TableSchema, format: Optional[str]):
    """The files of a table, their format module and the sub-schema of the columns they share.

    Raises:
      DataValidationError: a file's columns do not fit `schema`, or the files disagree on them.
    """
    from tfrec_video.data import validation

    if not isinstance(schema, TableSchema):
        raise TypeError(f"schema must be a TableSchema, got {type(schema).__name__}")
    files = list_files(paths, format)
    module = _module(files_format(files, format))
    columns = []
    for f in files:
        names = module.read_columns(f)
        validation.check_column_names(f, names, schema)
        columns.append(names)
    check_same_columns(files, columns)
    return files, module, schema.select(columns[0])


def check_same_columns(files: Sequence[str], columns: Sequence[Sequence[str]]) -> None:
    """Raises unless every file has the same set of columns, naming two files that differ."""
    first = set(columns[0])
    for file, names in zip(files[1:], columns[1:]):
        if set(names) != first:
            parts = [f"only {path!r} has {cols}" for path, cols in (
                (files[0], sorted(first - set(names))), (file, sorted(set(names) - first))) if cols]
            raise DataValidationError(
                f"files {files[0]!r} and {file!r} have different columns ({'; '.join(parts)}); "
                "every file of one table must have the same columns", file=file,
                expected=f"the columns of {files[0]!r}: {sorted(first)}")


def write_table(columns: Mapping[str, object], path: PathLike, schema: TableSchema,
                format: Optional[str] = None) -> str:
    """Writes one file of a table, atomically.

    The columns are validated first, with the same checks a reader makes. The
    data goes to `path + ".tmp-<random>"` in the same directory, which is then
    renamed over `path`, so a failed or interrupted write never leaves a half
    file and never clobbers an existing good one. Missing parent directories
    are created.

    Args:
      columns: feature name -> per-row values. Scalars: a 1-D array or list.
        Vectors: a 2-D `[n, length]` float array (or a list of sequences).
        Lists: a list of sequences of 0 to `length` values (ragged), or a 2-D
        array padded with the feature's pad value. Strings are `str`, bytes
        features `bytes`. Only the columns given are written; every required
        feature must be among them and unknown names are an error.
      path: the file to write, local or remote.
      schema: the table schema.
      format: `"tfrecord"`, `"parquet"` or `"csv"`; `None` detects it from the
        extension (`.tfrecord.gz` writes GZIP).

    Returns:
      `path`, as a string.

    Raises:
      DataValidationError: naming the file, row and feature of the first
        problem; nothing is written then.

    Example:

    >>> import numpy as np
    >>> from tfrec_video.data.schema import catalog_schema
    >>> schema = catalog_schema(image_dim=4, audio_dim=2)
    >>> write_table({"video_id": ["v1", "v2"], "title": ["Cats", "猫"],
    ...              "image_embedding": np.zeros([2, 4], np.float32)},
    ...             "/tmp/catalog.parquet", schema)
    '/tmp/catalog.parquet'
    """
    from tfrec_video.data import validation

    path = path_str(path)
    fmt = check_format(format) if format is not None else detect_format(path)
    module = _module(fmt)
    num_rows, ragged, sub = validation.normalize_columns(columns, schema, file=path)
    if hasattr(module, "check_writable"):  # Format-specific limits, checked before any file exists.
        module.check_writable(path, ragged, sub)
    compression = module.compression_of(path) if fmt == "tfrecord" else None

    directory = os.path.dirname(path) if is_local(path) else path.rsplit("/", 1)[0]
    if directory:
        if is_local(path):
            os.makedirs(directory, exist_ok=True)
        elif not gfile().exists(directory):
            gfile().makedirs(directory)
    temp = f"{path}{TEMP_MARKER}{uuid.uuid4().hex[:12]}"
    try:
        module.write(temp, num_rows, ragged, sub, compression=compression)
        if is_local(path):
            os.replace(temp, path)
        else:
            gfile().rename(temp, path, overwrite=True)
    except BaseException:
        try:
            if is_local(temp):
                if os.path.exists(temp):
                    os.remove(temp)
            elif gfile().exists(temp):
                gfile().remove(temp)
        except Exception:  # Keep the original error; a stray temp file is harmless to readers.
            pass
        raise
    return path


def read_table(paths: Union[PathLike, Sequence[PathLike]], schema: TableSchema, format: Optional[str] = None,
               validate: bool = True, shuffle_files: bool = False, seed: Optional[int] = None,
               shard: Optional[Tuple[int, int]] = None, progress: bool = False):
    """Reads a table as an unbatched `tf.data.Dataset` of `{feature: tensor}`.

    Under `tf.distribute` with several workers, every worker must read a
    different part of the table. The dataset says how in its options
    (`experimental_distribute.auto_shard_policy`), which `tf.distribute` applies
    when it distributes the dataset: TFRecord files are read through a dataset of
    file names, so they are split by file (`AutoShardPolicy.FILE`: each worker
    reads only its own files). Parquet and CSV are fed from Python
    (`Dataset.from_generator`), which auto-sharding cannot split by file, so they
    fall back to `AutoShardPolicy.DATA` (every worker reads every file and keeps
    its share of the rows); pass `shard=` to split their files instead, as
    `tfrec_video.data.pipeline.distributed_impressions` does.

    Args:
      paths: a file, a directory, a glob pattern, or a list of those; local or
        any `tf.io.gfile` scheme (`s3://`, `az://`, `hdfs://`, `gs://`).
      schema: the table schema. The dataset has the features the files have;
        optional features missing from the files are absent.
      format: `"tfrecord"`, `"parquet"`, `"csv"`, or `None` to detect it from
        the extensions (all files must then agree).
      validate: first stream over every file once and check every row against
        the schema, raising `DataValidationError` at the first problem. With
        `False`, bad data fails later, inside the input pipeline.
      shuffle_files: visit the files in a random order (rows inside a file
        keep their order); otherwise files are read in sorted order.
      seed: seed for `shuffle_files`.
      shard: `(index, count)`: read only the files at positions `index`,
        `index + count`, ... of the (shuffled) file list, e.g. one input
        pipeline's share `(input_pipeline_id, num_input_pipelines)`. Every
        worker must then use the same `seed`, so that their shares are
        disjoint. The dataset is then marked not to be sharded again.
      progress: show a progress bar (tqdm, on stderr) over the files of the
        validation pass, which reads every row before training starts.

    Returns:
      A `tf.data.Dataset` whose elements are dicts of tensors with static
      shapes: `()` for scalars, `(length,)` for vectors and lists (padded).

    Raises:
      DataValidationError: for missing or unreadable files, an unknown format,
        files whose columns differ, or (with `validate`) any bad row.
      ConfigError: `shard` asks for more shares than there are files.

    Example:

    >>> from tfrec_video.data.schema import impressions_schema
    >>> ds = read_table("data/impressions/", impressions_schema())  # doctest: +SKIP
    >>> ds = ds.batch(4096).prefetch(2)  # doctest: +SKIP
    """
    files, module, sub = open_table(paths, schema, format)
    if validate:
        from tqdm.auto import tqdm

        for f in tqdm(files, desc=f"checking the {schema.name} files", unit="file", disable=not progress,
                      leave=False):
            for _ in module.iter_batches(f, sub, validate=True, dense=False):
                pass
    if shuffle_files:
        random.Random(seed).shuffle(files)
    if shard is not None:
        files = shard_files(files, *shard)
    if hasattr(module, "make_dataset"):
        dataset = module.make_dataset(files, sub)
    elif hasattr(module, "stream_dataset"):
        dataset = module.stream_dataset(files, sub)
    else:
        dataset = _generator_dataset(files, sub, module)
    return dataset.with_options(_sharding_options(
        "OFF" if shard is not None else "FILE" if hasattr(module, "make_dataset") else "DATA"))


def count_rows(paths: Union[PathLike, Sequence[PathLike]], schema: TableSchema, format: Optional[str] = None) -> int:
    """The number of rows of a table, streaming one column of each file (Parquet reads only that column).

    Example:

    >>> count_rows("data/train/", impressions_schema())  # doctest: +SKIP
    480000
    """
    files, module, sub = open_table(paths, schema, format)
    one_column = sub.select([next(iter(sub)).name])
    total = 0
    for path in files:
        for _, batch in module.iter_batches(path, one_column, validate=False, dense=True):
            total += len(next(iter(batch.values())))
    return total


def _sharding_options(policy: str):
    """`tf.data.Options` whose auto-shard policy is `AutoShardPolicy.<policy>` (see `read_table`)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, policy)
    return options


def _generator_dataset(files: Sequence[str], schema: TableSchema, module):
    """A dataset fed by a format module's `iter_batches`, a few thousand rows a hop."""
    import tensorflow as tf

    files = list(files)
    signature = {f.name: tf.TensorSpec((None,) + f.shape, f.tf_dtype) for f in schema}

    def batches():
        for path in files:
            for _, batch in module.iter_batches(path, schema, validate=False, dense=True):
                yield batch

    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    # Let the generator run ahead of the consumer by a couple of batches.
    return dataset.prefetch(2).unbatch()


def _to_str(values: np.ndarray, path: str, feature, offset: int) -> np.ndarray:
    out = np.empty(values.shape, dtype=object)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for i, v in enumerate(flat_in):
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                row = offset + i // (values.shape[1] if values.ndim == 2 else 1)
                raise DataValidationError("bytes that are not valid UTF-8 text", file=path, row=row,
                                          feature=feature.name, expected=feature.describe()) from None
        flat_out[i] = v
    return out


def read_table_numpy(paths: Union[PathLike, Sequence[PathLike]], schema: TableSchema,
                     format: Optional[str] = None, validate: bool = True) -> Dict[str, np.ndarray]:
    """Reads a whole table into memory as numpy arrays (used for the catalog).

    Args:
      paths: as for `read_table`.
      schema: the table schema.
      format: as for `read_table`.
      validate: check every row against the schema.

    Returns:
      `{feature: array}` for the features the files have: `string` features as
      object arrays of `str`, `bytes` features as object arrays of `bytes`,
      int64 / float32 arrays for numbers; vectors `[n, length]` float32, lists
      `[n, length]` padded with the feature's pad value.

    Example:

    >>> from tfrec_video.data.schema import catalog_schema
    >>> catalog = read_table_numpy("data/catalog.parquet", catalog_schema())  # doctest: +SKIP
    >>> catalog["title"][0]  # doctest: +SKIP
    'How to brew coffee'
    """
    return read_table_numpy_with_files(paths, schema, format, validate)[0]


def read_table_numpy_with_files(paths: Union[PathLike, Sequence[PathLike]], schema: TableSchema,
                                format: Optional[str] = None, validate: bool = True
                                ) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, int]]]:
    """`read_table_numpy`, and where each row came from: `(columns, [(file, rows), ...])`.

    The second part lists every file in the order its rows were stacked, with
    its number of rows, so that a check across rows (a duplicate id) can name
    the file and row of each (`tfrec_video.data.integrity.source_of`).
    """
    files, module, sub = open_table(paths, schema, format)
    parts: Dict[str, List[np.ndarray]] = {f.name: [] for f in sub}
    file_rows: List[Tuple[str, int]] = []
    first = next(iter(sub)).name
    for path in files:
        rows = 0
        for offset, batch in module.iter_batches(path, sub, validate=validate, dense=True):
            for f in sub:
                values = batch[f.name]
                if f.dtype == "string":
                    values = _to_str(values, path, f, offset)
                parts[f.name].append(values)
            rows += len(batch[first])
        file_rows.append((path, rows))
    out = {}
    for f in sub:
        chunks = parts[f.name]
        out[f.name] = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if out[f.name].dtype != f.numpy_dtype and f.numpy_dtype is not object:
            out[f.name] = out[f.name].astype(f.numpy_dtype)
    return out, file_rows
