"""The export needs nothing beyond what stock TF Serving links: core TF ops and TF Text ops.

Every op in the exported graph (function library included) is looked up in a fresh Python
that imports only `tensorflow` (then `tensorflow` + `tensorflow_text`), and the signatures
are read back with `saved_model_cli show --all`.
"""

import json
import os
import subprocess
import sys

import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tensorflow.core.protobuf import saved_model_pb2

from tfrec_video.serving.export import export_saved_model
from toy import small_model, toy_data

SIGNATURES = ("serving_default", "retrieve", "recommend_excluding", "retrieve_excluding", "recommend_diverse",
              "rank_weighted", "rank", "embed_query", "embed_video")

# Reads op names (JSON list) on stdin; prints, as JSON, those the global op registry does not know.
_UNREGISTERED = """
import json, sys
import tensorflow
{extra}
from tensorflow.python.framework import op_def_registry
names = json.load(sys.stdin)
assert "tfrec_video" not in sys.modules and "keras_nlp" not in sys.modules
assert "tensorflow_io" not in sys.modules
print(json.dumps(sorted(n for n in names if op_def_registry.get(n) is None)))
"""


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory):
    """A watch model's export (click + watch heads), so that every signature is there, `rank_weighted` included."""
    catalog, impressions = toy_data(watch=True)
    model = small_model(catalog, impressions, epochs=1, ranking_objectives=("click", "watch"))
    return export_saved_model(model, catalog, str(tmp_path_factory.mktemp("export")), name="video_rec")


def _graph_ops(version_dir):
    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    ops, functions = set(), set()
    for meta_graph in saved.meta_graphs:
        graph = meta_graph.graph_def
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            functions.add(function.signature.name)
            ops.update(node.op for node in function.node_def)
    # A node may call a library function by name; that is not an op.
    return ops - functions


def _unregistered(ops, with_text):
    code = _UNREGISTERED.format(extra="import tensorflow_text" if with_text else "")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(sorted(ops)),
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_every_op_is_a_core_tf_or_tf_text_op(version_dir):
    ops = _graph_ops(version_dir)
    assert "MatMul" in ops and "TopKV2" in ops, sorted(ops)  # the brute-force index, as a sanity check
    python_or_io = sorted(op for op in ops if "PyFunc" in op or op.startswith("IO>"))
    assert not python_or_io, f"ops stock TF Serving cannot run: {python_or_io}"
    not_in_tf = _unregistered(ops, with_text=False)
    not_in_tf_text = _unregistered(not_in_tf, with_text=True) if not_in_tf else set()
    text_only = sorted(not_in_tf - not_in_tf_text)
    assert not not_in_tf_text, (f"ops neither TF nor TF Text registers: {sorted(not_in_tf_text)}; "
                                f"TF Text-only ops: {text_only}")
    print(f"{len(ops)} ops; TF Text-only ops: {text_only}")


def _saved_model_cli(version_dir):
    args = ["show", "--dir", version_dir, "--all"]
    result = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", *args],
                            capture_output=True, text=True, env=_env(), timeout=300)
    if result.returncode != 0:
        script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
        result = subprocess.run([script, *args], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _signature_blocks(output):
    """{signature name: its text} from `saved_model_cli show --all`."""
    blocks, name = {}, None
    for line in output.splitlines():
        if line.startswith("signature_def['"):
            name = line.split("'")[1]
            blocks[name] = ""
        elif name is not None:
            blocks[name] += line + "\n"
    return blocks


def _dtype(block, section, key):
    """The dtype of `key` in the signature's `inputs` or `outputs` section."""
    lines = block.split("The given SavedModel SignatureDef contains the following output(s):")
    text = lines[0] if section == "inputs" else lines[1]
    rows = text.splitlines()
    for i, row in enumerate(rows):
        if row.strip().startswith(f"{section}['{key}']"):
            return rows[i + 1].split("dtype:")[1].strip()
    raise AssertionError(f"no {section}['{key}'] in:\n{block}")


def test_saved_model_cli_shows_the_signatures_and_dtypes(version_dir):
    output = _saved_model_cli(version_dir)
    blocks = _signature_blocks(output)
    assert set(SIGNATURES) <= set(blocks), output
    for name in SIGNATURES:
        if name != "embed_video":
            assert _dtype(blocks[name], "inputs", "user_id") == "DT_STRING", blocks[name]
            assert _dtype(blocks[name], "inputs", "hour") == "DT_INT64", blocks[name]
    for name in ("serving_default", "retrieve", "recommend_excluding", "retrieve_excluding"):
        assert _dtype(blocks[name], "outputs", "video_ids") == "DT_STRING", blocks[name]
        assert _dtype(blocks[name], "outputs", "retrieval_score") == "DT_FLOAT", blocks[name]
    for name in ("recommend_excluding", "retrieve_excluding"):
        assert _dtype(blocks[name], "inputs", "exclude") == "DT_STRING", blocks[name]
    assert "exclude" not in blocks["serving_default"] and "exclude" not in blocks["retrieve"]  # old clients work
    assert _dtype(blocks["serving_default"], "outputs", "click_probability") == "DT_FLOAT"
    assert _dtype(blocks["rank"], "outputs", "click_probability") == "DT_FLOAT"
    assert _dtype(blocks["rank"], "inputs", "video_id") == "DT_STRING"
    assert _dtype(blocks["embed_query"], "outputs", "query_embedding") == "DT_FLOAT"
    assert _dtype(blocks["embed_video"], "outputs", "video_embedding") == "DT_FLOAT"
    assert _dtype(blocks["embed_video"], "inputs", "video_id") == "DT_STRING"
    # The multi-objective outputs and the per-request options of the two newer signatures.
    for name in ("serving_default", "recommend_excluding", "recommend_diverse", "rank_weighted"):
        assert _dtype(blocks[name], "outputs", "video_ids") == "DT_STRING", blocks[name]
        for key in ("click_probability", "retrieval_score", "score", "expected_watch_fraction",
                    "expected_watch_seconds"):
            assert _dtype(blocks[name], "outputs", key) == "DT_FLOAT", (name, key, blocks[name])
    assert _dtype(blocks["recommend_diverse"], "inputs", "diversity") == "DT_FLOAT"
    assert _dtype(blocks["rank_weighted"], "inputs", "click_weight") == "DT_FLOAT"
    assert _dtype(blocks["rank_weighted"], "inputs", "watch_weight") == "DT_FLOAT"
    for name in ("serving_default", "recommend_diverse"):  # each option has its own signature: old clients work
        assert "click_weight" not in blocks[name] and "watch_weight" not in blocks[name], blocks[name]
    for name in ("serving_default", "rank_weighted"):
        assert "diversity" not in blocks[name], blocks[name]


# Loads the export with TensorFlow + TF Text only and calls every signature with a known user,
# an unknown one and an empty one; prints each output's shape and whether it is finite.
_CALL_EVERY_SIGNATURE = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401
assert "tfrec_video" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
known_user, known_video = sys.argv[2], sys.argv[3]
result = {}
for name, function in loaded.signatures.items():
    inputs = {}
    for key, spec in function.structured_input_signature[1].items():
        shape = [3] + [d or 1 for d in spec.shape[1:]]
        if key in ("user_id", "video_id"):  # [batch] ids: a known one, an unknown one, an empty one
            value = tf.constant([known_user if key == "user_id" else known_video, "never-seen", ""])
        elif spec.dtype == tf.string:
            value = tf.fill(shape, "")
        else:
            value = tf.zeros(shape, spec.dtype)
        inputs[key] = value
    outputs = function(**inputs)
    result[name] = {key: {"shape": value.shape.as_list(),
                          "finite": bool(tf.reduce_all(tf.math.is_finite(value)).numpy()) if value.dtype.is_floating else True}
                    for key, value in outputs.items()}
print(json.dumps(result))
"""


def test_a_tf_only_process_calls_every_signature(version_dir):
    catalog, impressions = toy_data(watch=True)
    result = subprocess.run([sys.executable, "-c", _CALL_EVERY_SIGNATURE, version_dir, impressions["user_id"][0],
                             catalog["video_id"][0]], capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert sorted(outputs) == sorted(SIGNATURES)
    for signature, values in outputs.items():
        for key, value in values.items():
            assert value["shape"][0] == 3 and value["finite"], (signature, key, value)
