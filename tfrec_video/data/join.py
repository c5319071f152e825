"""Joining catalog content features onto impressions, inside `tf.data`.

The impressions table names a `video_id` per row; the catalog holds what is
known about each video (title, category, embeddings, media). Ranking needs both
in one example. Rather than materialising a joined table on disk, the catalog
(small: one row per video) is held in memory as constant tensors, and each
impression looks up its catalog row by `video_id` with a
`tf.lookup.StaticHashTable` and takes the features with `tf.gather`. This runs
in the graph, on batched or unbatched datasets, with no Python per row.

An impression whose video is not in the catalog either fails the pipeline
(`on_missing="error"`) or gets an all-zero / empty-string row
(`on_missing="default"`). Because an in-graph failure is a poor error message,
`check_ids_in_catalog` does the same check eagerly over the impression files
and names the file, row (the line, for CSV) and unknown id; `fit_model` runs it
when `adapt` has seen an unknown id (`UnknownVideoError`).

Only the video an impression *shows* must be in the catalog. Its `history` may
name videos the catalog no longer holds (removed, or not yet embedded): the
model pools those as videos without content (`tfrec_video.towers.CatalogTable`).

Example:

>>> import numpy as np, tensorflow as tf
>>> catalog = {"video_id": np.array(["v1", "v2"], dtype=object),
...            "category": np.array(["music", "news"], dtype=object)}
>>> impressions = tf.data.Dataset.from_tensor_slices({"video_id": ["v2", "v1"]})
>>> [row["category"] for row in join_catalog(impressions, catalog).as_numpy_iterator()]
[b'news', b'music']
"""

from typing import Dict, Mapping, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from tfrec_video.data.schema import TableSchema
from tfrec_video.errors import DataValidationError, shorten

ON_MISSING = ("error", "default")


class UnknownVideoError(DataValidationError):
    """An impression's `video_id` is not in the catalog."""


def _id_key(value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, np.bytes_):
        return bytes(value)
    return str(value).encode("utf-8")


def _id_list(ids) -> list:
    return [_id_key(v) for v in np.asarray(ids, dtype=object).reshape(-1)]


def _default_row(values: np.ndarray) -> np.ndarray:
    """One all-zero (numbers) or empty (strings, bytes) row shaped like `values[0]`."""
    if values.dtype == object or values.dtype.kind in "SU":
        sample = values.reshape(-1)[0] if values.size else ""
        row = np.empty((1,) + values.shape[1:], dtype=object)
        row[...] = b"" if isinstance(sample, bytes) else ""
        return row
    return np.zeros((1,) + values.shape[1:], dtype=values.dtype)


def join_catalog(impressions: tf.data.Dataset, catalog: Mapping[str, np.ndarray],
                 features: Optional[Sequence[str]] = None, on_missing: str = "error") -> tf.data.Dataset:
    """Adds catalog features to every impression, looked up by `video_id`.

    Args:
      impressions: a dataset of dicts with a `tf.string` `video_id`, batched
        (`video_id` of shape `[batch]`) or unbatched (shape `()`).
      catalog: the catalog in memory (`read_table_numpy` output): feature name
        -> array with one row per video, including `video_id`.
      features: the catalog features to add; default all but `video_id`.
      on_missing: `"error"`: an impression whose `video_id` is not in the
        catalog fails the pipeline (run `check_ids_in_catalog` first for a
        readable message); `"default"`: it gets zeros / empty strings.

    Returns:
      The impressions dataset with the catalog features added; their shapes
      are the catalog's per-row shapes (after the batch dimension, if any).

    Raises:
      DataValidationError: if the catalog has duplicate `video_id`s or columns
        of different lengths.
      ValueError: for an unknown feature or `on_missing`, or a feature that
        the impressions already have.

    Example:

    >>> catalog = read_table_numpy("catalog.parquet", catalog_schema())  # doctest: +SKIP
    >>> ds = join_catalog(read_table("impressions/", impressions_schema()), catalog)  # doctest: +SKIP
    """
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}.")
    if "video_id" not in catalog:
        raise DataValidationError("the catalog has no video_id column", feature="video_id",
                                  expected="a catalog with one video_id per row")
    spec = impressions.element_spec
    if not isinstance(spec, Mapping) or "video_id" not in spec:
        raise ValueError("join_catalog needs a dataset of dicts with a 'video_id' feature; "
                         f"got element_spec {spec}.")
    if spec["video_id"].dtype != tf.string:
        raise ValueError(f"impressions' video_id must be tf.string, got {spec['video_id'].dtype}.")

    ids = _id_list(catalog["video_id"])
    num_videos = len(ids)
    first_row: Dict[bytes, int] = {}
    for row, key in enumerate(ids):
        if key in first_row:
            raise DataValidationError(
                f"duplicate video_id {key.decode('utf-8', 'replace')!r} (also at row {first_row[key]})",
                file="catalog", row=row, feature="video_id", expected="each video_id once")
        first_row[key] = row

    names = [n for n in catalog if n != "video_id"] if features is None else list(features)
    for name in names:
        if name not in catalog or name == "video_id":
            raise ValueError(f"the catalog has no feature {name!r} to join; it has {sorted(catalog)}.")
        if name in spec:
            raise ValueError(f"the impressions already have a feature {name!r}; "
                             "drop it or leave it out of `features`.")

    tensors = {}
    for name in names:
        values = np.asarray(catalog[name])
        if values.shape[:1] != (num_videos,):
            raise DataValidationError(
                f"has {values.shape[0] if values.ndim else 0} rows but video_id has {num_videos}",
                file="catalog", feature=name, expected="one row per video")
        if on_missing == "default":
            values = np.concatenate([values, _default_row(values)])
        tensors[name] = tf.constant(values)

    # Unknown ids map to -1 ("error") or to the appended default row.
    default_index = -1 if on_missing == "error" else num_videos
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(ids, dtype=tf.string) if ids else tf.zeros([0], tf.string),
            tf.range(num_videos, dtype=tf.int64)),
        default_value=tf.constant(default_index, tf.int64))

    def add_features(row):
        video_id = row["video_id"]
        index = table.lookup(video_id)
        if on_missing == "error":
            missing = tf.reshape(index < 0, [-1])
            check = tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(missing)),
                ["join_catalog: video_id not in the catalog (run check_ids_in_catalog for file and row):",
                 tf.boolean_mask(tf.reshape(video_id, [-1]), missing)], summarize=10)
            with tf.control_dependencies([check]):
                index = tf.identity(index)
        out = dict(row)
        for name, tensor in tensors.items():
            out[name] = tf.gather(tensor, index)
        return out

    return impressions.map(add_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def check_ids_in_catalog(impression_paths: Union[str, Sequence[str]], schema: TableSchema,
                         catalog_ids, format: Optional[str] = None) -> None:
    """Checks eagerly that every impression's `video_id` is in the catalog.

    Streams only the `video_id` column of the impression files (bounded
    memory); call it before building a pipeline with
    `join_catalog(..., on_missing="error")`.

    Args:
      impression_paths: files, directories or globs, as for `read_table`.
      schema: the impressions schema.
      catalog_ids: the catalog's video ids (`str` or `bytes`).
      format: the impressions' format, or `None` to detect it.

    Raises:
      UnknownVideoError: a `DataValidationError` naming the file, row (line,
        for CSV) and the first unknown id.

    Example:

    >>> check_ids_in_catalog("impressions/", impressions_schema(), catalog["video_id"])  # doctest: +SKIP
    """
    from tfrec_video.data.files import files_format
    from tfrec_video.data.integrity import locate
    from tfrec_video.data.tables import open_table

    known = set(_id_list(catalog_ids))
    files, module, _ = open_table(impression_paths, schema, format)
    fmt = files_format(files, format)
    video_only = schema.select(["video_id"])
    for path in files:
        for offset, batch in module.iter_batches(path, video_only, validate=False, dense=True):
            for i, value in enumerate(batch["video_id"]):
                key = _id_key(value)
                if key not in known:
                    raise UnknownVideoError(
                        f"video_id {shorten(key.decode('utf-8', 'replace'))} is not in the catalog", file=path,
                        feature="video_id", expected="a video_id listed in the catalog: the video an impression "
                        "shows must be known, only its history may name others", **locate(path, offset + i, fmt))
