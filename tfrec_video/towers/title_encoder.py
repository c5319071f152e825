"""`TitleEncoder`: a CNN over WordPiece tokens of a title, in any language.

    title ──WordPiece (keras-nlp, CJK per character)──► token ids [B, L]
          ──Embedding──► [B, L, E] ──Conv1D(width w, relu) for each w──► max-pool over L
          ──concat──► Dense ──► [B, output_dim]

The tokenizer is keras-nlp's `WordPieceTokenizer`, used as a plain callable on
`tf.string` tensors; it runs TF Text ops, which stock TF Serving links, so the
exported graph takes raw title strings. Padding positions are zeroed before the
max-pool (activations are ReLU, hence >= 0), so a short title is not diluted by
its padding, and an empty title encodes to the projection's bias alone.

Example:

>>> import tensorflow as tf
>>> encoder = TitleEncoder(["[PAD]", "[UNK]", "cat", "猫"], sequence_length=8, token_dim=8,
...                        conv_widths=(1, 2), filters=4, output_dim=6)
>>> encoder(tf.constant(["cat 猫", ""])).shape
TensorShape([2, 6])
"""

from typing import Sequence

import tensorflow as tf

from tfrec_video.towers.untracked import untracked


# The CNN's output width when none is given; the pretrained title's projection matches it.
DEFAULT_OUTPUT_DIM = 32


class TitleEncoder(tf.keras.layers.Layer):
    """Encodes raw title strings with WordPiece + multi-width Conv1D + max-pool.

    Args:
      vocabulary: WordPiece tokens; index 0 must be the padding token.
      sequence_length: tokens kept per title (longer titles are truncated).
      token_dim: token embedding width.
      conv_widths: the convolution window widths (n-gram sizes).
      filters: filters per width.
      output_dim: output width.
    """

    def __init__(self, vocabulary: Sequence[str], sequence_length: int = 16, token_dim: int = 32,
                 conv_widths: Sequence[int] = (1, 2, 3), filters: int = 32, output_dim: int = DEFAULT_OUTPUT_DIM,
                 **kwargs):
        super().__init__(**kwargs)
        if len(vocabulary) < 2:
            raise ValueError(f"TitleEncoder: the vocabulary needs at least [PAD] and [UNK], got {len(vocabulary)} tokens.")
        for name, value in (("sequence_length", sequence_length), ("token_dim", token_dim),
                            ("filters", filters), ("output_dim", output_dim)):
            if int(value) <= 0:
                raise ValueError(f"TitleEncoder: {name} must be positive, got {value}.")
        if not conv_widths or any(int(w) <= 0 for w in conv_widths):
            raise ValueError(f"TitleEncoder: conv_widths must be positive integers, got {conv_widths}.")
        import keras_nlp

        self.vocabulary = untracked([str(v) for v in vocabulary])
        self.sequence_length = int(sequence_length)
        self.token_dim = int(token_dim)
        self.conv_widths = tuple(int(w) for w in conv_widths)
        self.filters = int(filters)
        self.output_dim = int(output_dim)
        self.tokenizer = keras_nlp.tokenizers.WordPieceTokenizer(
            vocabulary=self.vocabulary, sequence_length=self.sequence_length, lowercase=True,
            split_on_cjk=True, oov_token=self.vocabulary[1], dtype="int32",
        )
        self.token_embedding = tf.keras.layers.Embedding(len(self.vocabulary), self.token_dim)
        self.convolutions = [
            tf.keras.layers.Conv1D(self.filters, w, padding="same", activation="relu", name=f"conv_w{w}")
            for w in self.conv_widths
        ]
        self.projection = tf.keras.layers.Dense(self.output_dim, name="projection")

    def tokenize(self, titles: tf.Tensor) -> tf.Tensor:
        """Token ids, `[batch, sequence_length]`, 0 for padding."""
        return tf.cast(self.tokenizer(titles), tf.int32)

    def call(self, titles: tf.Tensor) -> tf.Tensor:
        return self.encode_tokens(self.tokenize(tf.reshape(titles, [-1])))

    def encode_tokens(self, ids: tf.Tensor) -> tf.Tensor:
        """`call` on titles tokenized already (`tokenize`'s output): a catalog's titles are constants,
        so a `CatalogTable` can hold their tokens instead of tokenizing them again at every step."""
        ids = tf.cast(ids, tf.int32)
        mask = tf.cast(tf.not_equal(ids, 0), self.compute_dtype)[:, :, None]
        tokens = self.token_embedding(ids)
        pooled = [tf.reduce_max(conv(tokens) * mask, axis=1) for conv in self.convolutions]
        return self.projection(tf.concat(pooled, axis=-1))

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, sequence_length=self.sequence_length,
                      token_dim=self.token_dim, conv_widths=list(self.conv_widths),
                      filters=self.filters, output_dim=self.output_dim)
        return config
