"""`ModelConfig`: every architecture and loss hyper-parameter of `VideoRecModel`.

A plain dataclass, so a YAML/JSON file or CLI flags map onto it field by field,
and `to_dict`/`from_dict` round-trip. Data-derived state (vocabularies, which
optional features exist) lives in `tfrec_video.features.Vocabularies`, not here.

Example:

>>> config = ModelConfig(embedding_dim=32, ranking_weight=0.0)
>>> ModelConfig.from_dict(config.to_dict()) == config
True
"""

import dataclasses
from typing import Mapping, Optional, Tuple, Union

from tfrec_video.config_fields import from_mapping
from tfrec_video.errors import ConfigError, shorten
from tfrec_video.towers.candidate import TITLE_MODES

# A field set to AUTO is decided from the training data when the model is built (`models.data_rules`).
AUTO = "auto"
# `ModelConfig.title_encoder`: what reads the raw title; the tower's modes are the config's choices.
TITLE_ENCODERS = TITLE_MODES
# `ModelConfig.ranking_objectives`: what the ranking stage predicts ("click" always, first).
RANKING_OBJECTIVES = ("click", "watch")
# `ModelConfig.ranking_gates`: how a multi-objective ranking head shares its experts between heads.
RANKING_GATES = ("mmoe", "shared", "ple")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the two-stage model.

    The defaults were chosen on the default built-in dataset (3 epochs, batch 1024;
    test AUC / Recall@100 / cold-start Recall@100): temperature 0.1 -> 0.2 with
    full logQ: 0.726/0.383/0.183 -> 0.732/0.394/0.153; `logq_weight` 0.5:
    0.730/0.384/0.260; plus `user_id_dropout` 0.3: 0.732/0.385/0.260. Attention
    pooling and `video_id_dropout` 0.4 were within noise (about +-0.02 on the
    cold-start recall, which rests on about 460 test clicks).

    With the ranking features and `HeadSelection` on the validation split (up to 10
    epochs; validation AUC / Recall@100, test AUC), the id dropouts and the ranking
    head's regularisation were chosen on validation: `user_id_dropout` 0.3 and
    `video_id_dropout` 0.2 with `ranking_dropout` 0.2 and `ranking_l2` 1e-5:
    0.743/0.406, test 0.742; id dropouts 0.9 and 0.8: 0.751/0.427, test 0.747;
    ranking 0.4 and 1e-4 alone: 0.746/0.403, test 0.746; both: 0.754/0.417, test
    0.746. Both heads stopped improving after 2 epochs with the old id dropouts,
    after 3-5 with the new: a model that can place a user or a video only by its
    id memorises the training impressions; hidden behind its OOV bucket most of
    the time, it has to learn history and content, which generalise. On the full
    quickstart (12 epochs, test split) the video-id dropout of 0.8 cost cold start
    what it gave the warm videos: AUC / Recall@100 / cold-start Recall@100 /
    served HR@10 0.746/0.384/0.229/0.108 with 0.8, 0.751/0.384/0.319/0.109 with
    0.2 (the default: user 0.9, video 0.2, ranking 0.4 and 1e-4).

    Args:
      embedding_dim: width of the query and video embeddings (retrieval space).
      id_dim: width of the user-id and video-id embeddings.
      user_oov_buckets: hashed rows shared by unseen users.
      video_oov_buckets: hashed rows shared by unseen (cold-start) videos.
      video_id_dropout: probability of hiding a known video id behind its OOV
        bucket in training, which teaches the towers to place a video by content.
      user_id_dropout: the same for user ids: the query tower learns to place a
        user by history and context, which is all it has for a new user.
      history_pooling: `"mean"` or `"attention"`.
      history_content: embed each watched video in `history` with the candidate
        tower (id, title, image, audio, ...) before pooling, so a user's history
        says what they watched, not only which ids; the model then holds the
        catalog's content features (`CatalogTable`). False pools the shared
        video-id embeddings only (no catalog in the model).
      title_vocabulary_size: WordPiece vocabulary size learned from titles.
      title_sequence_length: tokens kept per title.
      title_token_dim: token embedding width.
      title_conv_widths: Conv1D window widths of the title CNN.
      title_filters: filters per width.
      title_dim: title encoding width: the CNN's output, and the width the
        pretrained title vector (`text_model`, or a precomputed `title_embedding`)
        is projected to.
      title_encoder: what reads the raw `title`: `"cnn"` (the WordPiece CNN
        learned from scratch), `"pretrained"` (`text_model` alone) or `"both"`
        (the two side by side). Without `text_model`, the pretrained vector is
        the catalog's precomputed `title_embedding` column (`tfrec-video embed
        --text-model`), which the model must then have: `"pretrained"` is that
        column without the CNN, `"both"` the column beside it (as `"cnn"` is
        when the column exists). A precomputed column is used in every mode.
      text_model: a TF Hub handle (URL) or local SavedModel directory of a
        pretrained text encoder: a string `[batch]` in, float32 `[batch, dim]`
        out (`tfrec-video convert-text-encoder` writes multilingual-e5-small
        so). Loaded in the candidate tower through `hub.KerasLayer`
        (`tfrec_video.towers.pretrained_title`) and exported with the model;
        used by `title_encoder` `"pretrained"` and `"both"`, not loaded with
        `"cnn"` (so one config compares the three by `title_encoder` alone).
        Checked when the model is built: a missing directory or a model that
        is not string -> `[batch, dim]` is a `ConfigError`.
      fine_tune_text: train `text_model`'s weights too (frozen by default).
      media_dim: width the image and audio embeddings are projected to.
      media_components: principal components of the image and audio embeddings
        kept by the adapt step before the projection (0: use them raw). See
        `tfrec_video.features.pca`: raw embeddings let the tower memorise
        training videos and hurt cold start.
      image_model: a TF Hub handle (URL) or local SavedModel directory of an
        image encoder. When set, the candidate tower reads the catalog's raw
        `thumbnail` bytes and embeds them in the graph (`ImageEncoder`) instead
        of reading `image_embedding`.
      image_model_size: thumbnail size fed to `image_model`, when the model does
        not declare one (read from its signature otherwise).
      audio_model: the same for an audio encoder over raw `audio` (WAV) bytes
        (`AudioEncoder`) instead of `audio_embedding`.
      audio_sample_rate: sample rate `audio_model` expects (clips are not resampled in the graph).
      audio_clip_seconds: seconds of audio fed to `audio_model` (padded or cut).
      fine_tune_media: train the hub encoders' weights too (frozen by default).
      query_hidden_units: the query tower's MLP widths.
      candidate_hidden_units: the candidate tower's MLP widths.
      tower_dropout: dropout inside the tower MLPs.
      cross_layers: number of DCN `Cross` layers in the ranking head.
      ranking_hidden_units: the ranking MLP widths.
      ranking_dropout: dropout after each hidden layer of the ranking MLP.
      ranking_l2: L2 penalty on the ranking head's kernels.
      ranking_target_attention: the candidate attends over the watched videos
        (`TargetAttention`, DIN-style) and the result feeds the ranking head.
      ranking_count_features: the user's and the video's smoothed click rates and
        impression counts (`ClickCounts`, learned by `adapt`) feed the ranking head.
      ranking_calibration: the ranking head ends with Platt-scaling weights
        (identity until `tfrec_video.training.calibrate_clicks` sets them).
      ranking_objectives: what the ranking stage predicts: `("click",)` (the
        default), or `("click", "watch")`: a click head on every impression and
        a watch head on the clicked ones, trained on their `watch_fraction`
        (the share of the video watched, 0-1; or `watch_seconds /
        duration_s`) with a logistic loss on the fraction. The two heads share
        experts (`ranking_experts`, `ranking_gates`; `MultiTaskRankingHead`),
        and the served list is ordered by `score` (`watch_score_weight`).
      ranking_experts: experts of a multi-objective ranking head (per group
        with `"ple"`: shared, and each head's own).
      ranking_gates: how the heads combine the experts: `"mmoe"` (a softmax
        gate per head over all experts; Zhao et al., RecSys 2019),
        `"shared"` (no gates: every head reads the experts' mean, a shared
        bottom) or `"ple"` (each head gates its own experts and the shared
        ones: one level of progressive layered extraction; Tang et al.,
        RecSys 2020).
      watch_loss_weight: weight of the watch head's loss against the click
        head's (a mean over clicked rows against a mean over all rows).
      watch_score_weight: the served `score` of a multi-objective model is
        `click_term + watch_score_weight * log(expected watch)`, where the
        click term is what orders a click-only model's list (the list blend,
        or the click logit) and the expected watch is `expected_watch_fraction
        * duration_s` when the videos have a duration (expected seconds
        watched once clicked), the fraction alone when not. 1 orders by
        expected watch time per impression; 0 by clicks alone. Fixed at
        export; the `rank_weighted` signature takes other weights per request.
      list_blend: the served list is ordered by `ListBlend` (retrieval score,
        popularity and click logit, weights fitted on validation clicks by
        `tfrec_video.training.fit_list_blend`; retrieval's order until then).
        False orders it by click probability alone.
      temperature: softmax temperature of the retrieval loss.
      logq_correction: subtract log of each candidate's sampling probability.
      logq_weight: the share of that correction applied, in [0, 1]: the logits
        lose `logq_weight * log q(video)`. 1 is the standard correction (the
        in-batch softmax then estimates the full softmax, popularity included); smaller values
        leave some of the in-batch popularity penalty in place, which favours
        the content match over the memorised popularity of known videos.
        `"auto"` (the default): 0.5 when the videos have image or audio
        content, 1.0 when their content is text only (`models.data_rules`).
      remove_accidental_hits: mask in-batch negatives that are the positive video.
      retrieval_weight: weight of the retrieval loss (0 trains ranking alone).
      ranking_weight: weight of the ranking loss (0 trains retrieval alone).
      learning_rate: Adam learning rate.
      max_users: cap on user ids with their own embedding row.
      max_videos: cap on video ids with their own embedding row.
      seed: seed of initialisers and dropout.
    """

    embedding_dim: int = 64
    id_dim: int = 32
    user_oov_buckets: int = 64
    video_oov_buckets: int = 64
    video_id_dropout: float = 0.2
    user_id_dropout: float = 0.9
    history_pooling: str = "mean"
    history_content: bool = True
    title_vocabulary_size: int = 8000
    title_sequence_length: int = 16
    title_token_dim: int = 32
    title_conv_widths: Tuple[int, ...] = (1, 2, 3)
    title_filters: int = 32
    title_dim: int = 32
    title_encoder: str = "cnn"
    text_model: Optional[str] = None
    fine_tune_text: bool = False
    media_dim: int = 32
    media_components: int = 16
    image_model: Optional[str] = None
    image_model_size: Optional[int] = None
    audio_model: Optional[str] = None
    audio_sample_rate: int = 16000
    audio_clip_seconds: float = 1.0
    fine_tune_media: bool = False
    query_hidden_units: Tuple[int, ...] = (128,)
    candidate_hidden_units: Tuple[int, ...] = (128,)
    tower_dropout: float = 0.0
    cross_layers: int = 1
    ranking_hidden_units: Tuple[int, ...] = (128, 64)
    ranking_dropout: float = 0.4
    ranking_l2: float = 1e-4
    ranking_target_attention: bool = True
    ranking_count_features: bool = True
    ranking_calibration: bool = True
    ranking_objectives: Tuple[str, ...] = ("click",)
    ranking_experts: int = 4
    ranking_gates: str = "mmoe"
    watch_loss_weight: float = 1.0
    watch_score_weight: float = 1.0
    list_blend: bool = True
    temperature: float = 0.2
    logq_correction: bool = True
    logq_weight: Union[float, str] = AUTO
    remove_accidental_hits: bool = True
    retrieval_weight: float = 1.0
    ranking_weight: float = 1.0
    learning_rate: float = 2e-3
    max_users: Optional[int] = None
    max_videos: Optional[int] = None
    seed: int = 0

    def __post_init__(self):
        for name in ("embedding_dim", "id_dim", "user_oov_buckets", "video_oov_buckets", "title_vocabulary_size",
                     "title_sequence_length", "title_token_dim", "title_filters", "title_dim", "media_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"ModelConfig.{name} must be a positive integer, got {shorten(value)}.")
        for name in ("title_conv_widths", "query_hidden_units", "candidate_hidden_units", "ranking_hidden_units"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if any(not isinstance(v, int) or v <= 0 for v in value):
                raise ConfigError(f"ModelConfig.{name} must be positive integers, got {shorten(list(value))}.")
        objectives = tuple(self.ranking_objectives) if isinstance(self.ranking_objectives, (list, tuple)) else None
        if (not objectives or any(not isinstance(o, str) or o not in RANKING_OBJECTIVES for o in objectives)
                or objectives[0] != "click" or len(set(objectives)) != len(objectives)):
            raise ConfigError(f"ModelConfig.ranking_objectives must be 'click' first, then any of "
                              f"{list(RANKING_OBJECTIVES[1:])}, each once, got {shorten(self.ranking_objectives)}.")
        object.__setattr__(self, "ranking_objectives", objectives)
        if not isinstance(self.ranking_experts, int) or isinstance(self.ranking_experts, bool) or not (
                1 <= self.ranking_experts <= 64):
            raise ConfigError(f"ModelConfig.ranking_experts must be an integer from 1 to 64, got "
                              f"{shorten(self.ranking_experts)}.")
        if self.ranking_gates not in RANKING_GATES:
            raise ConfigError(f"ModelConfig.ranking_gates must be one of {RANKING_GATES}, got "
                              f"{shorten(self.ranking_gates)}.")
        for name in ("watch_loss_weight", "watch_score_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ConfigError(f"ModelConfig.{name} must be a number >= 0, got {shorten(value)}.")
        if not isinstance(self.media_components, int) or self.media_components < 0:
            raise ConfigError(f"ModelConfig.media_components must be an integer >= 0, got {shorten(self.media_components)}.")
        for name in ("image_model", "audio_model", "text_model"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"ModelConfig.{name} must be a TF Hub handle or SavedModel directory, got {shorten(value)}.")
        if self.image_model_size is not None and (not isinstance(self.image_model_size, int) or self.image_model_size <= 0):
            raise ConfigError(f"ModelConfig.image_model_size must be a positive integer, got {shorten(self.image_model_size)}.")
        if not (isinstance(self.audio_sample_rate, int) and self.audio_sample_rate > 0):
            raise ConfigError(f"ModelConfig.audio_sample_rate must be a positive integer, got {shorten(self.audio_sample_rate)}.")
        if not self.audio_clip_seconds > 0:
            raise ConfigError(f"ModelConfig.audio_clip_seconds must be > 0, got {shorten(self.audio_clip_seconds)}.")
        if self.title_encoder not in TITLE_ENCODERS:
            raise ConfigError(f"ModelConfig.title_encoder must be one of {TITLE_ENCODERS}, got "
                              f"{shorten(self.title_encoder)}.")
        if not isinstance(self.fine_tune_text, bool):
            raise ConfigError(f"ModelConfig.fine_tune_text must be true or false, got {shorten(self.fine_tune_text)}.")
        if not self.title_conv_widths:
            raise ConfigError("ModelConfig.title_conv_widths must name at least one width.")
        if self.history_pooling not in ("mean", "attention"):
            raise ConfigError(f"ModelConfig.history_pooling must be 'mean' or 'attention', got {shorten(self.history_pooling)}.")
        if not isinstance(self.ranking_l2, (int, float)) or self.ranking_l2 < 0:
            raise ConfigError(f"ModelConfig.ranking_l2 must be >= 0, got {shorten(self.ranking_l2)}.")
        for name in ("video_id_dropout", "user_id_dropout", "tower_dropout", "ranking_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"ModelConfig.{name} must be in [0, 1), got {shorten(getattr(self, name))}.")
        if self.cross_layers < 0:
            raise ConfigError(f"ModelConfig.cross_layers must be >= 0, got {shorten(self.cross_layers)}.")
        if self.logq_weight != AUTO and (isinstance(self.logq_weight, (str, bool)) or
                                         not 0.0 <= self.logq_weight <= 1.0):
            raise ConfigError(f"ModelConfig.logq_weight must be in [0, 1] or {AUTO!r}, got {self.logq_weight!r}.")
        if not self.temperature > 0:
            raise ConfigError(f"ModelConfig.temperature must be > 0, got {shorten(self.temperature)}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"ModelConfig.learning_rate must be > 0, got {shorten(self.learning_rate)}.")
        if self.retrieval_weight < 0 or self.ranking_weight < 0 or self.retrieval_weight + self.ranking_weight == 0:
            raise ConfigError(
                "ModelConfig.retrieval_weight and ranking_weight must be >= 0 and not both 0, got "
                f"{shorten(self.retrieval_weight)} and {shorten(self.ranking_weight)}."
            )
        for name in ("max_users", "max_videos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"ModelConfig.{name} must be a positive integer or None, got {shorten(value)}.")

    @property
    def watch(self) -> bool:
        """Whether the ranking stage has a watch head."""
        return "watch" in self.ranking_objectives

    def hub_encoders(self) -> dict:
        """The candidate tower's in-graph pretrained encoders, as its keyword arguments.

        Returns:
          `{"image_encoder", "audio_encoder", "title_model"}`: each a layer config
          (`handle`, `trainable`, ...), or None when its model is not set.
        """
        image = audio = text = None
        if self.image_model:
            image = dict(handle=self.image_model, image_size=self.image_model_size, trainable=self.fine_tune_media)
        if self.audio_model:
            audio = dict(handle=self.audio_model, sample_rate=self.audio_sample_rate,
                         clip_seconds=self.audio_clip_seconds, trainable=self.fine_tune_media)
        if self.text_model and self.title_encoder != "cnn":
            text = dict(handle=self.text_model, trainable=self.fine_tune_text)
        return {"image_encoder": image, "audio_encoder": audio, "title_model": text}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping) -> "ModelConfig":
        return from_mapping(cls, d)
