"""Saving and loading a trained `VideoRecModel`: its config as JSON, its weights as a TF checkpoint.

    model_dir/
      model.json        {"format": ..., "class": "VideoRecModel", "config": model.get_config(),
                         "lineage": model.lineage}
      weights.index     a `tf.train.Checkpoint(model=model)` (every variable, the
      weights.data-*    in-graph catalog table included)

This is the training-side artifact (what `tfrec-video export` turns into a
servable SavedModel); the SavedModel under `saved_models/` is the serving-side
one. JSON, not pickle: loading a model directory never executes code from it.
`lineage` (set by `fit_model`) says where the model comes from: its id, its
generation, its parent model when it was warm-started
(`tfrec_video.training.warm_start`) and the data windows of every generation;
`load_model` gives it back as `model.lineage` (None for models saved without).
`load_model` rebuilds the model from its config, runs it once on a dummy batch
so that every variable exists, and restores the checkpoint, failing loudly if
any variable is missing.

The write is atomic: everything goes to a temporary sibling directory that is
renamed into place, so an interrupted save never leaves a half model, and an
existing model at the same path is replaced only once the new one is complete.

Example:

>>> save_model(model, "models/video_rec")            # doctest: +SKIP
>>> restored = load_model("models/video_rec")        # doctest: +SKIP
"""

import json
import os
import shutil
import tempfile
from typing import Dict

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import follow_umask
from tfrec_video.errors import ConfigError, shorten
from tfrec_video.models.video_rec import VideoRecModel
from tfrec_video.towers.untracked import untracked

FORMAT = "tfrec_video.model/2"
# Models saved by tfrec_video 0.1 load with the ranking features they were built without.
_LEGACY_FORMATS = {"tfrec_video.model/1": {"ranking_dropout": 0.0, "ranking_l2": 0.0, "ranking_target_attention": False,
                                           "ranking_count_features": False, "ranking_calibration": False,
                                           "list_blend": False}}
CONFIG_FILE = "model.json"
WEIGHTS = "weights"


def save_model(model: VideoRecModel, directory: str) -> str:
    """Writes `model` to `directory` (see module docstring) and returns its path."""
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(directory)}-", dir=parent)
    try:
        with open(os.path.join(tmp, CONFIG_FILE), "w", encoding="utf-8") as f:
            saved = {"format": FORMAT, "class": type(model).__name__, "config": model.get_config()}
            if getattr(model, "lineage", None) is not None:
                saved["lineage"] = dict(model.lineage)
            json.dump(saved, f, ensure_ascii=False)
        tf.train.Checkpoint(model=model).write(os.path.join(tmp, WEIGHTS))
        # mkdtemp's 0700 would hide the model from `tfrec-video export` run as another user.
        follow_umask(tmp)
        old = None
        if os.path.exists(directory):
            old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(directory)}-", dir=parent)
            os.rmdir(old)
            os.rename(directory, old)
        os.rename(tmp, directory)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def dummy_batch(model: VideoRecModel) -> Dict[str, tf.Tensor]:
    """One impression with every feature the model reads, to create its variables."""
    v = model.vocabularies
    widths = {"history": v.history_length, "image_embedding": v.image_dim, "audio_embedding": v.audio_dim,
              "title_embedding": v.title_embedding_dim}
    floats = {"duration_s", "image_embedding", "audio_embedding", "title_embedding"}
    batch = {}
    for name in set(model.query_feature_names) | set(model.video_feature_names):
        shape = [1] + ([widths[name]] if widths.get(name) else [])
        if name == "hour":
            batch[name] = tf.zeros(shape, tf.int64)
        elif name in floats:
            batch[name] = tf.zeros(shape, tf.float32)
        else:
            batch[name] = tf.constant(np.full(shape, "", object))
    return batch


def load_model(directory: str) -> VideoRecModel:
    """Rebuilds a model written by `save_model`.

    Raises:
      ConfigError: naming `directory`, when it is not a saved model or does not restore.
    """
    directory = os.fspath(directory)
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"{directory}: not a saved tfrec_video model (no {CONFIG_FILE}); write one with "
                          "tfrec_video.models.save_model.")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError, RecursionError) as error:
        raise ConfigError(f"{path}: unreadable model config: {shorten(str(error))}") from None
    known = (FORMAT, *_LEGACY_FORMATS)
    if not isinstance(saved, dict) or saved.get("format") not in known or saved.get("class") != "VideoRecModel":
        got = (f"format {shorten(saved.get('format'))}, class {shorten(saved.get('class'))}" if isinstance(saved, dict)
               else type(saved).__name__)
        raise ConfigError(f"{path}: expected format {FORMAT!r} of a VideoRecModel, got {got}.")
    config = saved.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ConfigError(f"{path}: the model config is missing or not a mapping (expected {{'config': {{...}}}}).")
    if saved["format"] in _LEGACY_FORMATS:
        config = dict(config, config={**_LEGACY_FORMATS[saved["format"]], **config["config"]})
    try:
        model = VideoRecModel.from_config(config)
    except ConfigError as error:  # a field out of range: name the file it was read from
        raise ConfigError(f"{path}: {error}") from None
    except (TypeError, KeyError, ValueError) as error:
        raise ConfigError(f"{path}: the model config does not build a VideoRecModel: "
                          f"{type(error).__name__}: {shorten(str(error))}") from None
    model(dummy_batch(model), training=False)
    lineage = saved.get("lineage")
    model.lineage = untracked(lineage if isinstance(lineage, dict) else None)
    try:
        status = tf.train.Checkpoint(model=model).read(os.path.join(directory, WEIGHTS))
        status.assert_existing_objects_matched()
        # Every variable of the rebuilt model is restored (checked above); what the checkpoint holds
        # beyond them is the optimizer's state, which a model loaded to export or evaluate never uses.
        # Without this, TF warns once per optimizer slot ("Value in checkpoint could not be found").
        status.expect_partial()
    except (tf.errors.OpError, AssertionError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"{directory}: the weights do not restore into the saved config: {first}") from None
    _build_tasks(model)
    return model


def _build_tasks(model: VideoRecModel) -> None:
    """Marks the loss tasks built, as the first training step would.

    `tfrs.tasks.Retrieval` and `Ranking` hold no weights (only the per-run state of their metrics) and
    are built by their first call, in a training step, which a loaded model never takes. Left unbuilt,
    every `tf.saved_model.save` of the model (`tfrec-video export`) warns "Skipping full serialization
    of TF-Keras layer ..., because it is not built", though the servable never calls them.
    """
    for task in (getattr(model, "retrieval_task", None), getattr(model, "ranking_task", None)):
        if isinstance(task, tf.keras.layers.Layer) and not task.built and not task.weights:
            task.build(None)
