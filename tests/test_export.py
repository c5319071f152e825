"""The exported SavedModel: same answers as the in-process pipeline, safe on odd input, atomic on failure."""

import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

from tfrec_video.evaluation import embed_catalog
from tfrec_video.serving import export as export_lib
from toy import small_model, toy_data

K, N = 12, 5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=1)
    base = tmp_path_factory.mktemp("export") / "saved_models"
    version_dir = export_lib.export_saved_model(model, catalog, str(base), name="video_rec", k=K, n=N)
    return model, catalog, impressions, tf.saved_model.load(version_dir)


def _queries(model, impressions, rows):
    return {name: tf.constant(impressions[name][rows]) for name in model.query_feature_names}


def test_serving_default_matches_the_in_process_two_stage_pipeline(exported):
    model, catalog, impressions, loaded = exported
    rows = np.arange(0, 40, 5)
    queries = _queries(model, impressions, rows)
    served = loaded.signatures["serving_default"](**queries)

    # Stage 1 in process: exact scores against every catalog video, top K.
    scores = model.embed_queries(queries, training=False).numpy() @ embed_catalog(model, catalog).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    # Stage 2: rank the K candidates with the catalog's content, re-sort by click probability.
    for i, candidates in enumerate(top):
        features = {name: tf.repeat(queries[name][i:i + 1], K, axis=0) for name in model.query_feature_names}
        for name in model.video_feature_names:
            features[name] = tf.constant(np.asarray(catalog[name])[candidates])
        probability = tf.sigmoid(model.rank_logits(features, training=False)).numpy()
        order = np.argsort(-probability, kind="stable")[:N]
        expected_ids = [v.encode() for v in np.asarray(catalog["video_id"])[candidates[order]]]
        assert served["video_ids"].numpy()[i].tolist() == expected_ids
        np.testing.assert_allclose(served["click_probability"].numpy()[i], probability[order], atol=1e-5)
        np.testing.assert_allclose(served["retrieval_score"].numpy()[i], scores[i, candidates[order]], atol=1e-5)


def test_serving_default_follows_a_fitted_list_blend(exported, tmp_path):
    """With ListBlend weights set (as fit_list_blend sets them), the export serves the blend's order."""
    model, catalog, impressions, _ = exported
    weights = [5.0, 0.7, 0.4]
    model.list_blend.set_weights_to(weights)
    try:
        blended = tf.saved_model.load(export_lib.export_saved_model(model, catalog, str(tmp_path), k=K, n=N))
    finally:
        model.list_blend.set_weights_to([0.0, 0.0, 1.0])
    rows = np.arange(0, 40, 5)
    queries = _queries(model, impressions, rows)
    served = blended.signatures["serving_default"](**queries)
    scores = model.embed_queries(queries, training=False).numpy() @ embed_catalog(model, catalog).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    counts = np.asarray(model.vocabularies.video_counts, np.float64)
    share = dict(zip(model.vocabularies.video_ids, counts / counts.sum()))
    floor = min(share.values())
    for i, candidates in enumerate(top):
        features = {name: tf.repeat(queries[name][i:i + 1], K, axis=0) for name in model.query_feature_names}
        for name in model.video_feature_names:
            features[name] = tf.constant(np.asarray(catalog[name])[candidates])
        logits = model.rank_logits(features, training=False).numpy()
        log_q = np.log([share.get(v, floor) for v in np.asarray(catalog["video_id"])[candidates]])
        blend = weights[0] * scores[i, candidates] + weights[1] * log_q + weights[2] * logits
        order = np.argsort(-blend, kind="stable")[:N]
        assert served["video_ids"].numpy()[i].tolist() == [v.encode() for v in
                                                            np.asarray(catalog["video_id"])[candidates[order]]]
        np.testing.assert_allclose(served["click_probability"].numpy()[i], 1 / (1 + np.exp(-logits[order])),
                                   atol=1e-5)


def test_unknown_and_empty_inputs_give_sane_output(exported):
    model, catalog, impressions, loaded = exported
    odd = {"user_id": tf.constant(["", "never-seen-user", impressions["user_id"][0]]),
           "history": tf.constant([["", "", "", "", ""], ["no-such-video", "", "", "", ""],
                                   [catalog["video_id"][0], "", "", "", ""]]),
           "hour": tf.constant([-1, 99, 12], tf.int64),
           "device": tf.constant(["", "fridge", "tv"])}
    odd = {name: odd[name] for name in model.query_feature_names}
    out = loaded.signatures["serving_default"](**odd)
    assert out["video_ids"].shape == (3, N)
    assert np.isfinite(out["click_probability"].numpy()).all() and np.isfinite(out["retrieval_score"].numpy()).all()
    catalog_ids = {v.encode() for v in catalog["video_id"]}
    assert set(out["video_ids"].numpy().ravel().tolist()) <= catalog_ids
    ranked = loaded.signatures["rank"](**odd, video_id=tf.constant(["", "no-such-video", catalog["video_id"][1]]))
    assert np.isfinite(ranked["click_probability"].numpy()).all()
    assert loaded.signatures["embed_query"](**odd)["query_embedding"].shape == (3, model.config.embedding_dim)


def test_a_failed_export_leaves_no_visible_version(exported, tmp_path, monkeypatch):
    model, catalog, _, _ = exported
    base = tmp_path / "saved_models"

    def crash(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    # Fails after the SavedModel is written, before the rename: the worst moment.
    monkeypatch.setattr(export_lib, "write_warmup_requests", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        export_lib.export_saved_model(model, catalog, str(base), name="video_rec", k=K, n=N)
    assert os.listdir(base / "video_rec") == []  # no version, no temporary directory
    monkeypatch.undo()
    version_dir = export_lib.export_saved_model(model, catalog, str(base), name="video_rec", k=K, n=N)
    assert os.path.basename(version_dir) == "1"
    assert sorted(os.listdir(base / "video_rec")) == ["1"]


_KILLED_MID_EXPORT = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
import tfrec_video
from tfrec_video.serving import export as export_lib
from toy import small_model, toy_data
catalog, impressions = toy_data()
model = small_model(catalog, impressions)
# SIGKILL after the SavedModel is written, before the rename: no cleanup code can run.
export_lib.write_warmup_requests = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
export_lib.export_saved_model(model, catalog, sys.argv[1], name="video_rec", k=5, n=3)
"""


def test_a_killed_export_leaves_no_visible_version(exported, tmp_path):
    import subprocess
    import sys

    base = tmp_path / "saved_models"
    result = subprocess.run([sys.executable, "-c", _KILLED_MID_EXPORT, str(base), os.path.dirname(__file__)],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            timeout=600)
    assert result.returncode == -9, result.stderr[-3000:]
    left = os.listdir(base / "video_rec")
    # The killed write may leave its hidden temporary directory, never a numeric version TF Serving would load.
    assert left and all(name.startswith(".tmp-") for name in left), left
    assert export_lib.next_version(str(base / "video_rec")) == 1
    model, catalog, _, _ = exported
    version_dir = export_lib.export_saved_model(model, catalog, str(base), name="video_rec", k=K, n=N)
    assert os.path.basename(version_dir) == "1"


def test_the_export_shares_the_models_catalog_table_only_for_the_same_catalog(exported):
    model, catalog, _, _ = exported
    assert model.catalog_table is not None
    same = export_lib.ServingModule(model, catalog, k=K, n=N)
    assert same.catalog is model.catalog_table  # one copy of a large catalog, not two
    retitled = dict(catalog, title=np.array(["brand new title"] * len(catalog["title"]), object))
    other = export_lib.ServingModule(model, retitled, k=K, n=N)
    assert other.catalog is not model.catalog_table
    assert other.catalog.values["title"][1].numpy() == b"brand new title"
    assert model.catalog_table.values["title"][1].numpy() != b"brand new title"
