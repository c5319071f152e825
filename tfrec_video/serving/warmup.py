"""TF Serving warmup requests: one realistic `PredictRequest` per signature of an export.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
tensorflow-serving-api `PredictionLog` records) when it loads a version, so the first
real request does not pay for lazy initialisation. `warmup_requests` builds a batch of
2 per signature from the model's vocabularies and the catalog: a known and an unknown
user, real videos and their content. A version whose catalog was refreshed from the
export alone (`serving.refresh`) has no vocabularies at hand: `refreshed_warmup_requests`
copies the user's inputs from the previous version's records and takes the rest from
the refreshed catalog, which gives the records a full export of that catalog writes.

Example:

    logs = warmup_requests(ServingModule(model, catalog), "video_rec")
    write_warmup_requests(version_dir, logs)
"""

import os
import types

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_UNKNOWN_USER = "__warmup_unknown_user__"
# The inputs drawn from the model's vocabularies rather than from the catalog.
USER_INPUTS = ("user_id", "hour", "device")
# What `_user_value` reads when no vocabularies are at hand: no known user, no known device.
_NO_VOCABULARIES = types.SimpleNamespace(user_ids=[], devices=[])


# Warmup values of the inputs that set how a request is served, not who or what it is about.
_REQUEST_OPTIONS = {"diversity": 0.3, "click_weight": 1.0, "watch_weight": 1.0}


def _user_value(vocabularies, spec: tf.TensorSpec, batch_size: int):
    """A `[batch_size]` value of a user-side input (`USER_INPUTS`) from the model's vocabularies."""
    if spec.name == "user_id":  # a known user, then users the model has never seen
        known = vocabularies.user_ids[0] if vocabularies.user_ids else _UNKNOWN_USER
        return np.array([known] + [_UNKNOWN_USER] * (batch_size - 1), object)
    if spec.name == "hour":
        return (8 + 7 * np.arange(batch_size, dtype=np.int64)) % 24
    devices = list(vocabularies.devices or []) + ["__warmup_unknown_device__"]
    return np.array([devices[i % len(devices)] for i in range(batch_size)], object)


def _catalog_value(catalog, spec: tf.TensorSpec, batch_size: int) -> np.ndarray:
    """A realistic `[batch_size, ...]` value of any other input, from `catalog` (a `CatalogTable`, or a
    loaded export's: anything with its `ids` and `values` variables), or "" / zeros."""
    name = spec.name
    # Only the rows used are gathered: the table holds the whole catalog. Row 0 is its "unknown video".
    num_videos = int(tf.shape(catalog.ids)[0]) - 1
    rows = 1 + np.linspace(0, num_videos - 1, batch_size).round().astype(np.int64)  # first to last video
    shape = [batch_size] + [1 if d is None else int(d) for d in spec.shape[1:]]
    if name == "history":  # a few real catalog videos padded with "", then an empty history
        value = np.full(shape, b"", object)
        watched = tf.gather(catalog.ids, 1 + np.arange(min(shape[1], 3, num_videos))).numpy()
        value[0, :len(watched)] = watched
    elif name == "exclude":  # the last catalog video and an id outside it, then padding only
        value = np.full([batch_size, 2], b"", object)
        value[0] = [tf.gather(catalog.ids, num_videos).numpy(), b"__warmup_unknown_video__"]
    elif name in _REQUEST_OPTIONS:  # a per-request setting (`recommend_diverse`, `rank_weighted`)
        value = np.full(shape, _REQUEST_OPTIONS[name], spec.dtype.as_numpy_dtype)
    elif name == "video_id":  # real catalog videos and their content
        value = tf.gather(catalog.ids, rows).numpy()
    elif name in catalog.values:
        value = tf.gather(catalog.values[name], rows).numpy()
    elif spec.dtype == tf.string:
        value = np.full(shape, b"", object)
    else:
        value = np.zeros(shape, spec.dtype.as_numpy_dtype)
    return value


def _requests(signatures, value_of, model_name: str, batch_size: int) -> list:
    """One `PredictionLog` per signature, each input's value `value_of(signature name, spec)`."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if batch_size < 2:
        raise ValueError(f"export: warmup batch_size must be at least 2, got {batch_size}.")
    logs = []
    for signature, function in signatures.items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for spec in tf.nest.flatten(function.structured_input_signature):
            value = value_of(signature, spec)
            if spec.dtype != tf.string:
                value = np.asarray(value, spec.dtype.as_numpy_dtype)
            if not spec.is_compatible_with(tf.TensorSpec(value.shape, spec.dtype)):
                raise ValueError(f"export: warmup input {spec.name!r} has shape {value.shape}, the signature "
                                 f"wants {spec.shape}.")
            request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value, dtype=spec.dtype))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def warmup_requests(module, model_name: str, batch_size: int = 2) -> list:
    """One `PredictionLog` per signature of `module`, for `assets.extra/tf_serving_warmup_requests`.

    Each holds a `predict_log.request` naming `model_name` and the signature, with every input
    of the signature (from its `structured_input_signature`) as a `[batch_size, ...]` tensor.

    Args:
      module: the `ServingModule` being exported.
      model_name: TF Serving's `--model_name` (`model_spec.name`).
      batch_size: rows per request (at least 2: a known and an unknown user).
    """
    vocabularies = module.model.vocabularies

    def value_of(signature, spec):
        if spec.name in USER_INPUTS:
            return _user_value(vocabularies, spec, batch_size)
        return _catalog_value(module.catalog, spec, batch_size)

    return _requests(module.signatures(), value_of, model_name, batch_size)


def read_warmup_requests(version_dir: str) -> list:
    """The `PredictionLog`s of `version_dir`'s warmup file (`[]` when it has none)."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(version_dir, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        return []
    logs = []
    for record in tf.data.TFRecordDataset(path):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


def refreshed_warmup_requests(signatures, catalog, model_name: str, previous_version_dir: str,
                              batch_size: int = 2) -> list:
    """`warmup_requests` of a version whose catalog was refreshed from `previous_version_dir` (no model at hand).

    The catalog's inputs (history, exclude, video ids, content) come from the refreshed `catalog`, as
    `warmup_requests` takes them; the user's (`USER_INPUTS`: a known and an unknown user, hours, devices,
    drawn from vocabularies the export does not hold) are copied from the previous version's requests,
    so the file is the one a full export of the new catalog writes.

    Args:
      signatures: `{name: concrete function}` of the refreshed export.
      catalog: its catalog table (a loaded export's: `ids` and `values` variables).
      model_name: TF Serving's `--model_name`.
      previous_version_dir: the version the refresh started from.
      batch_size: rows per request.
    """
    previous = {}
    for log in read_warmup_requests(previous_version_dir):
        request = log.predict_log.request
        previous[request.model_spec.signature_name] = {name: tf.make_ndarray(value)
                                                       for name, value in request.inputs.items()}

    def value_of(signature, spec):
        if spec.name in USER_INPUTS:
            copied = previous.get(signature, {}).get(spec.name)
            if copied is not None and copied.shape[:1] == (batch_size,):
                return copied
            # No warmup file before (or another batch size): unknown users, as for a model without vocabularies.
            return _user_value(_NO_VOCABULARIES, spec, batch_size)
        return _catalog_value(catalog, spec, batch_size)

    return _requests(signatures, value_of, model_name, batch_size)


def write_warmup_requests(version_dir: str, logs) -> str:
    """Writes `logs` as a TFRecord file at `version_dir/assets.extra/tf_serving_warmup_requests`."""
    path = os.path.join(version_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
