"""Training a `VideoRecModel` from files: adapt, compile, `model.fit`.

This is the code path shared by `tfrec-video quickstart` and scripts. It is
plain Keras underneath: `fit_model` returns the model and its Keras `History`,
and everything it does a notebook user can do by hand:

    catalog = load_catalog(catalog_dir, schemas["catalog"])
    vocab = adapt(catalog, read_table(train_dir, schemas["impressions"]))
    model = VideoRecModel(ModelConfig(), vocab, catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(ModelConfig().learning_rate))
    model.fit(impressions_dataset(train_dir, catalog, schemas["impressions"], 1024, shuffle=True), epochs=3)

Scale-out and precision are two arguments: `fit_model(..., strategy=...)` builds
and compiles the model inside `strategy.scope()` and splits the input between
workers and replicas (`tfrec_video.distribute`, and
`tfrec_video.data.pipeline.distributed_impressions`; `TrainingConfig.batch_size`
is then the global batch), and `TrainingConfig(mixed_precision=True)` trains
under Keras's `mixed_float16` policy (`dtype_policy`).
"""

import collections
import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from tfrec_video.data.integrity import check_splits_agree
from tfrec_video.data.join import UnknownVideoError, check_ids_in_catalog
from tfrec_video.data.pipeline import distributed_impressions, impressions_dataset
from tfrec_video.data.schema import TableSchema, as_strings
from tfrec_video.data.tables import read_table
from tfrec_video.errors import ConfigError, DataValidationError, shorten
from tfrec_video.features.vocabulary import adapt
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.dtype_policy import dtype_policy
from tfrec_video.models.saving import dummy_batch, load_model
from tfrec_video.models.video_rec import VideoRecModel
from tfrec_video.training.calibration import ClickCalibration
from tfrec_video.training.callbacks import RetrievalRecall
from tfrec_video.towers.untracked import untracked
from tfrec_video.training.head_selection import HeadSelection
from tfrec_video.training.list_blend import fit_list_blend
from tfrec_video.training.scaled_adam import ScaledAdam
from tfrec_video.training.warm_start import WarmStartConfig, check_compatible, copy_weights, lineage, \
    window_vocabularies


# `TrainingConfig.mixed_precision` values and the Keras dtype policy each one means.
PRECISION_POLICIES = {False: None, True: "mixed_float16", "mixed_float16": "mixed_float16",
                      "mixed_bfloat16": "mixed_bfloat16"}


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How to fit: batch size, epochs, shuffling, precision.

    Args:
      batch_size: rows per step, in all: under a `tf.distribute` strategy the
        global batch, split evenly between the replicas (so it must be a
        multiple of their number). On one device it is also the number of
        in-batch retrieval negatives; with N replicas each query sees
        `batch_size / N` (its replica's rows).
      epochs: passes over the training impressions.
      shuffle_buffer: rows in the shuffle buffer (per worker).
      seed: seed of shuffling and of TF's global generator.
      mixed_precision: `False` (float32 everywhere), `True` or `"mixed_float16"`
        (Keras's `mixed_float16` policy: layers compute in float16 with float32
        variables, losses, logits and outputs, and dynamic loss scaling; for
        NVIDIA GPUs with tensor cores), or `"mixed_bfloat16"` (bfloat16
        compute, which needs no loss scaling; for TPUs and A100/H100-class
        GPUs). It is a GPU/TPU option: on CPUs, keep float32. Measured on 2
        cores of an AVX512-BF16 CPU with the default `ModelConfig` and batches
        of 1024, a step took 80 ms in float32, 106 ms in mixed_bfloat16 and
        1,100 ms in mixed_float16 (emulated). The policy is set while
        `fit_model` builds and trains the model, and restored after.
      select_heads: with validation data, `fit_model` selects each head on its
        own validation metric (`HeadSelection`): retrieval on
        `val_recall_at_{selection_recall_k}`, ranking on `ranking_monitor`, and
        `epochs` is the most both phases may take.
      head_patience: epochs without improvement that end a `HeadSelection` phase.
      ranking_monitor: the ranking head's validation metric: `val_logloss` or `val_auc`.
      selection_recall_k: the K of the retrieval head's validation Recall@K.
      recall_max_clicks: the validation clicks that Recall@K scores each epoch
        (`RetrievalRecall`): a uniform sample of this many, drawn once with
        `seed`; None scores them all.
      recall_exclude_seen: the validation Recall@K leaves each click's own
        `history` videos out of the ranking, the rule of the export and of
        the leave-one-out protocol (`evaluation.candidates`). Off by
        default: the impression protocol ranks the whole catalog.
      calibrate: with validation data, fit Platt scaling of the click
        probability on it after training (`calibrate_clicks`).
      blend_list: with validation data, fit the served list's order on its
        clicks after training (`fit_list_blend`).
    """

    batch_size: int = 1024
    epochs: int = 3
    shuffle_buffer: int = 100_000
    seed: int = 0
    mixed_precision: Union[bool, str] = False
    select_heads: bool = True
    head_patience: int = 2
    ranking_monitor: str = "val_logloss"
    selection_recall_k: int = 100
    recall_max_clicks: Optional[int] = 20_000
    recall_exclude_seen: bool = False
    calibrate: bool = True
    blend_list: bool = True

    def __post_init__(self):
        if self.ranking_monitor not in ("val_logloss", "val_auc"):
            raise ConfigError(f"TrainingConfig.ranking_monitor must be 'val_logloss' or 'val_auc', got "
                              f"{shorten(self.ranking_monitor)}.")
        for name in ("batch_size", "epochs", "shuffle_buffer", "head_patience", "selection_recall_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"TrainingConfig.{name} must be a positive integer, got {shorten(value)}.")
        if self.recall_max_clicks is not None and (not isinstance(self.recall_max_clicks, int) or isinstance(
                self.recall_max_clicks, bool) or self.recall_max_clicks <= 0):
            raise ConfigError(f"TrainingConfig.recall_max_clicks must be a positive integer or null, got "
                              f"{shorten(self.recall_max_clicks)}.")
        if not isinstance(self.mixed_precision, (bool, str)) or self.mixed_precision not in PRECISION_POLICIES:
            raise ConfigError(f"TrainingConfig.mixed_precision must be one of {list(PRECISION_POLICIES)}, "
                              f"got {shorten(self.mixed_precision)}.")

    @property
    def dtype_policy(self) -> Optional[str]:
        """The Keras dtype policy `mixed_precision` asks for, or None for the global one (float32)."""
        return PRECISION_POLICIES[self.mixed_precision]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def video_counts(impressions: tf.data.Dataset) -> Tuple[Dict[str, int], Dict[str, int]]:
    """Impressions and clicks per video id over unbatched impressions, in one pass.

    The first dict's keys are the videos seen in training (what `evaluate` calls
    warm; the rest of the catalog is cold start); the second is the popularity
    baseline's click counts.

    Returns:
      `(shown, clicks)`: `{video_id: impressions}` and `{video_id: clicks}` (clicked videos only).
    """
    shown: collections.Counter = collections.Counter()
    clicks: collections.Counter = collections.Counter()
    for batch in impressions.batch(8192).as_numpy_iterator():
        clicked = batch["clicked"].astype(bool)
        for counter, ids in ((shown, batch["video_id"]), (clicks, batch["video_id"][clicked])):
            unique, n = np.unique(ids, return_counts=True)
            counter.update(dict(zip(as_strings(unique).tolist(), n.tolist())))
    return dict(shown), dict(clicks)


def click_counts(impressions: tf.data.Dataset) -> Dict[str, int]:
    """Clicks per video id over unbatched impressions (the popularity baseline)."""
    return video_counts(impressions)[1]


def check_learnable(shape: Mapping, model_config: ModelConfig, train_paths=None) -> None:
    """Refuses training data that a head can learn nothing from, before any step is run.

    Without these checks such data trains to the end without a word and yields
    a model that predicts a constant:

    * no click at all: retrieval trains on the clicked rows and ranking needs
      both outcomes, so neither head can learn; refused.
    * only clicks: ranking has no negative to tell apart; refused unless the
      ranking head is off (`ModelConfig.ranking_weight=0`).
    * clicks on a single video: retrieval can only ever retrieve that video;
      refused unless the retrieval head is off (`retrieval_weight=0`).
    * a single user: the model learns the videos that user clicks, nothing
      that tells users apart; a warning, not an error (it is a valid smoke test).

    Args:
      shape: `Vocabularies.data_shape` of the training impressions (`adapt`).
      model_config: the model, for which heads train.
      train_paths: the training files, for messages.

    Raises:
      DataValidationError: naming the files, what is missing and what to do.
    """
    import warnings

    clicks, rows = shape.get("clicks"), shape.get("impressions")
    if clicks is None or rows is None:  # Vocabularies from before these counts: nothing to check.
        return
    where = dict(file=None if train_paths is None else str(train_paths), feature="clicked")
    if clicks == 0:
        raise DataValidationError(
            f"none of the {rows} training impressions is clicked: retrieval learns from clicks and ranking "
            "from clicks against non-clicks, so nothing can be learned", **where,
            expected="some rows with clicked = 1")
    if clicks == rows and model_config.ranking_weight > 0:
        raise DataValidationError(
            f"all {rows} training impressions are clicked: the ranking head cannot learn what is not clicked", **where,
            expected="some rows with clicked = 0 (impressions shown but not clicked), or model.ranking_weight: 0 "
                     "to train retrieval alone")
    if shape.get("clicked_videos") == 1 and model_config.retrieval_weight > 0:
        raise DataValidationError(
            "every click of the training impressions is on the same video: retrieval cannot learn to tell "
            "videos apart", **where, expected="clicks on at least two videos, or model.retrieval_weight: 0 to "
                                              "train ranking alone")
    if shape.get("users") == 1:
        warnings.warn(f"the training impressions {where['file']} all come from one user: the model cannot learn "
                      "what tells users apart.", UserWarning, stacklevel=2)


def _with_selection(callbacks: List, config: TrainingConfig, model, catalog, schema, validation_paths,
                    validation, content, verbose) -> List:
    """`callbacks` with `HeadSelection` and `ClickCalibration` added where validation data allows.

    `HeadSelection` goes right after the `RetrievalRecall` it reads (added first when absent) and before
    everything else, `BackupAndRestore` included, so that a backup holds the weights it has chosen; it
    keeps its own state beside that backup.
    """
    if validation is None or not (config.select_heads or config.calibrate):
        return callbacks
    position = 0
    if config.select_heads and not any(isinstance(c, HeadSelection) for c in callbacks):
        k = config.selection_recall_k
        recall = next((c for c in callbacks if isinstance(c, RetrievalRecall) and c.k == k), None)
        if recall is None:
            recall = RetrievalRecall(validation_paths, catalog, schema, k=k, max_clicks=config.recall_max_clicks,
                                     seed=config.seed, exclude_seen=config.recall_exclude_seen)
            callbacks.insert(0, recall)
        backup = next((c for c in callbacks if isinstance(c, tf.keras.callbacks.BackupAndRestore)), None)
        heads = HeadSelection(f"val_recall_at_{k}", config.ranking_monitor, patience=config.head_patience,
                              validation_data=validation.data, validation_steps=validation.steps,
                              state_dir=None if backup is None else os.path.join(backup.backup_dir, "head_selection"),
                              verbose=int(verbose > 0))
        position = callbacks.index(recall) + 1
        callbacks.insert(position, heads)
        position += 1
    if config.calibrate and getattr(model.ranking_head, "calibration", False):
        # Calibration reads the rows itself: a plain dataset, whatever the strategy.
        plain = impressions_dataset(validation_paths, catalog, schema, config.batch_size, features=content)
        callbacks.insert(position, ClickCalibration(plain))
    return callbacks


def fit_model(
    catalog: Mapping[str, np.ndarray],
    train_paths,
    impressions_schema: TableSchema,
    model_config: ModelConfig = ModelConfig(),
    training_config: TrainingConfig = TrainingConfig(),
    validation_paths=None,
    callbacks=None,
    verbose: int = 1,
    strategy: Optional[tf.distribute.Strategy] = None,
    served_k: int = 100,
    served_n: int = 10,
    warm_start_from: Optional[str] = None,
    warm_start: WarmStartConfig = WarmStartConfig(),
) -> Tuple[VideoRecModel, tf.keras.callbacks.History]:
    """Adapts vocabularies, builds, compiles and fits a `VideoRecModel`.

    Args:
      catalog: the catalog as column arrays.
      train_paths: training impressions files.
      impressions_schema: their schema.
      model_config: the architecture.
      training_config: batch size (global, under a strategy), epochs, seed, precision.
      validation_paths: optional impressions evaluated after each epoch.
      callbacks: Keras callbacks passed to `fit`.
      verbose: Keras verbosity (1 = progress bar).
      strategy: a `tf.distribute.Strategy` (`tfrec_video.distribute.make_strategy`);
        default the current one (no distribution). The model is built and
        compiled in its scope and the input is split between its workers and
        replicas (`distributed_impressions`). Under `MultiWorkerMirroredStrategy`
        every worker runs `fit_model` with the same arguments: each adapts the
        same vocabularies from the whole training table and trains on its files.
      served_k: the candidates the export will retrieve (`export_saved_model`'s
        `k`), for fitting the served list's order.
      served_n: the served list's length (the export's `n`).
      warm_start_from: a model directory (`save_model`) to start from instead of from scratch:
        its vocabularies grow with the training data's ids and every weight is copied
        (`tfrec_video.training.warm_start`); the data is then only the new window.
      warm_start: how the warm start treats the vocabularies and statistics (`WarmStartConfig`).

    Returns:
      `(model, history)`. With validation data and `training_config.select_heads`,
      `history.selection` says which epoch each head's weights come from
      (`HeadSelection.selected`), and with `calibrate`, `history.calibration`
      holds the fitted Platt scaling and its effect on validation
      (`calibrate_clicks`), and with `blend_list`, `history.list_blend` the
      served list's fitted order and its validation hit rates (`fit_list_blend`);
      each is None otherwise. `history.warm_start` says what a warm start kept, added,
      evicted and copied (None from scratch), and `model.lineage` where the model comes from.

    Raises:
      ConfigError: under a strategy, a batch size that does not divide between
        the replicas, or fewer training files than workers; a warm start from a
        model whose config or inputs differ in a field that shapes its weights.
      DataValidationError: before any training: a bad row (file, row and
        feature), training and validation files with different columns, an
        impression whose video is not in the catalog, or training data that
        nothing can be learned from (`check_learnable`).

    Example:

    >>> strategy = make_strategy("mirrored")  # doctest: +SKIP
    >>> model, history = fit_model(catalog, "data/train/", impressions_schema(), ModelConfig(),
    ...                            TrainingConfig(batch_size=4096, mixed_precision=True), strategy=strategy)  # doctest: +SKIP
    """
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(training_config.seed)
    # Up front, from the files' headers: a validation split without a column the model reads would
    # otherwise fail inside tf.function at the end of the first epoch.
    check_splits_agree({"train": train_paths, "validation": validation_paths}, impressions_schema)
    parent, warm_summary = None, None
    if warm_start_from is not None:
        parent = load_model(warm_start_from)
        check_compatible(parent.given_config, model_config, str(warm_start_from), warm_start)
    raw = read_table(train_paths, impressions_schema, validate=True, progress=verbose > 0)
    columns = raw.element_spec  # the features the files have
    if model_config.watch and "watch_fraction" not in columns and not (
            "watch_seconds" in columns and "duration_s" in catalog):
        raise DataValidationError(
            "ModelConfig.ranking_objectives has 'watch', but the training impressions have no watch time",
            file=str(train_paths), feature="watch_fraction",
            expected="a watch_fraction column (the share of the video watched after a click, 0-1), or "
                     "watch_seconds with the catalog's duration_s; or ranking_objectives: [click]")
    try:
        if parent is None:
            vocabularies = adapt(catalog, raw, title_vocabulary_size=model_config.title_vocabulary_size,
                                 max_users=model_config.max_users, max_videos=model_config.max_videos,
                                 media_components=model_config.media_components, check_catalog=True,
                                 progress=verbose > 0)
        else:
            vocabularies, warm_summary = window_vocabularies(parent.vocabularies, catalog, raw, model_config,
                                                             warm_start, progress=verbose > 0)
    except UnknownVideoError:
        # adapt saw an unknown video but not where it is; this pass over video_id names the file and row.
        check_ids_in_catalog(train_paths, impressions_schema, catalog["video_id"])
        raise
    check_learnable(vocabularies.data_shape, model_config, train_paths)
    # Held until fit returns: the first training step creates the layers that are built lazily.
    with dtype_policy(training_config.dtype_policy):
        with strategy.scope():
            model = VideoRecModel(model_config, vocabularies, catalog=catalog)
            if parent is not None:
                model(dummy_batch(model), training=False)
                warm_summary.update(copy_weights(parent, model, catalog, warm_start))
            # Under mixed_float16, compile wraps the optimizer in a LossScaleOptimizer.
            optimizer = tf.keras.optimizers.Adam(model_config.learning_rate)
            if parent is not None:
                optimizer = ScaledAdam(model_config.learning_rate, scaled_variables=model.ranking_variables,
                                       scale=warm_start.ranking_learning_rate)
            model.compile(optimizer=optimizer)
        # Join exactly what the candidate tower reads (raw thumbnails only when a hub image model is set).
        content = [name for name in model.video_feature_names if name != "video_id"]
        # adapt counted the rows: the dataset's cardinality, so Keras knows the steps of epoch 1.
        train = distributed_impressions(strategy, train_paths, catalog, impressions_schema,
                                        training_config.batch_size, shuffle=True, seed=training_config.seed,
                                        shuffle_buffer=training_config.shuffle_buffer, validate=False,
                                        features=content, num_rows=vocabularies.data_shape["impressions"])
        validation = None
        if validation_paths is not None:
            validation = distributed_impressions(strategy, validation_paths, catalog, impressions_schema,
                                                 training_config.batch_size, features=content)
        callbacks = _with_selection(list(callbacks or []), training_config, model, catalog, impressions_schema,
                                    validation_paths, validation, content, verbose)
        # Our own `History`: `model.fit` returns `model.history`, which a `model.evaluate` called by a
        # callback during training replaces with a History of its own, without the epochs.
        history = next((c for c in callbacks if isinstance(c, tf.keras.callbacks.History)), None)
        if history is None:
            history = tf.keras.callbacks.History()
            callbacks.append(history)
        model.fit(train.data, steps_per_epoch=train.steps, epochs=training_config.epochs,
                  validation_data=None if validation is None else validation.data,
                  validation_steps=None if validation is None else validation.steps,
                  callbacks=callbacks, verbose=verbose)
    history.selection = next((c.selected for c in callbacks if isinstance(c, HeadSelection)), None)
    history.calibration = next((c.result for c in callbacks if isinstance(c, ClickCalibration)), None)
    history.warm_start = warm_summary
    model.lineage = untracked(lineage(train_paths, vocabularies, parent, warm_start_from, warm_start, warm_summary))
    history.list_blend = None
    if validation is not None and training_config.blend_list and getattr(model, "list_blend", None) is not None:
        plain = impressions_dataset(validation_paths, catalog, impressions_schema, training_config.batch_size,
                                    features=content).unbatch()
        history.list_blend = fit_list_blend(model, catalog, plain, k=served_k, n=served_n)
    return model, history
