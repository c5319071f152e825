"""TF Serving warmup requests: one realistic `PredictRequest` per signature of an export.

TF Serving replays `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
tensorflow-serving-api `PredictionLog` records) when it loads a version, so the first
real request does not pay for lazy initialisation. `warmup_requests` builds a batch of
2 per signature from the model's vocabularies and the catalog: a known and an unknown
user, real videos and their content.

Example:

    logs = warmup_requests(ServingModule(model, catalog), "video_rec")
    write_warmup_requests(version_dir, logs)
"""

import os

import numpy as np
import tensorflow as tf

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
_UNKNOWN_USER = "__warmup_unknown_user__"


def _warmup_value(module, spec: tf.TensorSpec, batch_size: int = 2) -> np.ndarray:
    """A realistic `[batch_size, ...]` value for one signature input, named by `spec.name`."""
    v = module.model.vocabularies
    name = spec.name
    # Only the rows used are gathered: the table holds the whole catalog. Row 0 is its "unknown video".
    num_videos = int(module.catalog.ids.shape[0]) - 1
    rows = 1 + np.linspace(0, num_videos - 1, batch_size).round().astype(np.int64)  # first to last video
    shape = [batch_size] + [1 if d is None else int(d) for d in spec.shape[1:]]
    if name == "user_id":  # a known user, then users the model has never seen
        known = v.user_ids[0] if v.user_ids else _UNKNOWN_USER
        value = np.array([known] + [_UNKNOWN_USER] * (batch_size - 1), object)
    elif name == "history":  # a few real catalog videos padded with "", then an empty history
        value = np.full(shape, b"", object)
        watched = tf.gather(module.catalog.ids, 1 + np.arange(min(shape[1], 3, num_videos))).numpy()
        value[0, :len(watched)] = watched
    elif name == "exclude":  # the last catalog video and an id outside it, then padding only
        value = np.full([batch_size, 2], b"", object)
        value[0] = [tf.gather(module.catalog.ids, num_videos).numpy(), b"__warmup_unknown_video__"]
    elif name == "hour":
        value = (8 + 7 * np.arange(batch_size, dtype=np.int64)) % 24
    elif name == "device":
        devices = list(v.devices or []) + ["__warmup_unknown_device__"]
        value = np.array([devices[i % len(devices)] for i in range(batch_size)], object)
    elif name == "video_id":  # real catalog videos and their content
        value = tf.gather(module.catalog.ids, rows).numpy()
    elif name in module.catalog.values:
        value = tf.gather(module.catalog.values[name], rows).numpy()
    elif spec.dtype == tf.string:
        value = np.full(shape, b"", object)
    else:
        value = np.zeros(shape, spec.dtype.as_numpy_dtype)
    if spec.dtype != tf.string:
        value = np.asarray(value, spec.dtype.as_numpy_dtype)
    if not spec.is_compatible_with(tf.TensorSpec(value.shape, spec.dtype)):
        raise ValueError(f"export: warmup input {name!r} has shape {value.shape}, the signature wants {spec.shape}.")
    return value


def warmup_requests(module, model_name: str, batch_size: int = 2) -> list:
    """One `PredictionLog` per signature of `module`, for `assets.extra/tf_serving_warmup_requests`.

    Each holds a `predict_log.request` naming `model_name` and the signature, with every input
    of the signature (from its `structured_input_signature`) as a `[batch_size, ...]` tensor.

    Args:
      module: the `ServingModule` being exported.
      model_name: TF Serving's `--model_name` (`model_spec.name`).
      batch_size: rows per request (at least 2: a known and an unknown user).
    """
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    if batch_size < 2:
        raise ValueError(f"export: warmup batch_size must be at least 2, got {batch_size}.")
    logs = []
    for signature, function in module.signatures().items():
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for spec in tf.nest.flatten(function.structured_input_signature):
            value = _warmup_value(module, spec, batch_size)
            request.inputs[spec.name].CopyFrom(tf.make_tensor_proto(value, dtype=spec.dtype))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write_warmup_requests(version_dir: str, logs) -> str:
    """Writes `logs` as a TFRecord file at `version_dir/assets.extra/tf_serving_warmup_requests`."""
    path = os.path.join(version_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    return path
