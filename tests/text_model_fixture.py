"""A tiny, deterministic text encoder saved as a TF Hub-style SavedModel, for tests of title encoders.

The converted multilingual-e5-small (`tfrec-video convert-text-encoder`) takes
minutes to build and seconds a batch; tests of how the package *uses* a text
encoder need neither. `save_text_model` writes a model with the same interface:
`__call__` (and the `serving_default` signature) maps a `tf.string` `[batch]` to
L2-normalised float32 `[batch, dim]`, with `variables` and `trainable_variables`
so that `hub.KerasLayer(path, trainable=True)` fine-tunes it.

What it computes: each title is lowercased and split on whitespace, each word
hashed (FarmHash, `tf.strings.to_hash_bucket_fast`: the same bucket in every
process) into one of `BUCKETS` rows of a seeded table, the rows summed and the
sum L2-normalised. Titles that share words are close; an empty title is the
zero vector. Only core TF ops, so an export holding it loads with TensorFlow alone.

`titles_table` writes the toy catalog as the table `embed --titles` reads.

`save_broken_text_model` writes the models a user could point `text_model` at
by mistake (a float input, a rank-1 output) for the bad-input tests.
"""

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

BUCKETS = 64


def _table(dim: int, seed: int) -> tf.Variable:
    values = np.random.default_rng(seed).normal(size=(BUCKETS, dim)).astype(np.float32)
    return tf.Variable(values, name="word_table")


def embed_titles(table, titles):
    """The model's function: string `[batch]` -> unit-length float32 `[batch, dim]` (see module docstring)."""
    words = tf.strings.split(tf.strings.lower(titles))                        # ragged [batch, (words)]
    ids = tf.strings.to_hash_bucket_fast(words, BUCKETS).to_tensor(default_value=-1)
    mask = tf.cast(ids >= 0, tf.float32)[:, :, None]
    summed = tf.reduce_sum(tf.gather(table, tf.maximum(ids, 0)) * mask, axis=1)
    return tf.math.l2_normalize(summed, axis=-1)


def _save(path, fn, table, input_spec):
    root = tf.train.Checkpoint()
    root.table = table
    root.variables = [table]
    root.trainable_variables = [table]
    root.regularization_losses = []
    root.__call__ = tf.function(fn, input_signature=[input_spec])

    @tf.function(input_signature=[tf.TensorSpec(input_spec.shape, input_spec.dtype, name="texts")])
    def serve(texts):
        return {"embedding": root.__call__(texts)}

    tf.saved_model.save(root, str(path), signatures={"serving_default": serve.get_concrete_function()})
    return str(path)


def save_text_model(path, dim: int = 8, seed: int = 0) -> str:
    """Saves the tiny text encoder (module docstring) at `path` and returns the directory.

    Args:
      path: the SavedModel directory to write.
      dim: the embedding width.
      seed: the seed of the word table: the same seed gives the same vectors.
    """
    table = _table(dim, seed)
    return _save(path, lambda titles: embed_titles(table, titles), table, tf.TensorSpec([None], tf.string))


def save_broken_text_model(path, kind: str, dim: int = 8) -> str:
    """A model that is not a string `[batch]` -> `[batch, dim]` encoder.

    Args:
      path: the SavedModel directory to write.
      kind: `"rank1"` (strings in, one number a title out) or `"float_input"`
        (float32 `[batch, dim]` in, `[batch, dim]` out).
    """
    table = _table(dim, 0)
    if kind == "rank1":
        return _save(path, lambda titles: tf.reduce_sum(embed_titles(table, titles), axis=-1), table,
                     tf.TensorSpec([None], tf.string))
    if kind == "float_input":
        return _save(path, lambda x: tf.matmul(x, table[:dim]), table, tf.TensorSpec([None, dim], tf.float32))
    raise ValueError(f"unknown kind {kind!r}")


def reference_vectors(path, titles) -> np.ndarray:
    """The saved model's vectors of `titles`, through `tf.saved_model.load` (no tfrec_video code)."""
    loaded = tf.saved_model.load(str(path))
    return loaded(tf.constant(list(titles), tf.string)).numpy()


def titles_table(directory, catalog, name="catalog.parquet") -> str:
    """The toy catalog's titles, categories and image embeddings (width 8) as a table file: its path."""
    from tfrec_video.data import write_table
    from tfrec_video.data.schema import catalog_schema

    path = str(directory / name)
    write_table({k: catalog[k] for k in ("video_id", "title", "category", "image_embedding")}, path,
                catalog_schema(image_dim=8))
    return path
