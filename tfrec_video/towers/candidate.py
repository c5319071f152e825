"""`CandidateTower`: raw video features to an L2-normalised video embedding.

    video_id        ──IdEmbedding (hashed OOV buckets, id dropout)──┐
    title           ──TitleEncoder (WordPiece + Conv1D + max-pool)──┤  (title_mode cnn / both)
      and/or title  ──PretrainedTitleEncoder (hub.KerasLayer)──Dense┤  (title_mode pretrained / both)
    title_embedding ──PrincipalComponents──Dense projection─────────┤
    image_embedding ──PrincipalComponents──Dense projection─────────┤
      or thumbnail  ──ImageEncoder (hub.KerasLayer)──Dense──────────┤
    audio_embedding ──PrincipalComponents──Dense projection─────────┼─concat─► MLP ─► L2 normalise
      or audio      ──AudioEncoder (hub.KerasLayer)──Dense──────────┤
    category        ──IdEmbedding───────────────────────────────────┤
    duration_s      ──log1p, standardise────────────────────────────┘

`video_id` and `title` are required; the rest are built only when the data has
them. A video never seen in training hashes into an OOV bucket, and its title,
image and audio still place it: an unseen video gets a meaningful, distinct
embedding from its content (cold start). `encode` returns the features before
the MLP for the ranking head. Media embeddings go through a fixed PCA whitening
learned in the adapt step when one is given (`tfrec_video.features.pca` says
why: raw, their video-specific variation works as a second id and cold start
suffers). With an `image_encoder` (`audio_encoder`) the tower reads the raw
`thumbnail` (`audio`) bytes instead and embeds them in the graph through a TF
Hub model (`tfrec_video.towers.media_encoder`), frozen unless configured
trainable. Titles the same way: `title_mode` picks the CNN (`"cnn"`), a
pretrained text encoder read in the graph from the raw `title`
(`"pretrained"`, `tfrec_video.towers.pretrained_title`) or both; the pretrained
vector is projected by a Dense layer to the CNN's width (`title_options`'
`output_dim`). A precomputed `title_embedding` (`tfrec-video embed
--text-model`) is whitened and projected like the media embeddings, to that
same width, whichever `title_mode`.

Example:

>>> import tensorflow as tf
>>> videos = IdEmbedding(["v1"], embedding_dim=8)
>>> tower = CandidateTower(videos, ["[PAD]", "[UNK]", "cat"], image_dim=3, hidden_units=(16,), output_dim=4,
...                        title_options=dict(sequence_length=4, token_dim=4, conv_widths=(1,), filters=4, output_dim=4))
>>> tower({"video_id": tf.constant(["v1", "new"]), "title": tf.constant(["cat", "dog"]),
...        "image_embedding": tf.ones([2, 3])}).shape
TensorShape([2, 4])
"""

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.towers.embedding_tower import EmbeddingTower
from tfrec_video.towers.id_embedding import IdEmbedding
from tfrec_video.towers.media_encoder import AudioEncoder, ImageEncoder
from tfrec_video.towers.mlp import MLP
from tfrec_video.towers.pretrained_title import PretrainedTitleEncoder
from tfrec_video.towers.principal_components import PrincipalComponents
from tfrec_video.towers.title_encoder import DEFAULT_OUTPUT_DIM as TITLE_OUTPUT_DIM, TitleEncoder
from tfrec_video.towers.untracked import untracked


# What reads the raw title: the CNN, the pretrained text encoder, or both side by side.
TITLE_MODES = ("cnn", "pretrained", "both")


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
      image_pca: optional `fit_pca` statistics applied to `image_embedding` first.
      audio_pca: the same for `audio_embedding`.
      image_encoder: optional `ImageEncoder` config (`handle`, `trainable`, ...):
        read raw `thumbnail` bytes through a TF Hub model instead of `image_embedding`.
      audio_encoder: optional `AudioEncoder` config: read raw `audio` (WAV) bytes
        instead of `audio_embedding`.
      title_mode: `"cnn"` (the `TitleEncoder`), `"pretrained"` (no CNN: the
        pretrained vector only) or `"both"`.
      title_model: `PretrainedTitleEncoder` config (`handle`, `trainable`, ...):
        the pretrained vector computed from the title in the graph. The
        `"pretrained"` and `"both"` modes need it or `title_embedding_dim`.
      title_embedding_dim: length of a precomputed `title_embedding`, or None.
      title_pca: `fit_pca` statistics applied to `title_embedding` first.
      hidden_units: MLP widths.
      output_dim: the embedding width.
      dropout: MLP dropout.
    """

    def __init__(self, video_embedding: IdEmbedding, title_tokens: Sequence[str], title_options: Optional[dict] = None,
                 categories: Optional[Sequence[str]] = None, duration_stats: Optional[Sequence[float]] = None,
                 image_dim: Optional[int] = None, audio_dim: Optional[int] = None, media_dim: int = 32,
                 image_pca: Optional[dict] = None, audio_pca: Optional[dict] = None,
                 image_encoder: Optional[dict] = None, audio_encoder: Optional[dict] = None,
                 title_mode: str = "cnn", title_model: Optional[dict] = None,
                 title_embedding_dim: Optional[int] = None, title_pca: Optional[dict] = None,
                 hidden_units: Sequence[int] = (128,), output_dim: int = 64, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        # Copies: Keras wraps what a layer stores for tracking, which must not reach the caller's dicts.
        image_pca, audio_pca, title_pca = _plain(image_pca), _plain(audio_pca), _plain(title_pca)
        if title_mode not in TITLE_MODES:
            raise ValueError(f"CandidateTower: title_mode must be one of {TITLE_MODES}, got {title_mode!r}.")
        if title_mode != "cnn" and not (title_model or title_embedding_dim):
            raise ValueError(f"CandidateTower: title_mode={title_mode!r} needs title_model (the text encoder) or "
                             "title_embedding_dim (a precomputed title_embedding).")
        self.video_embedding = video_embedding
        self.title_mode = title_mode
        title_width = int((title_options or {}).get("output_dim", TITLE_OUTPUT_DIM))
        self.title_encoder = (TitleEncoder(title_tokens, **(title_options or {}), name="title_encoder")
                              if title_mode != "pretrained" else None)
        self.pretrained_title = self.pretrained_title_projection = None
        if title_model:
            self.pretrained_title = PretrainedTitleEncoder(**_encoder_kwargs(title_model), name="pretrained_title")
            self.pretrained_title_projection = tf.keras.layers.Dense(title_width, name="pretrained_title_projection")
        self.title_embedding_dim = title_embedding_dim
        self.title_embedding_pca = (PrincipalComponents(**title_pca, name="title_embedding_pca")
                                    if title_embedding_dim and title_pca else None)
        self.title_embedding_projection = (tf.keras.layers.Dense(title_width, name="title_embedding_projection")
                                           if title_embedding_dim else None)
        self.category_embedding = IdEmbedding(categories, 8, 2, name="category") if categories else None
        self.duration_stats = None if duration_stats is None else (float(duration_stats[0]), float(duration_stats[1]))
        # Raw media through a hub model replaces the precomputed vector of the same modality.
        self.image_encoder = ImageEncoder(**_encoder_kwargs(image_encoder), name="image_encoder") if image_encoder else None
        self.audio_encoder = AudioEncoder(**_encoder_kwargs(audio_encoder), name="audio_encoder") if audio_encoder else None
        if self.image_encoder is not None:
            image_dim, image_pca = None, None
        if self.audio_encoder is not None:
            audio_dim, audio_pca = None, None
        self.image_dim, self.audio_dim = image_dim, audio_dim
        has_image = image_dim or self.image_encoder is not None
        has_audio = audio_dim or self.audio_encoder is not None
        self.image_projection = tf.keras.layers.Dense(media_dim, name="image_projection") if has_image else None
        self.audio_projection = tf.keras.layers.Dense(media_dim, name="audio_projection") if has_audio else None
        self.image_pca = PrincipalComponents(**image_pca, name="image_pca") if image_dim and image_pca else None
        self.audio_pca = PrincipalComponents(**audio_pca, name="audio_pca") if audio_dim and audio_pca else None
        self.mlp = MLP(hidden_units, output_dim, dropout, name="mlp")
        self._config = untracked(dict(video_embedding=video_embedding.get_config(), title_tokens=list(title_tokens),
                            title_options=dict(title_options or {}),
                            categories=None if categories is None else list(categories),
                            duration_stats=None if duration_stats is None else list(self.duration_stats),
                            image_dim=image_dim, audio_dim=audio_dim, media_dim=media_dim,
                            image_pca=image_pca, audio_pca=audio_pca,
                            image_encoder=None if image_encoder is None else _encoder_kwargs(image_encoder),
                            audio_encoder=None if audio_encoder is None else _encoder_kwargs(audio_encoder),
                            title_mode=title_mode,
                            title_model=None if not title_model else _encoder_kwargs(title_model),
                            title_embedding_dim=title_embedding_dim, title_pca=title_pca,
                            hidden_units=list(hidden_units), output_dim=output_dim, dropout=dropout))

    @property
    def prepared_columns(self) -> Dict[str, Tuple[str, List[int]]]:
        """`{name: (dtype, shape)}` of what the tower computes from a video's content before any weight:
        the title's WordPiece tokens and the fixed PCA projections of the precomputed vectors. Constant
        per video, so a `CatalogTable` holds them (`prepare_catalog`) and watched videos are neither
        tokenized nor projected again at every training step; `encode` reads them when given."""
        columns = {}
        if self.title_encoder is not None:
            columns["title_tokens"] = ("int32", [self.title_encoder.sequence_length])
        for name, pca in self._pca_inputs():
            columns[f"{name}_components"] = ("float32", [pca.num_components])
        return columns

    def _pca_inputs(self):
        candidates = (("image_embedding", self.image_pca), ("audio_embedding", self.audio_pca),
                      ("title_embedding", self.title_embedding_pca))
        return [(name, pca) for name, pca in candidates if pca is not None]

    def prepare_features(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """The `prepared_columns` of a batch of videos' raw columns (`title_tokens`, `<name>_components`)."""
        prepared = {f"{name}_components": pca(tf.cast(features[name], tf.float32)) for name, pca in self._pca_inputs()}
        if self.title_encoder is not None:
            prepared["title_tokens"] = self.title_encoder.tokenize(features["title"])
        return prepared

    def prepare_catalog(self, catalog: Mapping[str, np.ndarray], batch_size: int = 4096) -> Dict[str, np.ndarray]:
        """`catalog` (column arrays) with its `prepared_columns` added, computed in chunks (`prepare_features`)."""
        columns = self.prepared_columns
        chunks: Dict[str, list] = {name: [] for name in columns}
        for start in range(0, len(catalog["video_id"]), batch_size):
            batch = {name: tf.constant(np.asarray(catalog[name][start:start + batch_size]))
                     for name in ["title"] * (self.title_encoder is not None) + [n for n, _ in self._pca_inputs()]}
            for name, values in self.prepare_features(batch).items():
                chunks[name].append(values.numpy())
        prepared = dict(catalog)
        for name, (dtype, shape) in columns.items():
            prepared[name] = np.concatenate(chunks[name]) if chunks[name] else np.zeros([0] + shape, dtype)
        return prepared

    @property
    def input_names(self):
        names = ["video_id", "title"]
        if self.category_embedding is not None:
            names.append("category")
        if self.duration_stats is not None:
            names.append("duration_s")
        if self.image_projection is not None:
            names.append("thumbnail" if self.image_encoder is not None else "image_embedding")
        if self.audio_projection is not None:
            names.append("audio" if self.audio_encoder is not None else "audio_embedding")
        if self.title_embedding_projection is not None:
            names.append("title_embedding")
        return names

    def encode(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """The concatenated video features, before the MLP."""
        parts = [self.video_embedding(features["video_id"], training=training)]
        if self.title_encoder is not None:
            parts.append(self.title_encoder.encode_tokens(features["title_tokens"]) if "title_tokens" in features
                         else self.title_encoder(features["title"]))
        if self.pretrained_title is not None:
            parts.append(self.pretrained_title_projection(self.pretrained_title(features["title"], training=training)))
        if self.category_embedding is not None:
            parts.append(self.category_embedding(features["category"]))
        if self.duration_stats is not None:
            mean, std = self.duration_stats
            duration = tf.math.log1p(tf.maximum(tf.cast(features["duration_s"], tf.float32), 0.0))
            parts.append(((duration - mean) / std)[:, None])
        for name, raw, encoder, pca, projection in (
                ("image_embedding", "thumbnail", self.image_encoder, self.image_pca, self.image_projection),
                ("audio_embedding", "audio", self.audio_encoder, self.audio_pca, self.audio_projection),
                ("title_embedding", None, None, self.title_embedding_pca, self.title_embedding_projection)):
            if projection is None:
                continue
            if encoder is not None:
                x = encoder(features[raw], training=training)
            elif f"{name}_components" in features and pca is not None:
                x = tf.cast(features[f"{name}_components"], tf.float32)
            else:
                x = tf.cast(features[name], tf.float32)
                x = pca(x) if pca is not None else x
            parts.append(projection(x))
        return self._concat(parts)


def _encoder_kwargs(config: dict) -> dict:
    # A Keras get_config() of an encoder also carries name/dtype; the tower names its own layers.
    return {k: v for k, v in dict(config).items() if k not in ("name", "dtype", "batch_input_shape")}


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
