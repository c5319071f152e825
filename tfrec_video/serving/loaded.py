"""`ExportedModel`: an exported SavedModel behind the interface `tfrec_video.evaluation.report` uses.

`tfrec_video.serving.export.export_saved_model` writes a version directory whose
signatures take plain feature tensors (see `tfrec_video.serving.export`). This module
loads one and answers the duck-typed calls `evaluation.evaluate` makes of a
model, so a SavedModel is evaluated by exactly the code that evaluates a Keras
`VideoRecModel`:

| what evaluation calls                  | signature     | output              |
|----------------------------------------|---------------|---------------------|
| `video_feature_names`                  | `embed_video` | its input names     |
| `embed_videos(features)`               | `embed_video` | `video_embedding`   |
| `query_feature_names`                  | `embed_query` | its input names     |
| `embed_queries(features)`              | `embed_query` | `query_embedding`   |
| `model(features)["query_embedding"]`   | `embed_query` | `query_embedding`   |
| `model(features)["click_probability"]` | `rank`        | `click_probability` |

`rank` takes the user features and `video_id` and looks the video's content up
in the catalog held inside the SavedModel (the catalog it was exported with), so
click probabilities are those the served model gives. A test video missing from
that catalog ranks by its id bucket alone, as it would when served.

The served lists themselves are there too: `recommend(features, exclude=None)`
(`serving_default`, or `recommend_excluding` when `exclude`, `[batch, m]` video
ids to leave out, is given), `retrieve(features, exclude=None)` and
`served_lists`, which `tfrec_video.evaluation.served` judges.

The SavedModel also tells what data it reads: the input specs of its signatures
give the feature names, the `history` length and the image and audio embedding
dimensions (`feature_length`), from which `tfrec-video evaluate` builds the
schemas of the user's files.

A request the export's shape checks refuse (an input of the wrong rank or width,
or batch sizes that differ between inputs) raises `DataValidationError` naming
the SavedModel, the input, what came and what was expected, rather than
TensorFlow's `InvalidArgumentError`.

Only TensorFlow and TensorFlow Text (the WordPiece ops) are needed to load it;
nothing of the Keras model is rebuilt.

Example:

>>> model = ExportedModel("saved_models/video_rec/1")            # doctest: +SKIP
>>> model.video_feature_names                                     # doctest: +SKIP
['audio_embedding', 'category', 'duration_s', 'image_embedding', 'title', 'video_id']
>>> model.feature_length("history")                               # doctest: +SKIP
20
>>> sorted(model({"user_id": ..., "history": ..., "video_id": ...}))  # doctest: +SKIP
['click_probability', 'query_embedding']
"""

import os
import re
from typing import Dict, List, Mapping, Optional

import tensorflow as tf

from tfrec_video.errors import ConfigError, DataValidationError

# The signatures evaluation needs; `retrieve` and `serving_default` (`served_lists`) are optional.
REQUIRED_SIGNATURES = ("embed_query", "embed_video", "rank")
# The signature that takes `exclude` beside each list signature's inputs.
_EXCLUDING = {"serving_default": "recommend_excluding", "retrieve": "retrieve_excluding"}
# What an export's input checks (`serving.request_guard.checked_features`) say when they refuse a request:
# `assertion failed: [history: expected shape [batch, <= 20], got [2, 25]]`.
_REFUSED = re.compile(r"assertion failed: \[([A-Za-z_][A-Za-z0-9_]*): expected (.*?), got ([^\n]*)\]")


def _versions_hint(path: str) -> str:
    """Names the version directories when `path` is a model directory rather than one version."""
    try:
        versions = sorted((int(d.rstrip("/")) for d in tf.io.gfile.listdir(path) if re.match(r"^\d+/?$", d)))
    except (tf.errors.OpError, OSError):
        return ""
    if not versions:
        return ""
    return f"; it holds versions {', '.join(map(str, versions))}: pass one, e.g. {os.path.join(path, str(versions[-1]))}"


class ExportedModel:
    """A loaded SavedModel version directory, used like a trained model by `evaluation.evaluate`.

    Args:
      path: a version directory written by `export_saved_model`
        (`saved_models/<name>/<version>`).

    Raises:
      ConfigError: naming `path`, when it does not exist, is not a SavedModel,
        does not load, or lacks the signatures `embed_query`, `embed_video`
        and `rank`.
    """

    def __init__(self, path: str):
        self.path = os.fspath(path)
        if not tf.io.gfile.isdir(self.path):
            raise ConfigError(f"{self.path}: no such directory (expected an exported SavedModel version directory, "
                              "such as saved_models/video_rec/1).")
        if not tf.saved_model.contains_saved_model(self.path):
            raise ConfigError(f"{self.path}: not a SavedModel (no saved_model.pb){_versions_hint(self.path)}.")
        import tensorflow_text  # noqa: F401  (registers the WordPiece ops the title encoder uses)

        try:
            self._loaded = tf.saved_model.load(self.path)
        except Exception as error:  # a corrupt or foreign SavedModel: say which, in one line
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"{self.path}: the SavedModel does not load: {first}") from None
        signatures = self._loaded.signatures
        missing = [name for name in REQUIRED_SIGNATURES if name not in signatures]
        if missing:
            raise ConfigError(f"{self.path}: the SavedModel lacks the signatures {missing} (it has "
                              f"{sorted(signatures.keys())}); export it with tfrec_video.serving.export.export_saved_model.")
        self._embed_query = signatures["embed_query"]
        self._embed_video = signatures["embed_video"]
        self._rank = signatures["rank"]
        self.signature_names = sorted(signatures.keys())
        self._specs: Dict[str, tf.TensorSpec] = {}
        for fn in (self._embed_query, self._embed_video, self._rank):
            self._specs.update(fn.structured_input_signature[1])

    # -- what the SavedModel reads -----------------------------------------------------------------
    @staticmethod
    def _names(fn) -> List[str]:
        return sorted(fn.structured_input_signature[1])

    @property
    def query_feature_names(self) -> List[str]:
        """Input features of the query side (`embed_query`)."""
        return self._names(self._embed_query)

    @property
    def video_feature_names(self) -> List[str]:
        """Input features of the video side (`embed_video`)."""
        return self._names(self._embed_video)

    def feature_spec(self, name: str) -> Optional[tf.TensorSpec]:
        """The input spec of feature `name` (with a `None` batch dimension), or None if no signature reads it."""
        return self._specs.get(name)

    def feature_length(self, name: str) -> Optional[int]:
        """The per-row length of a vector or list feature (`image_embedding`, `history`), or None if not read."""
        spec = self.feature_spec(name)
        if spec is None or spec.shape.rank != 2:
            return None
        return spec.shape[1]

    # -- the calls evaluation makes ----------------------------------------------------------------
    def _inputs(self, fn, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        names = self._names(fn)
        missing = [n for n in names if n not in features]
        if missing:
            raise ConfigError(f"{self.path}: the model reads the features {missing}, which the data lacks "
                              f"(it has {sorted(features)}).")
        return {n: features[n] for n in names}

    def _call(self, signature: str, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """The signature named `signature` on its inputs taken from `features`.

        Raises:
          ConfigError: `features` lacks an input of the signature.
          DataValidationError: naming the input, when the export's shape checks refuse it (wrong
            rank or width, or a batch size that differs from the other inputs').
        """
        fn = self._loaded.signatures[signature]
        inputs = self._inputs(fn, features)
        try:
            return fn(**inputs)
        except tf.errors.InvalidArgumentError as error:
            refused = _REFUSED.search(str(error))
            if refused is None:
                raise
            name, expected, got = refused.groups()
            raise DataValidationError(f"the {signature} signature refused it: got {got}", file=self.path,
                                      feature=name, expected=expected) from None

    def embed_queries(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """Query embeddings `[batch, dim]` from the `embed_query` signature (`training` is ignored)."""
        return self._call("embed_query", features)["query_embedding"]

    def embed_videos(self, features: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """Video embeddings `[batch, dim]` from the `embed_video` signature (`training` is ignored)."""
        return self._call("embed_video", features)["video_embedding"]

    def _serve(self, name: str, features: Mapping[str, tf.Tensor], exclude=None) -> Dict[str, tf.Tensor]:
        """Calls signature `name`, or `name`'s `_excluding` form with `exclude` when it is given."""
        signature = name if exclude is None else _EXCLUDING[name]
        signatures = self._loaded.signatures
        if signature not in signatures:
            hint = " (an export older than the `exclude` input)" if exclude is not None else ""
            raise ConfigError(f"{self.path}: the SavedModel lacks the signature {signature!r}{hint}; it has "
                              f"{sorted(signatures.keys())}.")
        if exclude is not None:
            features = dict(features, exclude=tf.convert_to_tensor(exclude, tf.string))
        return self._call(signature, features)

    def recommend(self, features: Mapping[str, tf.Tensor], exclude=None) -> Dict[str, tf.Tensor]:
        """What TF Serving answers to `serving_default`: `video_ids`, `click_probability` and
        `retrieval_score`, each `[batch, n]`.

        Args:
          features: the user features (more are ignored).
          exclude: optional `[batch, m]` video ids to leave out (`""` pads, unknown ids are ignored);
            given, the `recommend_excluding` signature answers.
        """
        return self._serve("serving_default", features, exclude)

    def retrieve(self, features: Mapping[str, tf.Tensor], exclude=None) -> Dict[str, tf.Tensor]:
        """`retrieve`'s `video_ids` and `retrieval_score`, each `[batch, k]`; `exclude` as in `recommend`."""
        return self._serve("retrieve", features, exclude)

    def served_lists(self, features: Mapping[str, tf.Tensor], exclude=None):
        """`(retrieve's top n ids, serving_default's ids)`, each `[batch, n]`: what the export serves.

        `exclude` (`[batch, m]` ids) is passed to the `_excluding` signatures.

        Raises:
          ConfigError: the SavedModel lacks a signature this needs.
        """
        served_ids = self.recommend(features, exclude)["video_ids"]
        retrieved_ids = self.retrieve(features, exclude)["video_ids"][:, :served_ids.shape[1]]
        return retrieved_ids.numpy(), served_ids.numpy()

    def __call__(self, features: Mapping[str, tf.Tensor], training=None) -> Dict[str, tf.Tensor]:
        """`query_embedding` and `click_probability` (and a watch model's `expected_watch_fraction`) of a
        batch of impressions (user features + `video_id`)."""
        ranked = self._call("rank", features)
        return dict({"query_embedding": self.embed_queries(features)},
                    **{name: ranked[name] for name in ("click_probability", "expected_watch_fraction") if name in ranked})
