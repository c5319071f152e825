"""Training a `VideoRecModel` from files: adapt, compile, `model.fit`.

This is the code path shared by `tfrec-video quickstart` and scripts. It is
plain Keras underneath: `fit_model` returns the model and its Keras `History`,
and everything it does a notebook user can do by hand:

    catalog = load_catalog(catalog_dir, schemas["catalog"])
    vocab = adapt(catalog, read_table(train_dir, schemas["impressions"]))
    model = VideoRecModel(ModelConfig(), vocab, catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(ModelConfig().learning_rate))
    model.fit(impressions_dataset(train_dir, catalog, schemas["impressions"], 1024, shuffle=True), epochs=3)
"""

import collections
import dataclasses
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data.io import read_table
from tfrec_video.data.pipeline import impressions_dataset
from tfrec_video.errors import ConfigError
from tfrec_video.features.vocabulary import adapt
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.video_rec import VideoRecModel
from tfrec_video.schema import TableSchema, as_strings


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How to fit: batch size, epochs, shuffling.

    Args:
      batch_size: rows per step; also the number of in-batch retrieval negatives.
      epochs: passes over the training impressions.
      shuffle_buffer: rows in the shuffle buffer.
      seed: seed of shuffling and of TF's global generator.
    """

    batch_size: int = 1024
    epochs: int = 3
    shuffle_buffer: int = 100_000
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "epochs", "shuffle_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"TrainingConfig.{name} must be a positive integer, got {value!r}.")

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


def fit_model(
    catalog: Mapping[str, np.ndarray],
    train_paths,
    impressions_schema: TableSchema,
    model_config: ModelConfig = ModelConfig(),
    training_config: TrainingConfig = TrainingConfig(),
    validation_paths=None,
    callbacks=None,
    verbose: int = 1,
) -> Tuple[VideoRecModel, tf.keras.callbacks.History]:
    """Adapts vocabularies, builds, compiles and fits a `VideoRecModel`.

    Args:
      catalog: the catalog as column arrays.
      train_paths: training impressions files.
      impressions_schema: their schema.
      model_config: the architecture.
      training_config: batch size, epochs, seed.
      validation_paths: optional impressions evaluated after each epoch.
      callbacks: Keras callbacks passed to `fit`.
      verbose: Keras verbosity (1 = progress bar).

    Returns:
      `(model, history)`.
    """
    tf.keras.utils.set_random_seed(training_config.seed)
    raw = read_table(train_paths, impressions_schema, validate=True)
    vocabularies = adapt(catalog, raw, title_vocabulary_size=model_config.title_vocabulary_size,
                         max_users=model_config.max_users, max_videos=model_config.max_videos,
                         media_components=model_config.media_components)
    model = VideoRecModel(model_config, vocabularies, catalog=catalog)
    model.compile(optimizer=tf.keras.optimizers.Adam(model_config.learning_rate))
    # Join exactly what the candidate tower reads (raw thumbnails only when a hub image model is set).
    content = [name for name in model.video_feature_names if name != "video_id"]
    train = impressions_dataset(train_paths, catalog, impressions_schema, training_config.batch_size, shuffle=True,
                                seed=training_config.seed, shuffle_buffer=training_config.shuffle_buffer,
                                validate=False, features=content)
    validation = None
    if validation_paths is not None:
        validation = impressions_dataset(validation_paths, catalog, impressions_schema, training_config.batch_size,
                                         features=content)
    history = model.fit(train, epochs=training_config.epochs, validation_data=validation,
                        callbacks=callbacks, verbose=verbose)
    return model, history
