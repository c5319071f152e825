"""The README's TF Serving section: its REST JSON example runs through the exported `serving_default`
the way TF Serving's REST API feeds it, and its gRPC snippet targets the right service and signature."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfrec_video.serving.export import export_saved_model
from toy import small_model, toy_data

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Runs in a fresh interpreter with only TensorFlow and TF Text, like a serving host. TF Serving's
# REST row format: the `instances` list of objects becomes one batched tensor per input, typed as
# the signature declares.
CLIENT = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops)

version_dir, request_path = sys.argv[1], sys.argv[2]
request = json.load(open(request_path, encoding="utf-8"))
signature = tf.saved_model.load(version_dir).signatures[request.get("signature_name", "serving_default")]
specs = signature.structured_input_signature[1]
instances = request["instances"]
assert all(set(row) == set(specs) for row in instances), (sorted(specs), [sorted(r) for r in instances])
inputs = {name: tf.constant([row[name] for row in instances], dtype=spec.dtype) for name, spec in specs.items()}
outputs = signature(**inputs)
print(json.dumps({"inputs": sorted(specs),
                  "outputs": {k: v.numpy().tolist() if v.dtype != tf.string else
                              [[s.decode() for s in r] for r in v.numpy()] for k, v in outputs.items()},
                  "shapes": {k: v.shape.as_list() for k, v in outputs.items()}}))
"""


def _blocks(language):
    return re.findall(rf"```{language}\n(.+?)\n```", README, flags=re.S)


def _serving_section():
    return README.split("## Serving with TensorFlow Serving", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=1)
    base = tmp_path_factory.mktemp("readme_serving") / "saved_models"
    version_dir = export_saved_model(model, catalog, str(base), name="video_rec", n=5)
    return model, catalog, version_dir


def test_readme_has_exactly_one_json_request():
    (block,) = _blocks("json")
    request = json.loads(block)
    assert request["signature_name"] == "serving_default"
    assert request["instances"] and all(isinstance(row, dict) for row in request["instances"])
    assert "http://localhost:8501/v1/models/video_rec:predict" in _serving_section()
    assert "tensorflow/serving:2.17.1" in _serving_section()


def test_readme_json_example_runs_through_the_loaded_signature(exported, tmp_path):
    model, catalog, version_dir = exported
    request = json.loads(_blocks("json")[0])
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    names = set(signature.structured_input_signature[1])
    assert {name for row in request["instances"] for name in row} == names
    assert all(len(row["history"]) == model.vocabularies.history_length for row in request["instances"])

    path = tmp_path / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)  # a serving host has no tfrec_video settings
    result = subprocess.run([sys.executable, "-c", CLIENT, version_dir, str(path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(answer["inputs"]) == names
    assert set(answer["outputs"]) == {"video_ids", "click_probability", "retrieval_score", "score"}
    batch = len(request["instances"])
    for key, shape in answer["shapes"].items():
        assert shape == [batch, 5], key
    assert {v for row in answer["outputs"]["video_ids"] for v in row} <= set(catalog["video_id"])
    assert all(0 < p < 1 for row in answer["outputs"]["click_probability"] for p in row)


def _curl_request(signature):
    """The JSON body of the README's `curl -d '...'` request to `signature`."""
    (body,) = [b for b in re.findall(r"curl -d '(.+?)'", _serving_section(), flags=re.S) if signature in b]
    return json.loads(body)


def _client(version_dir, request, tmp_path):
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request), encoding="utf-8")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    result = subprocess.run([sys.executable, "-c", CLIENT, version_dir, str(path)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_readme_recommend_diverse_request_runs_through_the_loaded_signature(exported, tmp_path):
    """The README's REST request for `recommend_diverse`, fed as TF Serving's REST API feeds it in a
    TF-only process: n videos per row, and the row sent with diversity 0 gets serving_default's list."""
    model, catalog, version_dir = exported
    request = _curl_request("recommend_diverse")
    assert request["signature_name"] == "recommend_diverse"
    answer = _client(version_dir, request, tmp_path)
    assert "diversity" in answer["inputs"]
    assert set(answer["outputs"]) == {"video_ids", "click_probability", "retrieval_score", "score"}
    assert all(shape == [len(request["instances"]), 5] for shape in answer["shapes"].values())
    plain = {"signature_name": "serving_default",
             "instances": [{k: v for k, v in row.items() if k != "diversity"} for row in request["instances"]]}
    default = _client(version_dir, plain, tmp_path)
    for row, instance in enumerate(request["instances"]):
        ids = answer["outputs"]["video_ids"][row]
        assert len(set(ids)) == 5 and not set(ids) & set(instance["history"])
        if instance["diversity"] == 0:
            assert ids == default["outputs"]["video_ids"][row]


def test_readme_grpc_snippet_targets_the_prediction_service():
    grpc = [b for b in _blocks("python") if "grpc" in b]
    assert len(grpc) == 1
    (snippet,) = grpc
    for needle in ("prediction_service_pb2_grpc", "serving_default", "localhost:8500", "make_tensor_proto",
                   "stub.Predict(", 'make_ndarray(response.outputs["video_ids"])'):
        assert needle in snippet, needle
    assert "prediction_service_pb2_grpc" not in _blocks("python")[0]  # test_readme runs only the first block
    compile(snippet, "README gRPC snippet", "exec")
