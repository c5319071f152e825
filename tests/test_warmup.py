"""TF Serving warmup records: every signature of an exported version has a `PredictionLog` in
`assets.extra/tf_serving_warmup_requests`, and replaying them against the loaded SavedModel works."""

import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tfrec_video.serving.export import export_saved_model
from tfrec_video.serving.warmup import WARMUP_FILE
from toy import small_model, toy_data

SIGNATURES = {"serving_default", "retrieve", "recommend_excluding", "retrieve_excluding", "rank", "embed_query",
              "embed_video", "recommend_diverse"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=1)
    base = tmp_path_factory.mktemp("warmup") / "saved_models"
    version_dir = export_saved_model(model, catalog, str(base), name="video_rec", k=10, n=5)
    return model, catalog, base / "video_rec", version_dir


@pytest.fixture(scope="module")
def loaded(exported):
    return tf.saved_model.load(exported[3])


def _logs(version_dir):
    logs = []
    for record in tf.data.TFRecordDataset(os.path.join(version_dir, WARMUP_FILE)):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs


def test_warmup_file_is_written_inside_the_version_and_no_temp_dir_is_left(exported):
    _, _, model_dir, version_dir = exported
    assert os.path.basename(version_dir) == "1"
    assert os.path.isfile(os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests"))
    assert sorted(os.listdir(model_dir)) == ["1"]  # no `.tmp-*` directory left beside it
    assert not [p for p in model_dir.rglob(".tmp-*")]


def test_every_signature_has_a_realistic_warmup_request(exported, loaded):
    model, catalog, _, version_dir = exported
    logs = _logs(version_dir)
    assert set(loaded.signatures) == SIGNATURES
    requests = {}
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "video_rec"
        requests.setdefault(request.model_spec.signature_name, []).append(request)
    assert set(requests) == set(loaded.signatures)
    for name, signature in loaded.signatures.items():
        wanted = signature.structured_input_signature[1]
        for request in requests[name]:
            assert set(request.inputs) == set(wanted), name
            for key, spec in wanted.items():
                assert tf.dtypes.as_dtype(request.inputs[key].dtype) == spec.dtype, (name, key)
    # Realistic values: a known and an unknown user, padded history, real catalog videos.
    embed_query = {k: tf.make_ndarray(v) for k, v in requests["embed_query"][0].inputs.items()}
    users = [u.decode() for u in embed_query["user_id"]]
    assert users[0] in model.vocabularies.user_ids and users[1] not in model.vocabularies.user_ids
    history = embed_query["history"]
    assert history.shape == (2, model.vocabularies.history_length)
    assert b"" in history[0] and set(history[1]) == {b""}
    assert {h.decode() for h in history[0] if h} <= set(catalog["video_id"])
    assert {"hour", "device"} <= set(embed_query)
    for name in ("rank", "embed_video"):
        ids = [v.decode() for v in tf.make_ndarray(requests[name][0].inputs["video_id"])]
        assert set(ids) <= set(catalog["video_id"]), name
    exclude = tf.make_ndarray(requests["recommend_excluding"][0].inputs["exclude"])
    assert exclude[0, 0].decode() in set(catalog["video_id"]) and set(exclude[1]) == {b""}
    video = {k: tf.make_ndarray(v) for k, v in requests["embed_video"][0].inputs.items()}
    row = list(catalog["video_id"]).index(video["video_id"][0].decode())
    np.testing.assert_array_equal(video["image_embedding"][0], catalog["image_embedding"][row])
    assert video["title"][0].decode() == catalog["title"][row]


def test_warmup_requests_replay_against_the_loaded_model(exported, loaded):
    _, _, _, version_dir = exported
    replayed = set()
    for log in _logs(version_dir):
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        batch = {int(t.shape[0]) for t in inputs.values()}
        assert batch == {2}
        outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert outputs, request.model_spec.signature_name
        for key, value in outputs.items():
            assert value.shape[0] == 2, (request.model_spec.signature_name, key)
            if value.dtype.is_floating:
                assert np.all(np.isfinite(value.numpy())), (request.model_spec.signature_name, key)
        replayed.add(request.model_spec.signature_name)
    assert replayed == SIGNATURES
