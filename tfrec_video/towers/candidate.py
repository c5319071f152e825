"""`CandidateTower`: raw video features to an L2-normalised video embedding.

    video_id        ──IdEmbedding (hashed OOV buckets, id dropout)──┐
    title           ──TitleEncoder (WordPiece + Conv1D + max-pool)──┤
    image_embedding ──Dense projection──────────────────────────────┤
    audio_embedding ──Dense projection──────────────────────────────┼─concat─► MLP ─► L2 normalise
    category        ──IdEmbedding───────────────────────────────────┤
    duration_s      ──log1p, standardise────────────────────────────┘

`video_id` and `title` are required; the rest are built only when the data has
them. A video never seen in training hashes into an OOV bucket, and its title,
image and audio still place it: an unseen video gets a meaningful, distinct
embedding from its content (cold start). `encode` returns the features before
the MLP for the ranking head.

Example:

>>> import tensorflow as tf
>>> videos = IdEmbedding(["v1"], embedding_dim=8)
>>> tower = CandidateTower(videos, ["[PAD]", "[UNK]", "cat"], image_dim=3, hidden_units=(16,), output_dim=4,
...                        title_options=dict(sequence_length=4, token_dim=4, conv_widths=(1,), filters=4, output_dim=4))
>>> tower({"video_id": tf.constant(["v1", "new"]), "title": tf.constant(["cat", "dog"]),
...        "image_embedding": tf.ones([2, 3])}).shape
TensorShape([2, 4])
"""

from typing import Mapping, Optional, Sequence

import tensorflow as tf

from tfrec_video.towers.embedding_tower import EmbeddingTower
from tfrec_video.towers.id_embedding import IdEmbedding
from tfrec_video.towers.mlp import MLP
from tfrec_video.towers.title_encoder import TitleEncoder


class CandidateTower(EmbeddingTower):
    """Embeds videos (see module docstring).

    Args:
      video_embedding: the video `IdEmbedding`, shared with the query tower's history.
      title_tokens: WordPiece vocabulary for `TitleEncoder`.
      title_options: keyword arguments of `TitleEncoder` (sequence_length, token_dim,
        conv_widths, filters, output_dim).
      categories: category vocabulary, or None.
      duration_stats: (mean, std) of log1p(duration_s), or None.
      image_dim: length of `image_embedding`, or None.
      audio_dim: length of `audio_embedding`, or None.
      media_dim: width the image and audio embeddings are projected to.
      hidden_units: MLP widths.
      output_dim: the embedding width.
      dropout: MLP dropout.
    """

    def __init__(self, video_embedding: IdEmbedding, title_tokens: Sequence[str], title_options: Optional[dict] = None,
                 categories: Optional[Sequence[str]] = None, duration_stats: Optional[Sequence[float]] = None,
                 image_dim: Optional[int] = None, audio_dim: Optional[int] = None, media_dim: int = 32,
                 hidden_units: Sequence[int] = (128,), output_dim: int = 64, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.video_embedding = video_embedding
        self.title_encoder = TitleEncoder(title_tokens, **(title_options or {}), name="title_encoder")
        self.category_embedding = IdEmbedding(categories, 8, 2, name="category") if categories else None
        self.duration_stats = None if duration_stats is None else (float(duration_stats[0]), float(duration_stats[1]))
        self.image_dim, self.audio_dim = image_dim, audio_dim
        self.image_projection = tf.keras.layers.Dense(media_dim, name="image_projection") if image_dim else None
        self.audio_projection = tf.keras.layers.Dense(media_dim, name="audio_projection") if audio_dim else None
        self.mlp = MLP(hidden_units, output_dim, dropout, name="mlp")
        self._config = dict(video_embedding=video_embedding.get_config(), title_tokens=list(title_tokens),
                            title_options=dict(title_options or {}),
                            categories=None if categories is None else list(categories),
                            duration_stats=None if duration_stats is None else list(self.duration_stats),
                            image_dim=image_dim, audio_dim=audio_dim, media_dim=media_dim,
                            hidden_units=list(hidden_units), output_dim=output_dim, dropout=dropout)

    @property
    def input_names(self):
        names = ["video_id", "title"]
        if self.category_embedding is not None:
            names.append("category")
        if self.duration_stats is not None:
            names.append("duration_s")
        if self.image_projection is not None:
            names.append("image_embedding")
        if self.audio_projection is not None:
            names.append("audio_embedding")
        return names

    def encode(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """The concatenated video features, before the MLP."""
        parts = [self.video_embedding(features["video_id"], training=training),
                 self.title_encoder(features["title"])]
        if self.category_embedding is not None:
            parts.append(self.category_embedding(features["category"]))
        if self.duration_stats is not None:
            mean, std = self.duration_stats
            duration = tf.math.log1p(tf.maximum(tf.cast(features["duration_s"], tf.float32), 0.0))
            parts.append(((duration - mean) / std)[:, None])
        if self.image_projection is not None:
            parts.append(self.image_projection(tf.cast(features["image_embedding"], tf.float32)))
        if self.audio_projection is not None:
            parts.append(self.audio_projection(tf.cast(features["audio_embedding"], tf.float32)))
        return tf.concat(parts, axis=-1)
