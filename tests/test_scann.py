"""`ScannRetriever`: in-process approximate retrieval (skipped when the optional ScaNN is not installed)."""

import sys

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.evaluation import embed_catalog
from tfrec_video.serving.scann import ScannRetriever
from toy import small_model, toy_data


def test_missing_scann_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "scann", None)  # what `import scann` sees when it is not installed
    with pytest.raises(ImportError, match=r"\[scann\]"):
        ScannRetriever(object(), {"video_id": np.array(["a"], object)})


def test_scann_agrees_with_brute_force():
    pytest.importorskip("scann")
    catalog, impressions = toy_data(n_videos=400)
    model = small_model(catalog, impressions, epochs=1)
    retriever = ScannRetriever(model, catalog, k=20, num_leaves=10, num_leaves_to_search=10)
    queries = {name: tf.constant(impressions[name][:16]) for name in model.query_feature_names}
    scores, ids = retriever(queries)
    assert ids.shape == (16, 20) and scores.shape == (16, 20)
    exact = model.embed_queries(queries, training=False).numpy() @ embed_catalog(model, catalog).T
    expected = np.asarray(catalog["video_id"])[np.argsort(-exact, axis=1)[:, :20]]
    overlap = np.mean([len(set(a) & {v.decode() for v in b}) / 20 for a, b in zip(expected, ids.numpy())])
    assert overlap >= 0.95, overlap  # every leaf searched and candidates re-scored exactly
