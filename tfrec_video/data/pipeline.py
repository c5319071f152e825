"""Input pipelines: impressions files + catalog → batched feature dicts for `model.fit`.

    impressions files ──read_table──► join_catalog (by video_id, in the graph)
                      ──shuffle──► batch ──► prefetch

The catalog is read once into memory (`read_table_numpy`) and joined inside
tf.data, so each impression carries the content features of its video (title,
category, duration, image and audio embeddings) without the files repeating
them. Unknown video ids are caught before training by an eager pass that names
the file and row.

Example:

    catalog = load_catalog("data/catalog/", schemas["catalog"])
    train = impressions_dataset("data/train/", catalog, schemas["impressions"], batch_size=1024, shuffle=True)
    model.fit(train)
"""

import os
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.io import list_files, read_table, read_table_numpy
from tfrec_video.data.join import check_ids_in_catalog, join_catalog
from tfrec_video.schema import TableSchema

# Raw media stays out of training batches: the embedding step turns it into vectors first.
CONTENT_FEATURES = ("title", "category", "duration_s", "image_embedding", "audio_embedding")


def load_catalog(paths, schema: TableSchema, validate: bool = True) -> Dict[str, np.ndarray]:
    """The whole catalog as column arrays; duplicate video ids are an error."""
    return read_table_numpy(paths, schema, validate=validate)


def impressions_dataset(
    paths,
    catalog: Mapping[str, np.ndarray],
    schema: TableSchema,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 100_000,
    features: Optional[Sequence[str]] = None,
    validate: bool = True,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batched impressions joined with catalog content features.

    Args:
      paths: impressions files (file, directory, glob or list; any supported format).
      catalog: the catalog from `load_catalog`.
      schema: the impressions schema.
      batch_size: rows per batch.
      shuffle: shuffle files and rows (training); off keeps file order (evaluation).
      seed: shuffle seed.
      shuffle_buffer: rows in the shuffle buffer.
      features: catalog features to join; default every content feature the catalog has.
      validate: run the eager validation pass (and the unknown-video check).
      drop_remainder: drop the last partial batch.

    Returns:
      A `tf.data.Dataset` of feature dicts, batched.
    """
    if batch_size <= 0:
        raise ValueError(f"impressions_dataset: batch_size must be positive, got {batch_size}.")
    if features is None:
        features = [f for f in CONTENT_FEATURES if f in catalog]
    if validate:
        check_ids_in_catalog(paths, schema, catalog["video_id"])
    data = read_table(paths, schema, validate=validate, shuffle_files=shuffle, seed=seed)
    if shuffle:
        data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    data = join_catalog(data, catalog, features=features)
    return data.prefetch(tf.data.AUTOTUNE)


def builtin_splits(dataset_dir: str) -> Dict[str, str]:
    """Directories of the built-in dataset's tables: `catalog`, `train`, `test`."""
    splits = {name: os.path.join(dataset_dir, name) for name in ("catalog", "train", "test")}
    for name, path in splits.items():
        list_files(path)  # raises a clear error naming the directory when it is empty
    return splits
