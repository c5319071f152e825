"""Defaults that follow the data: the `"auto"` fields of `ModelConfig`, resolved from `Vocabularies`.

A default that is right on dense users with image and audio embeddings can be
wrong on a titles-only log of a few clicks per user. A field left at `"auto"`
is therefore decided by a documented rule over what `adapt` recorded about the
training data (`Vocabularies.data_shape`, and which content features exist),
when the model is built. The rule is deterministic, so a model rebuilt from its
config and vocabularies (`load_model`, `from_config`) resolves it the same way.
A number given by the user is never changed.

The rules, each measured against the fixed default on both built-in regimes
(`BuiltinConfig()` and `BuiltinConfig.sparse()`; `benchmarks/RESULTS.md`):

* **`logq_weight`**: the share of the logQ correction of the in-batch softmax.
  The full correction (1.0) makes the softmax estimate the full-catalog one,
  popularity included; a half correction (0.5) leaves part of the in-batch
  penalty on popular videos, which lifts videos placed by their content, the
  cold ones among them. That trade only pays when the content can place a new
  video: **0.5 when the videos have image or audio content** (embeddings in
  the catalog, or `image_model` / `audio_model`), **1.0 when the only content
  is text and categories**; text read by a pretrained encoder (`text_model`,
  a precomputed `title_embedding`) is text here, since the rule was measured
  with image and audio content only. Measured (12 epochs, each head at its best
  validation epoch; test split):
  - default data (media): 0.5 keeps cold-start Recall@100 at 0.26 where the
    full correction gives 0.15 (3 epochs; `ModelConfig` docstring);
  - sparse data (titles only): leave-one-out HR@10 / NDCG@10 of retrieval
    0.101 / 0.056 with 0.5, 0.122 / 0.068 with 1.0 (0.013 / 0.007 with none);
    cold-video HR@50 is near zero either way, so the half correction bought
    nothing and cost a sixth of the warm hits.

`resolve` returns the concrete config and a record of each decision (the
value, the rule, and the data facts it read), which `report.json` keeps under
`model_defaults`.

Example:

>>> from tfrec_video.features.vocabulary import Vocabularies
>>> vocab = Vocabularies(user_ids=["u"], video_ids=["v"], video_counts=[1], title_tokens=["[PAD]"])
>>> config, decisions = resolve(ModelConfig(), vocab)
>>> config.logq_weight, decisions["logq_weight"]["because"]
(1.0, 'the videos have no image or audio content')
"""

import dataclasses
from typing import Dict, Tuple

from tfrec_video.features.vocabulary import Vocabularies
from tfrec_video.models.config import AUTO, ModelConfig


def _has_media(config: ModelConfig, vocabularies: Vocabularies) -> bool:
    return any(value is not None for value in (vocabularies.image_dim, vocabularies.audio_dim,
                                               config.image_model, config.audio_model))


def resolve(config: ModelConfig, vocabularies: Vocabularies) -> Tuple[ModelConfig, Dict[str, dict]]:
    """The config with every `"auto"` field decided by its rule (see module docstring).

    Args:
      config: a `ModelConfig`, possibly with `"auto"` fields.
      vocabularies: what `adapt` learned from the training data.

    Returns:
      `(config, decisions)`: a `ModelConfig` with no `"auto"` left, and
      `{field: {"value", "rule", "because"}}` for each field that was `"auto"`.
    """
    decisions: Dict[str, dict] = {}
    changes = {}
    if config.logq_weight == AUTO:
        media = _has_media(config, vocabularies)
        value = 0.5 if media else 1.0
        decisions["logq_weight"] = {
            "value": value, "rule": "0.5 when the videos have image or audio content, else 1.0",
            "because": "the videos have image or audio content" if media else
            "the videos have no image or audio content"}
        changes["logq_weight"] = value
    return (dataclasses.replace(config, **changes) if changes else config), decisions
