"""Input pipelines: impressions files + catalog → batched feature dicts for `model.fit`.

    impressions files ──read_table──► join_catalog (by video_id, in the graph)
                      ──shuffle──► batch ──► prefetch

The catalog is read once into memory (`read_table_numpy`) and joined inside
tf.data, so each impression carries the content features of its video (title,
category, duration, image and audio embeddings) without the files repeating
them. Unknown video ids are caught before training by an eager pass that names
the file and row.

Under `tf.distribute` (`distributed_impressions`), `batch_size` is the global
batch, and each worker reads its own files: TFRecord through tf.data's
auto-sharding by file, Parquet and CSV through an explicit split of the file
list per input pipeline (see `distributed_impressions`).

Example:

    catalog = load_catalog("data/catalog/", schemas["catalog"])
    train = impressions_dataset("data/train/", catalog, schemas["impressions"], batch_size=1024, shuffle=True)
    model.fit(train)
"""

import math
import os
from typing import Dict, Mapping, NamedTuple, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import list_files, shard_files, table_format
from tfrec_video.data.integrity import check_unique_ids
from tfrec_video.data.join import check_ids_in_catalog, join_catalog
from tfrec_video.data.schema import TableSchema
from tfrec_video.data.tables import count_rows, read_table, read_table_numpy_with_files
from tfrec_video.distribute import num_workers
from tfrec_video.errors import ConfigError

# Raw media stays out of training batches: the embedding step turns it into vectors first.
CONTENT_FEATURES = ("title", "category", "duration_s", "image_embedding", "audio_embedding", "title_embedding")


def load_catalog(paths, schema: TableSchema, validate: bool = True) -> Dict[str, np.ndarray]:
    """The whole catalog as column arrays (`read_table_numpy`), each video once.

    Raises:
      DataValidationError: a bad row (with `validate`), or a `video_id` that
        appears twice, naming the file and line or row of both.
    """
    catalog, file_rows = read_table_numpy_with_files(paths, schema, validate=validate)
    # The model holds one catalog row per video: a second row of an id would make it ambiguous.
    check_unique_ids(catalog["video_id"], file_rows, "video_id")
    return catalog


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
    input_context: Optional[tf.distribute.InputContext] = None,
    repeat: bool = False,
    num_rows: Optional[int] = None,
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
      input_context: one input pipeline of a `tf.distribute` strategy (what
        `strategy.distribute_datasets_from_function` passes its function).
        Then `batch_size` is the global batch, the dataset's batches are one
        replica's share of it, and the dataset reads only this pipeline's share
        of the files (`read_table(shard=...)`).
      repeat: repeat the rows forever (reshuffled each pass when `shuffle`);
        `model.fit` then needs `steps_per_epoch`.
      num_rows: the number of rows of `paths`, when known (`adapt` counts
        them): the dataset then has a known cardinality, so Keras shows
        `N/N` steps from the first epoch on instead of `N/Unknown`. It must
        be exact (a different count fails at the end of the pass); it is
        ignored with `repeat` or `input_context`, whose passes are not the table.

    Returns:
      A `tf.data.Dataset` of feature dicts, batched. Without `input_context` it
      carries the auto-shard policy `read_table` chose for the format.

    Raises:
      ConfigError: with `input_context`, a batch that does not divide between
        the replicas, or fewer files than input pipelines.
    """
    if batch_size <= 0:
        raise ValueError(f"impressions_dataset: batch_size must be positive, got {batch_size}.")
    if features is None:
        features = [f for f in CONTENT_FEATURES if f in catalog]
    shard = None
    if input_context is not None:
        batch_size = _per_replica_batch(batch_size, input_context.num_replicas_in_sync)
        shard = (input_context.input_pipeline_id, input_context.num_input_pipelines)
    if validate:
        check_ids_in_catalog(paths, schema, catalog["video_id"])
    data = read_table(paths, schema, validate=validate, shuffle_files=shuffle, seed=seed, shard=shard)
    if num_rows is not None and not repeat and shard is None:
        # Rows streamed from files have no known count; batching derives the exact steps from this one.
        data = data.apply(tf.data.experimental.assert_cardinality(int(num_rows)))
    if shuffle:
        data = data.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        data = data.repeat()
    data = data.batch(batch_size, drop_remainder=drop_remainder)
    data = join_catalog(data, catalog, features=features)
    return data.prefetch(tf.data.AUTOTUNE)


class DistributedInput(NamedTuple):
    """What `model.fit` needs to read a distributed input: `data`, and `steps` per epoch (None: until it ends)."""

    data: object
    steps: Optional[int]


def distributed_impressions(strategy: tf.distribute.Strategy, paths, catalog: Mapping[str, np.ndarray],
                            schema: TableSchema, batch_size: int, **options) -> DistributedInput:
    """`impressions_dataset` for `model.fit` under `strategy`: split between workers, then replicas.

    `batch_size` is the global batch: one step trains on `batch_size` rows in
    all, `batch_size / strategy.num_replicas_in_sync` on each replica.

    How the rows are split between workers (input pipelines) depends on the format:

    * TFRecord: the dataset goes to `model.fit`, which distributes it
      (`strategy.experimental_distribute_dataset`). Its files come from a
      dataset of file names and its auto-shard policy is `FILE`, so each worker
      reads every N-th file.
    * Parquet and CSV are read in Python (`Dataset.from_generator`), which
      auto-sharding can split only by row, after every worker has read every
      file. They go through `strategy.distribute_datasets_from_function`
      instead, and each input pipeline reads every N-th file itself.

    Under a strategy with more than one replica the rows repeat, and an epoch
    is `ceil(rows / batch_size)` steps (the rows are counted first): a worker
    whose files run out before the others', or the last partial batch split
    between replicas, would otherwise leave a replica an empty batch, which
    stops training (in TensorFlow 2.17 a `Conv1D`, as in the title encoder,
    fails on zero rows). Each worker should therefore have files of about the
    same size (one whose share is smaller sees its rows more often), and must
    have at least one: fewer files than workers is an error. Every worker
    shuffles the file list with the same seed, so their shares are disjoint.
    Under the default strategy the dataset is `impressions_dataset`'s, one
    pass per epoch.

    Args:
      strategy: the training strategy (`tfrec_video.distribute.make_strategy`).
      paths: impressions files (file, directory, glob or list).
      catalog: the catalog from `load_catalog`.
      schema: the impressions schema.
      batch_size: the global batch; a multiple of the number of replicas.
      **options: the other `impressions_dataset` arguments (shuffle, seed, features, ...).

    Returns:
      A `DistributedInput`: `data` is a `tf.data.Dataset` (TFRecord, or the
      default strategy) or a `tf.distribute.DistributedDataset` (Parquet, CSV),
      and `steps` is what `model.fit` takes as `steps_per_epoch` (or
      `validation_steps`), None under the default strategy.

    Raises:
      ConfigError: a batch that does not divide between the replicas, or fewer
        files than workers.

    Example:

    >>> strategy = make_strategy("mirrored")  # doctest: +SKIP
    >>> with strategy.scope():  # doctest: +SKIP
    ...     model = VideoRecModel(config, vocabularies, catalog=catalog)
    ...     model.compile(tf.keras.optimizers.Adam(2e-3))
    >>> train = distributed_impressions(strategy, "data/train/", catalog, schema, 4096, shuffle=True)  # doctest: +SKIP
    >>> model.fit(train.data, steps_per_epoch=train.steps, epochs=3)  # doctest: +SKIP
    """
    _per_replica_batch(batch_size, strategy.num_replicas_in_sync)
    workers = num_workers(strategy)
    if strategy.num_replicas_in_sync == 1 and workers == 1:
        return DistributedInput(impressions_dataset(paths, catalog, schema, batch_size, **options), None)
    if workers > 1:
        shard_files(list_files(paths), 0, workers)  # the fewer-files-than-workers error, before any worker starts
    num_rows = options.pop("num_rows", None)
    steps = math.ceil((count_rows(paths, schema) if num_rows is None else num_rows) / batch_size)
    if table_format(paths) == "tfrecord":
        return DistributedInput(impressions_dataset(paths, catalog, schema, batch_size, repeat=True, **options), steps)
    data = strategy.distribute_datasets_from_function(
        lambda context: impressions_dataset(paths, catalog, schema, batch_size, input_context=context, repeat=True,
                                            **options))
    return DistributedInput(data, steps)


def _per_replica_batch(batch_size: int, replicas: int) -> int:
    if batch_size % replicas:
        raise ConfigError(f"the global batch size {batch_size} does not divide between {replicas} replicas; "
                          f"make TrainingConfig.batch_size a multiple of {replicas}.")
    return batch_size // replicas


def builtin_splits(dataset_dir: str) -> Dict[str, str]:
    """Directories of the built-in dataset's tables: `catalog`, `train`, `test`,
    and `validation` when the dataset has one.

    `catalog`, `train` and `test` are always returned and must hold data files
    (else `DataValidationError` naming the directory). `validation` is returned
    only when the dataset has a `validation/` directory with data files in it:
    datasets generated with `validation_fraction=0` (and those from before
    validation splits) have none.
    """
    splits = {name: os.path.join(dataset_dir, name) for name in ("catalog", "train", "test")}
    for name, path in splits.items():
        list_files(path)  # raises a clear error naming the directory when it is empty
    from tfrec_video.errors import DataValidationError

    validation = os.path.join(dataset_dir, "validation")
    if os.path.isdir(validation):
        try:
            list_files(validation)
        except DataValidationError:
            pass  # an empty validation/ folder: no validation split
        else:
            splits["validation"] = validation
    return splits
