"""Files of a table: formats from extensions, listing paths and globs, opening local or remote files.

A *table* (the catalog, the impressions) is one or more files of one format,
named by a file, a directory, a glob or a list of them:

| format     | extensions                                            | module                      |
|------------|-------------------------------------------------------|-----------------------------|
| `tfrecord` | `.tfrecord`, `.tfrec`, `.tfrecords` (+ `.gz` = GZIP)  | `tfrec_video.data.tfrecord` |
| `parquet`  | `.parquet`, `.pq`                                     | `tfrec_video.data.parquet`  |
| `csv`      | `.csv`                                                | `tfrec_video.data.csv`      |

Paths can be local or use any `tf.io.gfile` scheme: `gs://` natively, and
`s3://`, `az://`, `hdfs://` through `tensorflow_io`, which `tfrec_video.data`
imports. Reading and writing the rows is `tfrec_video.data.tables`.

Example:

>>> detect_format("s3://bucket/impressions/part-0001.tfrecord.gz")
'tfrecord'
"""

import io as pyio
import os
from typing import List, Optional, Sequence, Union

from tfrec_video.errors import ConfigError, DataValidationError

FORMATS = ("tfrecord", "parquet", "csv")
EXTENSIONS = {
    ".tfrecord": "tfrecord", ".tfrec": "tfrecord", ".tfrecords": "tfrecord",
    ".parquet": "parquet", ".pq": "parquet",
    ".csv": "csv",
}
# Written next to the destination, then renamed over it (see `tables.write_table`).
TEMP_MARKER = ".tmp-"
_SUPPORTED = ", ".join(list(EXTENSIONS) + [".tfrecord.gz", ".tfrec.gz", ".tfrecords.gz"])

PathLike = Union[str, os.PathLike]


def gfile():
    """`tf.io.gfile`, imported on first use (listing local files needs no TensorFlow start-up)."""
    import tensorflow as tf

    return tf.io.gfile


def is_local(path: str) -> bool:
    """Whether `path` is a plain local path (no `scheme://`)."""
    return "://" not in str(path)


class _GFileIO(pyio.RawIOBase):
    """A `tf.io.gfile.GFile` as a standard raw binary stream.

    pyarrow and `io.TextIOWrapper` want the full `io` protocol (`closed`,
    `readinto`, ...), which `GFile` lacks.
    """

    def __init__(self, path: str, mode: str):
        super().__init__()
        self._file = gfile().GFile(path, mode)
        self._mode = mode

    def readable(self):
        return "r" in self._mode

    def writable(self):
        return "w" in self._mode or "a" in self._mode

    def seekable(self):
        return self.readable()

    def readinto(self, buffer):
        data = self._file.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def write(self, data):
        self._file.write(bytes(data))
        return len(data)

    def seek(self, offset, whence=0):
        self._file.seek(offset, whence)
        return self._file.tell()

    def tell(self):
        return self._file.tell()

    def close(self):
        if not self.closed:
            self._file.close()
        super().close()


def open_file(path: str, mode: str):
    """Opens `path` as a binary stream (`"rb"` or `"wb"`), locally or with `tf.io.gfile`."""
    if is_local(path):
        return open(path, mode)
    raw = _GFileIO(path, mode)
    return pyio.BufferedReader(raw, 1 << 20) if "r" in mode else pyio.BufferedWriter(raw, 1 << 20)


def file_size(path: str) -> int:
    """Size of `path` in bytes."""
    if is_local(path):
        return os.path.getsize(path)
    return gfile().stat(path).length


def path_str(path: PathLike) -> str:
    """A path or `os.PathLike` as a string."""
    return os.fspath(path) if isinstance(path, os.PathLike) else str(path)


def detect_format(path: PathLike) -> str:
    """The format of a file, from its extension.

    Args:
      path: a file name, local or remote. A trailing `.gz` is allowed on
        TFRecord files (GZIP compression).

    Returns:
      `"tfrecord"`, `"parquet"` or `"csv"`.

    Raises:
      DataValidationError: for any other extension, naming the supported ones.

    Example:

    >>> detect_format("s3://bucket/impressions/part-0001.tfrecord.gz")
    'tfrecord'
    """
    path = path_str(path)
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    stem = name[:-3] if name.endswith(".gz") else name
    ext = os.path.splitext(stem)[1]
    fmt = EXTENSIONS.get(ext)
    if fmt is None or (name.endswith(".gz") and fmt != "tfrecord"):
        raise DataValidationError(
            "unknown file format: cannot tell the format from the file name", file=path,
            expected=f"one of the extensions {_SUPPORTED}, or pass format= one of {FORMATS}")
    return fmt


def check_format(fmt: str) -> str:
    """`fmt` if it is one of `FORMATS`; a `DataValidationError` otherwise."""
    if fmt not in FORMATS:
        raise DataValidationError(f"unknown format {fmt!r}", expected=f"one of {FORMATS}")
    return fmt


def _is_data_name(name: str, format: Optional[str]) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    # Hidden files, Spark/Hadoop markers (_SUCCESS, .crc) and our own unfinished writes.
    if not base or base.startswith((".", "_")) or TEMP_MARKER in base:
        return False
    if format is not None:
        return True
    try:
        detect_format(base)
        return True
    except DataValidationError:
        return False


def list_files(paths: Union[PathLike, Sequence[PathLike]], format: Optional[str] = None) -> List[str]:
    """Expands files, directories and glob patterns into a sorted list of files.

    Args:
      paths: a path or a list of paths. Each is a file, a directory (its data
        files: names with a known extension, or every visible file when
        `format` is given; not recursive) or a glob pattern (`*`, `?`, `[...]`).
        Local or any `tf.io.gfile` scheme.
      format: the format, if known; lets directories hold files without
        extensions (`part-00000`).

    Returns:
      The files, sorted and without duplicates. Hidden files, names starting
      with `_` (`_SUCCESS`) and unfinished writes are skipped in directories
      and glob matches.

    Raises:
      DataValidationError: if a path matches nothing or no file is found.

    Example:

    >>> list_files(["data/impressions/", "extra/*.parquet"])  # doctest: +SKIP
    ['data/impressions/part-0.parquet', 'data/impressions/part-1.parquet', 'extra/x.parquet']
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if format is not None:
        check_format(format)
    fs = gfile()
    found = set()
    for raw in paths:
        path = path_str(raw)
        if any(c in path for c in "*?["):
            matches = [m for m in fs.glob(path) if not fs.isdir(m) and _is_data_name(m, format)]
            if not matches:
                raise DataValidationError(f"the pattern {path!r} matches no data file", file=path)
            found.update(matches)
        elif fs.isdir(path):
            entries = [fs.join(path, e) for e in fs.listdir(path)]
            files = [e for e in entries if not fs.isdir(e) and _is_data_name(e, format)]
            if not files:
                raise DataValidationError(
                    "the directory holds no data files", file=path,
                    expected=f"files with one of the extensions {_SUPPORTED}")
            found.update(files)
        elif fs.exists(path):
            found.add(path)
        else:
            raise DataValidationError("no such file or directory", file=path)
    if not found:
        raise DataValidationError("no input files given", expected="a file, a directory or a glob pattern")
    return sorted(found)


def files_format(files: Sequence[str], format: Optional[str]) -> str:
    """The one format of `files` (`format` when given); files of mixed formats are an error."""
    if format is not None:
        return check_format(format)
    first = detect_format(files[0])
    for f in files[1:]:
        other = detect_format(f)
        if other != first:
            raise DataValidationError(
                f"files {files[0]!r} ({first}) and {f!r} ({other}) have different formats; "
                "one table must be in one format", file=f, expected=first)
    return first


def table_format(paths: Union[PathLike, Sequence[PathLike]], format: Optional[str] = None) -> str:
    """The format of a table's files (`"tfrecord"`, `"parquet"` or `"csv"`), which must all agree.

    Example:

    >>> table_format("data/train/*.parquet")  # doctest: +SKIP
    'parquet'
    """
    return files_format(list_files(paths, format), format)


def shard_files(files: Sequence[str], index: int, count: int) -> List[str]:
    """The files of share `index` out of `count`: positions `index`, `index + count`, ...

    Raises:
      ConfigError: `index` is not in `[0, count)`, or there are fewer files than
        shares (a share would be empty, and its worker would have nothing to train on).

    Example:

    >>> shard_files(["a", "b", "c", "d", "e"], 1, 2)
    ['b', 'd']
    """
    if not 0 <= int(index) < int(count):
        raise ConfigError(f"shard index {index} is not in [0, {count}).")
    if len(files) < count:
        raise ConfigError(
            f"{len(files)} input file(s) cannot be split between {count} workers: each worker reads whole files, "
            f"so the table needs at least one file per worker (better, many). Write it as {count} or more "
            f"files (write_table one part per file), or train on fewer workers. Files: {list(files)[:5]}")
    return list(files)[int(index)::int(count)]


def _umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it (and restore it at once)
    os.umask(mask)
    return mask


def follow_umask(root: str) -> None:
    """Sets `root` and every directory under it to `0o777 & ~umask`, every file to `0o666 & ~umask`.

    Args:
      root: a local directory, written under a temporary name (`tempfile.mkdtemp` makes it 0700
        whatever the umask) before it is renamed into place: an export version, a saved model.
    """
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)
