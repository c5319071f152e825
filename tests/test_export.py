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
    loaded = tf.saved_model.load(version_dir)
    loaded.version_dir = version_dir
    return model, catalog, impressions, loaded


@pytest.fixture(scope="module")
def kept_version(exported, tmp_path_factory):
    """The same model exported with `exclude_seen=False` (`--keep-seen`)."""
    model, catalog, _, _ = exported
    return export_lib.export_saved_model(model, catalog, str(tmp_path_factory.mktemp("kept")), k=K, n=N,
                                         exclude_seen=False)


def _queries(model, impressions, rows):
    return {name: tf.constant(impressions[name][rows]) for name in model.query_feature_names}


def _top_unseen(scores, catalog, history):
    """The K best-scored catalog rows of each query, the videos in its history left out (the export's rule)."""
    ids = np.asarray(catalog["video_id"]).astype(str)
    watched = (ids[None, None, :] == np.asarray(history).astype(str)[:, :, None]).any(axis=1)
    top = np.argsort(np.where(watched, np.inf, -scores), axis=1, kind="stable")[:, :K]
    assert watched.any() and not np.take_along_axis(watched, top, axis=1).any()
    return top


def test_serving_default_matches_the_in_process_two_stage_pipeline(exported):
    model, catalog, impressions, loaded = exported
    rows = np.arange(0, 40, 5)
    queries = _queries(model, impressions, rows)
    served = loaded.signatures["serving_default"](**queries)

    # Stage 1 in process: exact scores against every catalog video, the watched ones left out, top K.
    scores = model.embed_queries(queries, training=False).numpy() @ embed_catalog(model, catalog).T
    top = _top_unseen(scores, catalog, impressions["history"][rows])
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
    top = _top_unseen(scores, catalog, impressions["history"][rows])
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


def test_watched_videos_are_gathered_from_precomputed_embeddings_with_the_same_answer(exported):
    """Serving gathers the watched videos' embeddings; a history id the model's table lacks (a video newer
    than the model) is still embedded from its id, and a catalog other than the table's gets embeddings
    of the table's rows. Either way the query embedding is the in-process model's."""
    model, catalog, impressions, loaded = exported
    rows = np.arange(0, 24, 3)
    queries = _queries(model, impressions, rows)
    history = queries["history"].numpy().copy()
    history[0, 0], history[1, -1] = b"a-video-newer-than-the-model", b""
    history[2, :] = b""
    queries["history"] = tf.constant(history)
    expected = model.embed_queries(queries, training=False).numpy()
    np.testing.assert_allclose(loaded.signatures["embed_query"](**queries)["query_embedding"].numpy(), expected,
                               atol=1e-5)
    retitled = dict(catalog, title=np.array(["brand new title"] * len(catalog["title"]), object))
    other = export_lib.ServingModule(model, retitled, k=K, n=N)
    assert other.history_embedding is not other.catalog_embedding
    np.testing.assert_allclose(other.embed_query(queries)["query_embedding"].numpy(), expected, atol=1e-5)
    same = export_lib.ServingModule(model, catalog, k=K, n=N)
    assert same.history_embedding is same.catalog_embedding  # one copy when the table is the catalog


def test_the_served_index_is_never_gathered_from_as_a_variable(exported):
    """A gather on a variable (ResourceGather) switches it to copy-on-read for good: the whole-catalog
    matmul then copies the index on every request (2.8 ms of 4 at 100k videos). Serving gathers from
    the value it read instead; so does the catalog lookup from its fingerprints."""
    model, catalog, _, _ = exported
    module = export_lib.ServingModule(model, catalog, k=K, n=N)
    read_whole = [module.catalog_embedding, module.catalog.fingerprints]
    for name, function in module.signatures().items():
        graph = function.graph
        inside = {id(internal) for external, internal in graph.captures
                  if any(external is variable.handle for variable in read_whole)}
        gathers = [op.name for op in graph.get_operations()
                   if op.type == "ResourceGather" and id(op.inputs[0]) in inside]
        assert not gathers, (name, gathers)


_SEEN_CHECK = """
import json, sys
import tensorflow as tf
import tensorflow_text  # the WordPiece ops; nothing from tfrec_video is imported
model = tf.saved_model.load(sys.argv[1])
inputs = json.loads(sys.argv[2])
out = {}
for name in ("serving_default", "retrieve"):
    signature = model.signatures[name]
    request = {key: tf.constant(value, dtype=signature.structured_input_signature[1][key].dtype)
               for key, value in inputs.items()}
    out[name] = [[v.decode() for v in row] for row in signature(**request)["video_ids"].numpy().tolist()]
print(json.dumps(out))
"""


def _fresh_process(version_dir, request):
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _SEEN_CHECK, version_dir, json.dumps(request)],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_seen_videos_are_left_out_of_both_lists_in_a_fresh_process(exported, kept_version):
    """A request whose history holds videos it would be served gets n and k others, in the order of the
    export that keeps them (`exclude_seen=False`, `--keep-seen`) less the watched ones."""
    model, catalog, impressions, loaded = exported
    history_length = model.vocabularies.history_length
    request = {name: impressions[name][:2].tolist() for name in model.query_feature_names}
    request["history"] = [[""] * history_length] * 2
    first = _fresh_process(loaded.version_dir, request)
    # Watch what an empty history was served, and a video outside the catalog.
    request["history"] = [row[:history_length - 1] + [served[0]]
                          for row, served in zip(first["retrieve"], first["serving_default"])]
    request["history"][1][0] = "a-video-not-in-the-catalog"
    seen = _fresh_process(loaded.version_dir, request)
    keep = _fresh_process(kept_version, request)
    exercised = False
    for row in range(2):
        watched = set(request["history"][row])
        assert len(seen["serving_default"][row]) == N and len(seen["retrieve"][row]) == K
        assert len(set(seen["retrieve"][row])) == K
        assert not watched & set(seen["serving_default"][row]) and not watched & set(seen["retrieve"][row])
        exercised |= bool(watched & set(keep["retrieve"][row]))
        others = [v for v in keep["retrieve"][row] if v not in watched]
        assert seen["retrieve"][row][:len(others)] == others
    assert exercised  # the export that keeps them does retrieve watched videos for this request


# Calls [version_dir, signature, request] in a TF-only process (each version loaded once) and prints,
# for each call, its video_ids.
_CALLS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # the WordPiece ops; nothing from tfrec_video is imported
assert "tfrec_video" not in sys.modules
loaded, out = {}, []
for version_dir, name, inputs in json.loads(sys.stdin.read()):
    if version_dir not in loaded:
        loaded[version_dir] = tf.saved_model.load(version_dir)
    signature = loaded[version_dir].signatures[name]
    specs = signature.structured_input_signature[1]
    assert set(inputs) == set(specs), (name, sorted(inputs), sorted(specs))
    request = {key: tf.constant(value, dtype=specs[key].dtype) for key, value in inputs.items()}
    out.append([[v.decode() for v in row] for row in signature(**request)["video_ids"].numpy().tolist()])
print(json.dumps(out))
"""


def _fresh_calls(calls):
    import json
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", _CALLS], input=json.dumps(calls), capture_output=True, text=True,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _expected_retrieval(model, catalog, request, left_out):
    """In process: the K best catalog ids of each request, the ids in `left_out[i]` left out."""
    ids = np.asarray(catalog["video_id"]).astype(str)
    queries = {name: tf.constant(request[name]) for name in model.query_feature_names}
    scores = model.embed_queries(queries, training=False).numpy() @ embed_catalog(model, catalog).T
    hidden = np.array([[v in set(row) for v in ids] for row in left_out])
    return [ids[row].tolist() for row in np.argsort(np.where(hidden, np.inf, -scores), axis=1, kind="stable")[:, :K]]


def test_exclude_through_the_excluding_signatures_in_a_fresh_process(exported, kept_version):
    """`recommend_excluding` / `retrieve_excluding` leave out `exclude` (any m, "" padding, unknown ids
    ignored), plus the history under the export's rule, and still return exactly n / k videos;
    `serving_default` and `retrieve` keep their inputs."""
    model, catalog, impressions, loaded = exported
    history_length = model.vocabularies.history_length
    rows = [0, 1, 2]
    request = {name: impressions[name][rows].tolist() for name in model.query_feature_names}
    request["history"] = [[""] * history_length for _ in rows]

    def retrieve(request):
        signature = loaded.signatures["retrieve"]
        specs = signature.structured_input_signature[1]
        inputs = {name: tf.constant(value, specs[name].dtype) for name, value in request.items()}
        return [[v.decode() for v in row] for row in signature(**inputs)["video_ids"].numpy()]

    # The third user watched the video it would get first: the seen rule must leave it out of the lists.
    watched = retrieve(request)[2][0]
    request["history"][2][0] = watched
    plain = retrieve(request)
    m = K + history_length + 3  # more than any fixed index depth of k + history_length would leave room for
    exclude = [plain[0] + ["no-such-video", "", "v3", "v4", "v5", "v6", "v8", "v9"][:m - K],  # the whole top k and more
               ["no-such-video", "also-unknown"] + [""] * (m - 2),                             # unknown ids only
               plain[2][1::2] + [""] * (m - len(plain[2][1::2]))]                             # every other one
    assert {len(row) for row in exclude} == {m}
    calls = []
    for version_dir in (loaded.version_dir, kept_version):
        for name in ("retrieve_excluding", "recommend_excluding"):
            calls.append([version_dir, name, dict(request, exclude=exclude)])
            calls.append([version_dir, name, dict(request, exclude=[[], [], []])])  # m = 0
        calls.append([version_dir, "retrieve", request])
        calls.append([version_dir, "serving_default", request])
    (retrieved, retrieved_m0, served, served_m0, retrieve, serving_default,
     kept_retrieved, kept_retrieved_m0, kept_served, kept_served_m0, kept_retrieve, kept_serving_default) = \
        _fresh_calls(calls)
    assert retrieved_m0 == retrieve and served_m0 == serving_default  # m = 0: the plain signatures' answers
    assert kept_retrieved_m0 == kept_retrieve and kept_served_m0 == kept_serving_default
    for lists, seen_too in (((retrieved, served), True), ((kept_retrieved, kept_served), False)):
        left_out = [set(e) | (set(h) if seen_too else set()) for e, h in zip(exclude, request["history"])]
        assert lists[0] == _expected_retrieval(model, catalog, request, left_out)
        for row in range(3):
            assert len(lists[0][row]) == len(set(lists[0][row])) == K and len(lists[1][row]) == N
            assert not set(lists[1][row]) & left_out[row] and set(lists[1][row]) <= set(lists[0][row])
    assert retrieved[1] == retrieve[1] and served[1] == serving_default[1]  # unknown ids change nothing
    assert kept_retrieved[1] == kept_retrieve[1] and kept_served[1] == kept_serving_default[1]
    assert not set(retrieved[0]) & set(plain[0])  # all of the first top k excluded, k others returned
    assert watched in kept_retrieved[2] and watched not in retrieved[2]  # the seen rule was exercised


def test_served_lists_excluding_seen_agree_with_the_export(exported, kept_version):
    """`served_lists(exclude_seen=True)` of the Keras model, of the loaded export and the export's own
    signatures give the same lists; without it the Keras model agrees with the `--keep-seen` export."""
    from tfrec_video.evaluation.served import served_lists
    from tfrec_video.serving import ExportedModel

    model, catalog, impressions, loaded = exported
    rows = np.arange(0, 80, 5)
    features = {name: impressions[name][rows] for name in model.query_feature_names}
    keep = served_lists(model, catalog, K, N)(features)
    # Each user has watched two of the videos it would be served: exclusion must change the lists.
    history = np.full_like(features["history"], "")
    ids = np.asarray(catalog["video_id"])
    history[:, 0], history[:, 2] = ids[keep[1][:, 0]], ids[keep[0][:, 1]]
    features["history"] = history
    keep = served_lists(model, catalog, K, N)(features)
    seen = served_lists(model, catalog, K, N, exclude_seen=True)(features)
    index_of = {v: i for i, v in enumerate(ids)}
    tensors = {name: tf.constant(value) for name, value in features.items()}
    signature_rows = [np.vectorize(lambda v: index_of[v.decode()])(loaded.signatures[name](**tensors)["video_ids"].numpy())
                      for name in ("retrieve", "serving_default")]
    np.testing.assert_array_equal(seen[0], signature_rows[0][:, :N])
    np.testing.assert_array_equal(seen[1], signature_rows[1])
    for lists, path in ((seen, loaded.version_dir), (keep, kept_version)):
        exported_lists = served_lists(ExportedModel(path), catalog, K, N, exclude_seen=lists is seen)(features)
        for a, b in zip(lists, exported_lists):
            np.testing.assert_array_equal(a, b)
    watched = np.stack([history[:, 0], history[:, 2]], axis=1)
    for retrieved_or_served in seen:
        assert retrieved_or_served.shape == (len(rows), N)
        assert not (ids[retrieved_or_served][:, :, None] == watched[:, None, :]).any()
    assert (keep[1] != seen[1]).any() and (keep[0] != seen[0]).any()
