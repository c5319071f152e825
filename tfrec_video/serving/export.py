"""Export a trained `VideoRecModel` as one SavedModel that TF Serving loads as is.

Layout (what `tensorflow_model_server --model_base_path=saved_models/<name>` polls):

    saved_models/<name>/<version>/saved_model.pb, variables/, assets/

Versions are integers and auto-increment. A version is written to a hidden
temporary directory beside it and renamed into place, so a polling server never
sees half a model and a crash never leaves a visible partial version. Its
directories and files follow the umask (0755 / 0644 under umask 022), so a
server running as another user can read it; two exports into one directory at
once both succeed, with distinct versions; and the temporary directory a killed
export left behind is removed by the next export (see `serving.versions`).

Signatures (all inputs batchable, `[batch]` or `[batch, history_length]`):

* `serving_default` (recommend): user features → the top `n` videos, re-ranked.
  Retrieval scores the whole catalog (a brute-force index: a matmul and
  `top_k`, core TF ops, what `tfrs` `BruteForce` does) and keeps `k`
  candidates; the ranking head then scores those `k` with the catalog's content
  features, held in the graph as variables, and the `n` most likely clicks are
  returned with `video_ids`, `click_probability` and `retrieval_score`.
* `retrieve`: user features → top-`k` `video_ids` and `retrieval_score`.
* `recommend_excluding`, `retrieve_excluding`: the same two, with one more
  input, `exclude`: `[batch, m]` strings, the video ids each request must not
  get back (already shown, disliked, blocked), `""` as padding; `m` is free
  and may differ between requests. Unknown ids are ignored. They still return
  exactly `n` / `k` videos, for any `m`: the excluded catalog rows are masked
  in the whole-catalog scores before `top_k`, so no fixed index depth can run
  out. A signature's inputs are all required (TF Serving's REST and gRPC
  APIs refuse a request that lacks one), so `exclude` gets signatures of its
  own and the two above keep their inputs: existing clients keep working.

Seen videos: by default all four leave out the videos in the request's
`history`, in the graph, and still return `n` / `k` videos (the `_excluding`
ones leave out `history` and `exclude` together). The rule is fixed at export:
`exclude_seen=False` (`tfrec-video export --keep-seen`, `export.keep_seen` in a
run config) keeps them; `exclude` is applied whenever it is given. Only a
catalog with fewer than `k` videos left puts left-out ones, last, into the `k`.
The masking is `tfrec_video.evaluation.candidates.top_k_excluding` and the
ranking `VideoRecModel.serve_candidates`, the code `served_lists` evaluates.

Other signatures:

* `rank`: user features + `video_id` → `click_probability` (catalog features are
  looked up in the graph; an unknown id ranks by its id bucket alone).
* `embed_query`: user features → `query_embedding`.
* `embed_video`: video features → `video_embedding`.

Warmup: each version also holds `assets.extra/tf_serving_warmup_requests`, a
TFRecord file of tensorflow-serving-api `PredictionLog` records (one batch-of-2
`PredictRequest` per signature, built by `warmup_requests` from the model's
vocabularies and the catalog: a known and an unknown user, real videos). TF
Serving replays them when it loads the version, so the first real request does
not pay for lazy initialisation. It is written inside the temporary directory,
before the rename.

Shapes are checked in the graph, since neither TF Serving nor a loaded
signature holds a request to the signature's shapes: an input of the wrong rank
or width, or a batch size that differs from the other inputs', is refused with
an `InvalidArgumentError` naming the input, what was expected and what came,
e.g. `history: expected shape [batch, <= 20], got [2, 25]` (a wider history
would otherwise be pooled whole, silently). A `history` narrower than the
exported width is padded with `""` in the graph: the same answer as the request
padded by the client.

Odd values get defined answers, never an error: unknown ids and empty
strings use the model's OOV buckets, a non-finite number (NaN, inf) in
`duration_s`, `image_embedding`, `audio_embedding` or `title_embedding` counts as 0 (no value)
and a finite one is clipped to +-1e6 (so that 3e38 cannot overflow the
towers to inf), and an empty batch returns empty outputs of the promised shapes.
`tests/test_serving_fuzz.py` sends 10,000 random requests to prove it.

`k` and `n` are fixed at export; a catalog of fewer than `k` videos returns
all of them (and `min(n, videos)`), decided in the graph from the catalog the
version holds. Every op is a core TF op or a TF Text op (WordPiece), so stock
TF Serving serves it; a Python client must `import tensorflow_text` before
`tf.saved_model.load`.

Catalog refresh: everything the version holds per catalog video is a variable
with an unknown row count (`towers.catalog_table.rows_variable`), and beside
the signatures the module holds `encode_catalog_rows`, a `tf.function` (not a
signature: TF Serving never sees it) from a batch of raw video columns to
those per-video values. `tfrec-video refresh-catalog`
(`tfrec_video.serving.refresh`) loads a version, encodes the added and changed
videos with it, assigns the new rows and saves the next version, without the
model directory.

Example:

    version_dir = export_saved_model(model, catalog, "saved_models", name="video_rec", k=100, n=10)
    served = tf.saved_model.load(version_dir).signatures["recommend_excluding"](
        **user_features, exclude=tf.constant([["v12", "v40"], ["v7", ""]]))
"""

import os
import re
import shutil
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import follow_umask
from tfrec_video.evaluation.candidates import top_k_excluding
from tfrec_video.serving.request_guard import guarded
from tfrec_video.serving.versions import make_temp_dir, next_version, publish, remove_stale_temp_dirs
from tfrec_video.serving.warmup import warmup_requests, write_warmup_requests
from tfrec_video.towers import CatalogTable
from tfrec_video.towers.catalog_table import rows_variable

def _feature_spec(name: str, model) -> tf.TensorSpec:
    v = model.vocabularies
    shapes = {
        "user_id": ([None], tf.string), "history": ([None, v.history_length], tf.string),
        "hour": ([None], tf.int64), "device": ([None], tf.string),
        "video_id": ([None], tf.string), "title": ([None], tf.string), "category": ([None], tf.string),
        "duration_s": ([None], tf.float32), "image_embedding": ([None, v.image_dim], tf.float32),
        "audio_embedding": ([None, v.audio_dim], tf.float32),
        "title_embedding": ([None, v.title_embedding_dim], tf.float32),
        "thumbnail": ([None], tf.string), "audio": ([None], tf.string), "exclude": ([None, None], tf.string),
        "diversity": ([None], tf.float32), "click_weight": ([None], tf.float32), "watch_weight": ([None], tf.float32),
    }
    shape, dtype = shapes[name]
    return tf.TensorSpec(shape, dtype, name=name)


class ServingModule(tf.Module):
    """The servable graph: a model, its catalog and its catalog's embeddings (a brute-force index).

    Args:
      model: a trained `VideoRecModel`.
      catalog: the catalog as column arrays; every video in it can be recommended.
      k: candidates retrieved before ranking.
      n: videos returned by `serving_default` (n <= k).
      exclude_seen: leave the request's `history` videos out of `retrieve`,
        `serving_default` and their `_excluding` forms (see module docstring).
      score_weights: a watch model's `(click_weight, watch_weight)` of the served `score`
        (`VideoRecModel.serve_candidates`); default `(1, ModelConfig.watch_score_weight)`.
    """

    def __init__(self, model, catalog: Mapping[str, np.ndarray], k: int = 100, n: int = 10,
                 exclude_seen: bool = True, score_weights: Optional[Sequence[float]] = None):
        super().__init__(name="video_rec_serving")
        self.watch = bool(model.config.watch)
        if score_weights is None:
            score_weights = (1.0, model.config.watch_score_weight)
        weights = [float(w) for w in score_weights] if isinstance(score_weights, (list, tuple)) else []
        if len(weights) != 2 or not all(np.isfinite(weights)):
            raise ValueError(f"export: score_weights must be two finite numbers (click, watch), got {score_weights!r}.")
        self.score_weights = tuple(weights)
        num_videos = len(catalog["video_id"])
        if num_videos == 0:
            raise ValueError("export: the catalog is empty.")
        if not 0 < n <= k:
            raise ValueError(f"export: need 0 < n <= k, got n={n}, k={k}.")
        # As asked, not cut to the catalog's size: the graph takes min(k, videos) of the catalog it holds at
        # request time, which a refresh (`serving.refresh`) may have grown or shrunk.
        self.k, self.n = int(k), int(n)
        self.model = model
        self.query_names = list(model.query_feature_names)
        self.video_names = list(model.video_feature_names)
        # Variables, not constants (a large catalog would overflow the 2 GB GraphDef limit); row 0
        # of the table is its "unknown video" row, so catalog row i is table row i + 1. The model's
        # own table (history_content) serves when it holds this very catalog: one copy, not two. Its prepared
        # columns (tokens, projections) follow from the content, so the content alone is compared.
        table = getattr(model, "catalog_table", None)
        if table is not None and table.holds(catalog, columns=list(model.content_columns)):
            self.catalog = table
        else:
            self.catalog = CatalogTable(num_videos, model.content_columns, name="serving_catalog")
            self.catalog.set_catalog(catalog)
        parts = model.encode_catalog(catalog)
        embeddings = parts.pop("embedding")
        # What the ranking head reads of every catalog video, computed once here: ranking the retrieved
        # candidates is then a gather, not a tokenizer + CNN pass per request.
        # Every per-video variable has an unknown row count (`rows_variable`), so a refresh can resize it.
        self.catalog_encoding = rows_variable(parts.pop("encoding"), "catalog_encoding")
        self.catalog_parts = {name: rows_variable(values, f"catalog_{name}") for name, values in sorted(parts.items())}
        self.exclude_seen = bool(exclude_seen) and "history" in self.query_names
        # The retrieval index: every catalog video is scored (matmul), the left-out ones masked, top k kept.
        # A fixed-depth index (tfrs BruteForce) could not leave room for any number of excluded videos.
        self.catalog_embedding = rows_variable(embeddings, "catalog_embedding")
        # Watched videos are gathered from precomputed embeddings of the model's own table, not embedded from
        # their content per request (the tokenizer and title CNN per watched video were most of the query
        # tower's time). When the table is this catalog, those are the index's rows; else computed once here.
        self.history_embedding = None
        if table is not None:
            self.history_embedding = (self.catalog_embedding if self.catalog is table else rows_variable(
                model.embed_catalog_table(), "history_embedding"))
        query_spec = {name: _feature_spec(name, model) for name in self.query_names}
        video_spec = {name: _feature_spec(name, model) for name in self.video_names}
        rank_spec = dict(query_spec, video_id=_feature_spec("video_id", model))
        excluding_spec = dict(query_spec, exclude=_feature_spec("exclude", model))
        diverse_spec = dict(query_spec, diversity=_feature_spec("diversity", model))
        weighted_spec = dict(query_spec, click_weight=_feature_spec("click_weight", model),
                             watch_weight=_feature_spec("watch_weight", model))
        self.recommend = tf.function(guarded(self._recommend), input_signature=[query_spec])
        self.retrieve = tf.function(guarded(self._retrieve), input_signature=[query_spec])
        self.recommend_excluding = tf.function(guarded(self._recommend), input_signature=[excluding_spec])
        self.retrieve_excluding = tf.function(guarded(self._retrieve), input_signature=[excluding_spec])
        self.recommend_diverse = tf.function(guarded(self._recommend), input_signature=[diverse_spec])
        self.rank_weighted = tf.function(guarded(self._recommend), input_signature=[weighted_spec]) \
            if self.watch else None
        self.rank = tf.function(guarded(self._rank), input_signature=[rank_spec])
        self.embed_query = tf.function(guarded(self._embed_query), input_signature=[query_spec])
        self.embed_video = tf.function(guarded(self._embed_video), input_signature=[video_spec])
        # Not a signature (TF Serving never calls it, and clients never see it): what a catalog refresh
        # encodes added and changed videos with, from the export alone (`tfrec_video.serving.refresh`).
        self.encode_catalog_rows = tf.function(self._encode_catalog_rows, input_signature=[video_spec])

    def _index(self):
        """The catalog embeddings as a tensor, read once per request. Every use gathers from this value,
        never from the variable: a gather on a variable (ResourceGather) switches it to copy-on-read for
        good, and the whole-catalog matmul's read then copies it on every request (2.8 ms of a 4 ms
        request at 100k videos)."""
        return tf.convert_to_tensor(self.catalog_embedding)

    def _history(self, index):
        """What `encode_queries(catalog_embeddings=)` gathers watched videos from."""
        if self.history_embedding is None:
            return None
        return index if self.history_embedding is self.catalog_embedding else self.history_embedding

    def _candidates(self, query_embedding, features, index):
        """The top `k` catalog rows `[batch, k]` and their scores, the request's history (when
        `exclude_seen`) and its `exclude` ids (when given) left out."""
        left_out = []
        if self.exclude_seen:
            left_out.append(features["history"])
        if "exclude" in features:
            left_out.append(features["exclude"])
        exclude = None
        if left_out:
            # Table rows are catalog rows + 1; an empty or unknown id looks up to 0, so -1: masks nothing.
            exclude = self.catalog.lookup(tf.concat(left_out, axis=1)) - 1
        scores = tf.matmul(query_embedding, index, transpose_b=True)
        # All the videos of a catalog smaller than k (the catalog held now: a refresh may have shrunk it).
        return top_k_excluding(scores, tf.minimum(self.k, tf.shape(index)[0]), exclude)

    def _retrieve(self, features):
        index = self._index()
        query = self.model.embed_queries(features, training=False, catalog_embeddings=self._history(index))
        scores, rows = self._candidates(query, features, index)
        return {"video_ids": tf.gather(self.catalog.ids, rows + 1), "retrieval_score": scores}

    def _recommend(self, features):
        # The user is encoded once, the candidates' parts are gathered from the catalog's.
        index = self._index()
        query = self.model.encode_queries(features, training=False, catalog_embeddings=self._history(index))
        scores, rows = self._candidates(query["embedding"], features, index)
        parts = dict(self.catalog_parts, encoding=self.catalog_encoding, embedding=index)
        weights = self.score_weights
        if "click_weight" in features:
            weights = (features["click_weight"], features["watch_weight"])
        served = self.model.serve_candidates(query, parts, scores, rows, tf.minimum(self.n, tf.shape(rows)[1]),
                                             score_weights=weights, diversity=features.get("diversity"))
        outputs = {
            "video_ids": tf.gather(self.catalog.ids, served["rows"] + 1),
            "click_probability": tf.sigmoid(served["click_logits"]),
            "retrieval_score": served["retrieval_scores"],
            "score": served["scores"],
        }
        if self.watch:
            outputs["expected_watch_fraction"] = tf.sigmoid(served["watch_logits"])
            if self.model.watch_in_seconds:
                outputs["expected_watch_seconds"] = tf.exp(served["log_expected_watch"])
        return outputs

    def _rank(self, features):
        rows = self.catalog.lookup(features["video_id"])
        # An unknown id keeps its own id (hashed to an OOV bucket); its content is unknown, so the
        # catalog's first video stands in for the rest, which keeps the output finite and defined.
        rows = tf.where(rows > 0, rows, tf.ones_like(rows))
        merged = {name: features[name] for name in self.query_names + ["video_id"]}
        for name, values in self.catalog.values.items():
            merged[name] = tf.gather(values, rows)
        logits = self.model.rank_outputs(merged, training=False)
        return {"click_probability": tf.sigmoid(logits["click"]),
                **({"expected_watch_fraction": tf.sigmoid(logits["watch"])} if "watch" in logits else {})}

    def _embed_query(self, features):
        return {"query_embedding": self.model.embed_queries(features, training=False,
                                                            catalog_embeddings=self._history(self._index()))}

    def _embed_video(self, features):
        return {"video_embedding": self.model.embed_videos(features, training=False)}

    def _encode_catalog_rows(self, features):
        """What the export holds of each catalog video, from the videos' raw columns (`embed_video`'s inputs):
        the index row (`embedding`), the ranking head's parts (`encoding` and `catalog_parts`' names: what
        `encode_catalog` gives) and, when the catalog table holds them, its prepared columns (`title_tokens`,
        `<name>_components`: what `CandidateTower.prepare_catalog` gives). Raw values, as a full export
        encodes them: no input guard."""
        encoded = dict(self.model.encode_videos(features, training=False))
        prepared = [name for name in self.catalog.columns if name not in self.video_names]
        if prepared:
            computed = self.model.candidate_tower.prepare_features(features)  # what `prepare_catalog` computes
            encoded.update({name: computed[name] for name in prepared})
        return encoded

    def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
        return {
            "serving_default": self.recommend.get_concrete_function(),
            "retrieve": self.retrieve.get_concrete_function(),
            "recommend_excluding": self.recommend_excluding.get_concrete_function(),
            "retrieve_excluding": self.retrieve_excluding.get_concrete_function(),
            "recommend_diverse": self.recommend_diverse.get_concrete_function(),
            **({"rank_weighted": self.rank_weighted.get_concrete_function()} if self.watch else {}),
            "rank": self.rank.get_concrete_function(),
            "embed_query": self.embed_query.get_concrete_function(),
            "embed_video": self.embed_video.get_concrete_function(),
        }


def export_saved_model(model, catalog: Mapping[str, np.ndarray], base_dir: str = "saved_models",
                       name: str = "video_rec", k: int = 100, n: int = 10, version: Optional[int] = None,
                       exclude_seen: bool = True, score_weights: Optional[Sequence[float]] = None) -> str:
    """Writes `base_dir/name/<version>/` atomically and returns that path.

    Args:
      model: a trained `VideoRecModel`.
      catalog: the catalog as column arrays (see `ServingModule`).
      base_dir: the directory that holds model names (default `saved_models`).
      name: the model name, TF Serving's `--model_name`.
      k: candidates retrieved before ranking.
      n: videos returned by `serving_default`.
      version: the version number; by default one more than the highest present
        (when a concurrent export takes that number first, the next free one).
      exclude_seen: `retrieve`, `serving_default` and their `_excluding` forms
        leave out the request's `history` videos (False keeps them; see the
        module docstring).
      score_weights: a watch model's `(click_weight, watch_weight)` of the served `score`, fixed in the
        version (default `(1, ModelConfig.watch_score_weight)`); `rank_weighted` takes others per request.

    The version holds `assets.extra/tf_serving_warmup_requests` (see `warmup_requests`). Its
    directories and files follow the umask (0755 / 0644 under umask 022), so a server running as
    another user reads them. Temporary directories of killed exports are removed first
    (`versions.remove_stale_temp_dirs`).

    Returns:
      The path of the new version directory.

    Raises:
      FileExistsError: `version` was given and exists already.
    """
    if not re.match(r"^[A-Za-z0-9_.-]+$", name):
        raise ValueError(f"export: model name must be letters, digits, '_', '.' or '-', got {name!r}.")
    model_dir = os.path.join(base_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_temp_dirs(model_dir)
    fixed = version is not None
    version = int(version) if fixed else next_version(model_dir)
    final = os.path.join(model_dir, str(version))
    if fixed and os.path.lexists(final):
        raise FileExistsError(f"export: {final} already exists; versions are never overwritten.")
    module = ServingModule(model, catalog, k=k, n=n, exclude_seen=exclude_seen, score_weights=score_weights)
    # A dot-prefixed sibling: TF Serving ignores non-numeric names, and rename within one
    # filesystem is atomic. Its name records this process, so a later export can tell it stale.
    tmp = make_temp_dir(model_dir, version)
    try:
        tf.saved_model.save(module, tmp, signatures=module.signatures())
        write_warmup_requests(tmp, warmup_requests(module, name))
        follow_umask(tmp)
        return publish(tmp, model_dir, version, fixed=fixed)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
