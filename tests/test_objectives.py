"""Multi-objective ranking (click + watch) and diversity, from the config to the served graph.

`ModelConfig.ranking_objectives`, `MixtureOfExperts`, `MultiTaskRankingHead` and `watch_fraction_loss` on their
own; then one watch model trained once on `toy_data(watch=True)` (module-scoped) and its export: the served
`score`, the `rank_weighted` and `recommend_diverse` signatures, in process and in a TF-only process.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

from tfrec_video.errors import ConfigError
from tfrec_video.evaluation import embed_catalog
from tfrec_video.models import ModelConfig, load_model, save_model
from tfrec_video.models.multi_task_head import MultiTaskRankingHead
from tfrec_video.models.watch_loss import watch_fraction_loss, watch_labels
from tfrec_video.serving.export import ServingModule, export_saved_model
from tfrec_video.towers.mixture_of_experts import MixtureOfExperts
from toy import small_model, toy_data

K, N = 20, 5
WATCH = ("click", "watch")
# Users of the requests the export tests send (rows of the impressions).
ROWS = [0, 7, 13, 21, 34, 55, 89, 144]


# -- ModelConfig ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("ranking_objectives", ("watch",)),                  # no click
    ("ranking_objectives", ("watch", "click")),          # click not first
    ("ranking_objectives", ("click", "like")),           # unknown
    ("ranking_objectives", ("click", "watch", "watch")),  # duplicate
    ("ranking_objectives", "click"),                     # a string, not a sequence
    ("ranking_objectives", ()),
    ("ranking_objectives", ("click", 1)),
    ("ranking_objectives", ("click", ["watch"])),       # unhashable
    ("ranking_experts", 0),
    ("ranking_experts", 65),
    ("ranking_experts", True),
    ("ranking_experts", 2.0),
    ("ranking_experts", "4"),
    ("ranking_gates", "moe"),
    ("ranking_gates", "MMOE"),
    ("ranking_gates", None),
    ("watch_loss_weight", -0.1),
    ("watch_loss_weight", float("inf")),
    ("watch_loss_weight", float("nan")),
    ("watch_loss_weight", True),
    ("watch_loss_weight", "1"),
    ("watch_score_weight", -1),
    ("watch_score_weight", float("inf")),
    ("watch_score_weight", float("nan")),
    ("watch_score_weight", False),
])
def test_config_refuses_bad_objective_fields_naming_them(field, value):
    with pytest.raises(ConfigError, match=rf"ModelConfig\.{field}\b"):
        ModelConfig(**{field: value})


def test_config_objectives_defaults_and_round_trip():
    assert ModelConfig().ranking_objectives == ("click",) and not ModelConfig().watch
    config = ModelConfig(ranking_objectives=["click", "watch"], ranking_experts=64, ranking_gates="ple",
                         watch_loss_weight=0, watch_score_weight=0.5)
    assert config.ranking_objectives == WATCH and config.watch  # a list becomes the tuple
    assert ModelConfig(ranking_experts=1, watch_loss_weight=0.0, watch_score_weight=0).ranking_experts == 1
    as_dict = config.to_dict()
    assert as_dict["ranking_objectives"] == ["click", "watch"]
    restored = ModelConfig.from_dict(json.loads(json.dumps(as_dict)))
    assert restored == config and restored.ranking_objectives == WATCH
    assert isinstance(restored.ranking_objectives, tuple)
    assert (restored.ranking_experts, restored.ranking_gates, restored.watch_score_weight) == (64, "ple", 0.5)


# -- MixtureOfExperts and MultiTaskRankingHead ------------------------------------------------------

def _inputs(rows=3, width=5, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(rows, width)), tf.float32)


def _ids(variables):
    return {id(v) for v in variables}


@pytest.mark.parametrize("gates", ["mmoe", "shared", "ple"])
def test_mixture_of_experts_config_round_trip(gates):
    moe = MixtureOfExperts(WATCH, experts=3, expert_units=(8, 4), gates=gates, dropout=0.1, l2=1e-4, name="moe")
    x = _inputs()
    outputs = moe(x)
    clone = MixtureOfExperts.from_config(moe.get_config())
    assert clone.get_config() == moe.get_config()
    cloned = clone(x)
    assert sorted(cloned) == sorted(outputs) == ["click", "watch"]
    assert {t: tuple(v.shape) for t, v in cloned.items()} == {t: tuple(v.shape) for t, v in outputs.items()} \
        == {"click": (3, 4), "watch": (3, 4)}
    assert len(clone.trainable_variables) == len(moe.trainable_variables)


def test_mixture_of_experts_refuses_bad_arguments():
    for kwargs in (dict(tasks=()), dict(tasks=("a", "a")), dict(tasks=WATCH, gates="moe"),
                   dict(tasks=WATCH, experts=0), dict(tasks=WATCH, expert_units=())):
        with pytest.raises(ValueError):
            MixtureOfExperts(**kwargs)


def test_mmoe_gates_are_softmaxes_over_all_experts():
    moe = MixtureOfExperts(WATCH, experts=3, expert_units=(6,), gates="mmoe")
    x = _inputs(rows=7)
    moe(x)
    assert sorted(moe.groups) == ["shared"]
    for task in WATCH:
        weights = moe.gate_layers[task](x).numpy()
        assert weights.shape == (7, 3)
        assert (weights >= 0).all()
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        # A task's own variables are its gate's, no expert's (all experts are shared).
        assert _ids(moe.task_variables(task)) == _ids(moe.gate_layers[task].trainable_variables)


def test_shared_bottom_has_no_gates_and_reads_the_experts_mean():
    moe = MixtureOfExperts(WATCH, experts=3, expert_units=(6,), gates="shared")
    x = _inputs()
    outputs = moe(x)
    assert moe.gate_layers == {}
    assert not [v.name for v in moe.variables if "gate" in v.name]
    assert moe.task_variables("click") == [] and moe.task_variables("watch") == []
    mean = np.mean([expert(x).numpy() for expert in moe.groups["shared"]], axis=0)
    for task in WATCH:
        np.testing.assert_allclose(outputs[task].numpy(), mean, atol=1e-5)


def test_ple_gives_each_task_its_own_experts():
    moe = MixtureOfExperts(WATCH, experts=2, expert_units=(6,), gates="ple")
    x = _inputs()
    moe(x)
    assert sorted(moe.groups) == ["click", "shared", "watch"]
    assert all(len(experts) == 2 for experts in moe.groups.values())
    # Each gate mixes the task's own experts and the shared ones.
    assert moe.gate_layers["watch"](x).shape == (3, 4)
    watch = _ids(moe.task_variables("watch"))
    click_own = _ids(v for layer in moe.groups["click"] + [moe.gate_layers["click"]] for v in layer.trainable_variables)
    watch_own = _ids(v for layer in moe.groups["watch"] + [moe.gate_layers["watch"]] for v in layer.trainable_variables)
    shared = _ids(v for layer in moe.groups["shared"] for v in layer.trainable_variables)
    assert watch == watch_own and watch_own and not watch & click_own and not watch & shared


@pytest.mark.parametrize("gates", ["mmoe", "shared", "ple"])
def test_multi_task_head_config_round_trip_and_objective_variables(gates):
    head = MultiTaskRankingHead(WATCH, experts=2, gates=gates, cross_layers=1, hidden_units=(8, 4), dropout=0.1,
                                l2=1e-4, name="ranking_head")
    x = _inputs()
    logits = head(x)
    assert sorted(logits) == ["click", "watch"]
    assert all(v.shape == (3,) and v.dtype == tf.float32 for v in logits.values())
    clone = MultiTaskRankingHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert {k: v.shape for k, v in clone(x).items()} == {k: v.shape for k, v in logits.items()}
    watch = _ids(head.objective_variables("watch"))
    assert _ids(head.towers["watch"].trainable_variables) <= watch
    assert not watch & _ids(head.towers["click"].trainable_variables)
    assert not watch & _ids(head.objective_variables("click"))
    assert not watch & _ids(v for cross in head.crosses for v in cross.trainable_variables)
    if gates == "ple":
        assert _ids(v for expert in head.mixture.groups["watch"] for v in expert.trainable_variables) <= watch
    with pytest.raises(ValueError, match="click"):
        MultiTaskRankingHead(("watch", "click"))


def test_multi_task_head_calibrates_the_click_logit_only():
    head = MultiTaskRankingHead(WATCH, experts=2, hidden_units=(8, 4))
    x = _inputs()
    before = {k: v.numpy() for k, v in head(x).items()}
    head.set_calibration(2.0, 0.5)
    after = {k: v.numpy() for k, v in head(x).items()}
    np.testing.assert_allclose(after["click"], 2.0 * before["click"] + 0.5, atol=1e-5)
    np.testing.assert_allclose(after["watch"], before["watch"], atol=1e-6)


# -- watch_fraction_loss ------------------------------------------------------------------------------

def _logistic(label, logit):
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_watch_fraction_loss_hand_computed():
    features = {"watch_fraction": tf.constant([0.8, 0.5, 0.25])}
    clicked = tf.constant([1.0, 0.0, 1.0])
    logits = tf.constant([0.0, 5.0, math.log(3.0)])
    # Row 0: 0.8 at sigmoid 0.5 is log 2; row 2: sigmoid(log 3) = 0.75 against 0.25. Row 1 is not a click.
    expected = (math.log(2.0) + (0.25 * -math.log(0.75) + 0.75 * -math.log(0.25))) / 2
    assert abs(expected - (_logistic(0.8, 0.0) + _logistic(0.25, math.log(3.0))) / 2) < 1e-12
    assert float(watch_fraction_loss(features, clicked, logits)) == pytest.approx(expected, abs=1e-5)
    assert float(watch_fraction_loss(features, clicked, logits)) == pytest.approx(0.902394, abs=1e-5)


def test_watch_fraction_loss_counts_clicked_rows_only():
    clicked = tf.constant([1.0, 0.0, 1.0, 0.0])
    base = float(watch_fraction_loss({"watch_fraction": tf.constant([0.8, 0.5, 0.25, 0.0])}, clicked,
                                     tf.constant([0.3, 5.0, -1.0, 2.0])))
    # Anything in the unclicked rows, label or logit, changes nothing.
    other = float(watch_fraction_loss({"watch_fraction": tf.constant([0.8, 0.0, 0.25, 1.0])}, clicked,
                                      tf.constant([0.3, -40.0, -1.0, 9.0])))
    assert base == pytest.approx(other, abs=1e-6)
    # The mean over clicks, not over rows: the same two clicks alone give the same loss.
    alone = float(watch_fraction_loss({"watch_fraction": tf.constant([0.8, 0.25])}, tf.constant([1.0, 1.0]),
                                      tf.constant([0.3, -1.0])))
    assert base == pytest.approx(alone, abs=1e-6)
    assert base == pytest.approx((_logistic(0.8, 0.3) + _logistic(0.25, -1.0)) / 2, abs=1e-5)
    # A batch without clicks: 0, not NaN.
    assert float(watch_fraction_loss({"watch_fraction": tf.constant([0.5, 0.5])}, tf.constant([0.0, 0.0]),
                                     tf.constant([1.0, 2.0]))) == 0.0


def test_watch_labels_fall_back_to_seconds_over_duration():
    seconds = {"watch_seconds": tf.constant([30.0, 0.0, 200.0, 5.0]),
               "duration_s": tf.constant([60.0, 10.0, 100.0, 0.0])}
    # 30/60; 0; 200/100 clipped to 1; a zero duration gives 0, not inf or NaN.
    np.testing.assert_allclose(watch_labels(seconds).numpy(), [0.5, 0.0, 1.0, 0.0], atol=1e-6)
    clicked, logits = tf.constant([1.0, 1.0, 1.0, 1.0]), tf.constant([0.5, -0.5, 1.0, 0.0])
    assert float(watch_fraction_loss(seconds, clicked, logits)) == pytest.approx(
        float(watch_fraction_loss({"watch_fraction": tf.constant([0.5, 0.0, 1.0, 0.0])}, clicked, logits)), abs=1e-6)
    # watch_fraction wins when both are there.
    both = dict(seconds, watch_fraction=tf.constant([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_allclose(watch_labels(both).numpy(), [0.1, 0.2, 0.3, 0.4], atol=1e-6)


def test_watch_labels_need_a_watch_column():
    for features in ({"clicked": tf.constant([1.0])}, {"watch_seconds": tf.constant([3.0])},
                     {"duration_s": tf.constant([3.0])}):
        with pytest.raises(ConfigError, match="watch_fraction"):
            watch_fraction_loss(features, tf.constant([1.0]), tf.constant([0.0]))


def test_non_finite_watch_labels_count_as_zero():
    labels = watch_labels({"watch_fraction": tf.constant([float("nan"), float("inf"), -0.3, 1.7, 0.4])})
    np.testing.assert_allclose(labels.numpy(), [0.0, 0.0, 0.0, 1.0, 0.4], atol=1e-6)
    clicked, logits = tf.constant([1.0, 1.0]), tf.constant([0.7, -0.2])
    with_nan = float(watch_fraction_loss({"watch_fraction": tf.constant([float("nan"), 0.5])}, clicked, logits))
    assert np.isfinite(with_nan)
    assert with_nan == pytest.approx(
        float(watch_fraction_loss({"watch_fraction": tf.constant([0.0, 0.5])}, clicked, logits)), abs=1e-6)
    seconds = {"watch_seconds": tf.constant([float("nan"), 10.0]), "duration_s": tf.constant([60.0, float("nan")])}
    np.testing.assert_allclose(watch_labels(seconds).numpy(), [0.0, 0.0])


# -- a trained watch model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def watch_data():
    return toy_data(watch=True)


@pytest.fixture(scope="module")
def trained(watch_data):
    """(model, fit history): a watch model fitted 4 epochs, with validation data."""
    catalog, impressions = watch_data
    model = small_model(catalog, impressions, ranking_objectives=WATCH)
    validation = tf.data.Dataset.from_tensor_slices({k: v[-256:] for k, v in impressions.items()}).batch(256)
    history = model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(256), validation_data=validation,
                        epochs=4, verbose=0)
    return model, history.history


@pytest.fixture(scope="module")
def click_only():
    catalog, impressions = toy_data()
    return small_model(catalog, impressions), catalog, impressions


def test_a_watch_model_logs_its_watch_loss(trained):
    model, history = trained
    for key in ("watch_loss", "val_watch_loss", "ranking_loss", "retrieval_loss"):
        assert key in history and all(np.isfinite(history[key])), (key, sorted(history))
    assert history["watch_loss"][-1] < history["watch_loss"][0]
    assert history["val_watch_loss"][-1] < history["val_watch_loss"][0]
    assert "watch_loss" in [metric.name for metric in model.metrics]


def test_expected_watch_fraction_is_higher_on_good_videos(trained, watch_data):
    model, _ = trained
    catalog, impressions = watch_data
    outputs = model({k: tf.constant(v) for k, v in impressions.items()}, training=False)
    assert sorted(outputs) == ["click_probability", "expected_watch_fraction", "query_embedding",
                               "retrieval_score", "video_embedding"]
    fraction = outputs["expected_watch_fraction"].numpy()
    assert fraction.shape == (len(impressions["video_id"]),) and ((fraction >= 0) & (fraction <= 1)).all()
    good_ids = set(catalog["video_id"][catalog["audio_embedding"][:, 0] > 0])
    good = np.array([v in good_ids for v in impressions["video_id"]])
    per_video = {}
    for video, value in zip(impressions["video_id"], fraction):
        per_video.setdefault(video, []).append(value)
    good_means = [np.mean(values) for video, values in per_video.items() if video in good_ids]
    bad_means = [np.mean(values) for video, values in per_video.items() if video not in good_ids]
    # The data: 0.75-0.9 on good videos, 0.2-0.35 on bad ones. Four epochs learn most of that gap.
    assert fraction[good].mean() - fraction[~good].mean() > 0.2, (fraction[good].mean(), fraction[~good].mean())
    ordered = np.mean([g > b for g in good_means for b in bad_means])
    assert ordered > 0.85, ordered


def test_a_watch_model_heads_and_variables(trained, watch_data):
    model, _ = trained
    _, impressions = watch_data
    assert isinstance(model.ranking_head, MultiTaskRankingHead) and model.watch_in_seconds
    watch, ranking = _ids(model.watch_variables), _ids(model.ranking_variables)
    assert watch and watch <= ranking
    assert not watch & _ids(model.ranking_head.towers["click"].trainable_variables)
    batch = {k: tf.constant(v[:6]) for k, v in impressions.items()}
    query = model.encode_queries(batch, training=False)
    video = model.encode_videos(batch, training=False, popularity=False)
    logits = model.rank_outputs_from_parts(query, video, training=False)
    outputs = model(batch, training=False)
    assert sorted(logits) == ["click", "watch"]
    np.testing.assert_allclose(tf.sigmoid(logits["click"]).numpy(), outputs["click_probability"].numpy(), atol=1e-5)
    np.testing.assert_allclose(tf.sigmoid(logits["watch"]).numpy(), outputs["expected_watch_fraction"].numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(model.rank_logits_from_parts(query, video, training=False).numpy(),
                               logits["click"].numpy(), atol=1e-6)


def test_a_watch_model_saves_and_loads(trained, watch_data, tmp_path):
    model, _ = trained
    _, impressions = watch_data
    restored = load_model(save_model(model, str(tmp_path / "watch_model")))
    assert restored.config.ranking_objectives == WATCH and isinstance(restored.ranking_head, MultiTaskRankingHead)
    batch = {k: tf.constant(v[:16]) for k, v in impressions.items()}
    expected, got = model(batch, training=False), restored(batch, training=False)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(got[key].numpy(), expected[key].numpy(), atol=1e-6, err_msg=key)


def test_a_click_only_model_has_no_watch_outputs_nor_rank_weighted(click_only):
    model, catalog, impressions = click_only
    assert not model.config.watch and model.watch_variables == [] and not model.watch_in_seconds
    assert model.watch_loss_tracker is None and "watch_loss" not in [metric.name for metric in model.metrics]
    outputs = model({k: tf.constant(v[:4]) for k, v in impressions.items()}, training=False)
    assert sorted(outputs) == ["click_probability", "query_embedding", "retrieval_score", "video_embedding"]
    signatures = ServingModule(model, catalog, k=K, n=N).signatures()
    assert "recommend_diverse" in signatures and "rank_weighted" not in signatures
    assert sorted(signatures["serving_default"].structured_outputs) == ["click_probability", "retrieval_score",
                                                                        "score", "video_ids"]
    (inputs,), _ = signatures["recommend_diverse"].structured_input_signature  # in process: one dict argument
    assert sorted(inputs) == sorted(model.query_feature_names + ["diversity"])


# -- its export ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(trained, watch_data, tmp_path_factory):
    """(version_dir, loaded): the watch model exported with the default score weights (1, 1)."""
    model, _ = trained
    catalog, _ = watch_data
    assert model.config.watch_score_weight == 1.0
    version_dir = export_saved_model(model, catalog, str(tmp_path_factory.mktemp("objectives")), k=K, n=N)
    return version_dir, tf.saved_model.load(version_dir)


def _request(model, impressions, rows=ROWS):
    return {name: tf.constant(impressions[name][rows]) for name in model.query_feature_names}


def _logit(probability):
    p = probability.astype(np.float64)
    return np.log(p) - np.log1p(-p)


def _weights(click, watch, batch=len(ROWS)):
    return {"click_weight": tf.constant([click] * batch, tf.float32),
            "watch_weight": tf.constant([watch] * batch, tf.float32)}


def test_serving_default_of_a_watch_model_returns_the_score_and_expected_watch(trained, watch_data, exported):
    model, _ = trained
    catalog, impressions = watch_data
    _, loaded = exported
    assert sorted(loaded.signatures) == sorted([
        "serving_default", "retrieve", "recommend_excluding", "retrieve_excluding", "recommend_diverse",
        "rank_weighted", "rank", "embed_query", "embed_video"])
    served = {k: v.numpy() for k, v in loaded.signatures["serving_default"](**_request(model, impressions)).items()}
    assert sorted(served) == sorted(["video_ids", "click_probability", "retrieval_score", "score",
                                     "expected_watch_fraction", "expected_watch_seconds"])
    assert all(value.shape == (len(ROWS), N) for value in served.values())
    assert (np.diff(served["score"], axis=1) <= 0).all(), served["score"]
    duration = dict(zip(catalog["video_id"], catalog["duration_s"]))
    seconds = np.vectorize(lambda v: duration[v.decode()])(served["video_ids"])
    np.testing.assert_allclose(served["expected_watch_seconds"], served["expected_watch_fraction"] * seconds,
                               rtol=1e-4)
    # score = click term (the click logit: the list blend is not fitted) + 1 * log(expected watch seconds).
    np.testing.assert_allclose(served["score"], _logit(served["click_probability"])
                               + np.log(served["expected_watch_seconds"]), atol=1e-3)
    # The expected watch does change the order: a click-only order would differ for some user.
    click_order = np.argsort(-served["click_probability"], axis=1, kind="stable")
    assert (click_order != np.arange(N)).any()


def test_rank_weighted_splits_the_score_into_its_terms(trained, watch_data, exported):
    model, _ = trained
    _, impressions = watch_data
    _, loaded = exported
    request = _request(model, impressions)
    default = loaded.signatures["serving_default"](**request)
    rank_weighted = loaded.signatures["rank_weighted"]
    same = rank_weighted(**request, **_weights(1.0, 1.0))
    assert sorted(same) == sorted(default)
    np.testing.assert_array_equal(same["video_ids"].numpy(), default["video_ids"].numpy())
    np.testing.assert_allclose(same["score"].numpy(), default["score"].numpy(), atol=1e-5)
    clicks = {k: v.numpy() for k, v in rank_weighted(**request, **_weights(1.0, 0.0)).items()}
    np.testing.assert_allclose(clicks["score"], _logit(clicks["click_probability"]), atol=1e-3)
    assert (np.diff(clicks["click_probability"], axis=1) <= 1e-7).all()
    watch = {k: v.numpy() for k, v in rank_weighted(**request, **_weights(0.0, 1.0)).items()}
    np.testing.assert_allclose(watch["score"], np.log(watch["expected_watch_seconds"]), atol=1e-4)
    assert (np.diff(watch["expected_watch_seconds"], axis=1) <= 1e-3).all()
    assert (clicks["video_ids"] != watch["video_ids"]).any()
    # Doubling both weights doubles the score and keeps the order.
    double = rank_weighted(**request, **_weights(2.0, 2.0))
    np.testing.assert_array_equal(double["video_ids"].numpy(), default["video_ids"].numpy())
    np.testing.assert_allclose(double["score"].numpy(), 2 * default["score"].numpy(), atol=1e-4)
    # Weights per row: the same user with (1, 0) and (1, 1).
    one = {name: tf.repeat(value[:1], 2, axis=0) for name, value in request.items()}
    mixed = rank_weighted(**one, click_weight=tf.constant([1.0, 1.0]), watch_weight=tf.constant([0.0, 1.0]))
    assert mixed["video_ids"].numpy()[0].tolist() == clicks["video_ids"][0].tolist()
    assert mixed["video_ids"].numpy()[1].tolist() == default["video_ids"].numpy()[0].tolist()


def test_export_score_weights_fix_the_served_order(trained, watch_data, exported, tmp_path):
    model, _ = trained
    catalog, impressions = watch_data
    _, loaded = exported
    request = _request(model, impressions)
    version_dir = export_saved_model(model, catalog, str(tmp_path), k=K, n=N, score_weights=(1.0, 0.0))
    clicks_only = tf.saved_model.load(version_dir).signatures["serving_default"](**request)
    expected = loaded.signatures["rank_weighted"](**request, **_weights(1.0, 0.0))
    np.testing.assert_array_equal(clicks_only["video_ids"].numpy(), expected["video_ids"].numpy())
    np.testing.assert_allclose(clicks_only["score"].numpy(), expected["score"].numpy(), atol=1e-5)
    assert (clicks_only["video_ids"].numpy() != loaded.signatures["serving_default"](**request)["video_ids"].numpy()).any()
    for bad in ((1.0, 1.0, 1.0), (float("nan"), 1.0), (1.0, float("inf")), (1.0,), "1,1"):
        with pytest.raises(ValueError, match="score_weights"):
            export_saved_model(model, catalog, str(tmp_path / "bad"), k=K, n=N, score_weights=bad)
    assert sorted(os.listdir(tmp_path / "bad" / "video_rec")) == []  # nothing written for a refused export


def _mean_pairwise_similarity(video_ids, unit):
    """The mean, over rows, of the mean cosine similarity of each row's videos' retrieval embeddings."""
    means = []
    for row in video_ids:
        vectors = np.stack([unit[v.decode()] for v in row])
        similarity = vectors @ vectors.T
        means.append(similarity[~np.eye(len(row), dtype=bool)].mean())
    return np.array(means)


def test_recommend_diverse_trades_relevance_for_variety(trained, watch_data, exported):
    model, _ = trained
    catalog, impressions = watch_data
    _, loaded = exported
    request = _request(model, impressions)
    diverse = loaded.signatures["recommend_diverse"]
    default = loaded.signatures["serving_default"](**request)
    at = {d: diverse(**request, diversity=tf.fill([len(ROWS)], d)) for d in (0.0, 1.0)}
    np.testing.assert_array_equal(at[0.0]["video_ids"].numpy(), default["video_ids"].numpy())
    np.testing.assert_allclose(at[0.0]["score"].numpy(), default["score"].numpy(), atol=1e-5)
    assert sorted(at[1.0]) == sorted(default)
    embeddings = embed_catalog(model, catalog)
    unit = dict(zip(catalog["video_id"], embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)))
    plain = _mean_pairwise_similarity(at[0.0]["video_ids"].numpy(), unit)
    varied = _mean_pairwise_similarity(at[1.0]["video_ids"].numpy(), unit)
    assert varied.mean() < plain.mean() - 0.1, (plain, varied)
    assert (varied <= plain + 1e-6).mean() >= 0.75, (plain, varied)
    # The most relevant video still comes first.
    np.testing.assert_array_equal(at[1.0]["video_ids"].numpy()[:, 0], default["video_ids"].numpy()[:, 0])
    history = impressions["history"][ROWS]
    for row, videos in enumerate(at[1.0]["video_ids"].numpy()):
        assert len(set(videos)) == N and not set(videos) & set(history[row].astype(bytes))
    # Diversity per row: the same user at 0 and at 1.
    changed = [i for i in range(len(ROWS)) if (at[0.0]["video_ids"].numpy()[i] != at[1.0]["video_ids"].numpy()[i]).any()]
    assert changed
    i = changed[0]
    pair = {name: tf.gather(value, [i, i]) for name, value in request.items()}
    rows = diverse(**pair, diversity=tf.constant([0.0, 1.0]))["video_ids"].numpy()
    assert rows[0].tolist() == at[0.0]["video_ids"].numpy()[i].tolist()
    assert rows[1].tolist() == at[1.0]["video_ids"].numpy()[i].tolist()


def test_recommend_diverse_leaves_out_the_history(trained, watch_data, exported):
    """A history of what the user would be served at diversity 1 is left out, and n others come back."""
    model, _ = trained
    _, impressions = watch_data
    _, loaded = exported
    request = _request(model, impressions)
    diverse = loaded.signatures["recommend_diverse"]
    ones = tf.fill([len(ROWS)], 1.0)
    width = model.vocabularies.history_length
    empty = dict(request, history=tf.fill([len(ROWS), width], ""))
    first = diverse(**empty, diversity=ones)["video_ids"].numpy()
    watched = dict(request, history=tf.constant(first[:, :width]))
    again = diverse(**watched, diversity=ones)["video_ids"].numpy()
    for row in range(len(ROWS)):
        assert len(set(again[row])) == N and not set(again[row]) & set(first[row, :width])


# Loads the export with TensorFlow + TF Text only and prints each call's video_ids and score.
_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops)
assert "tfrec_video" not in sys.modules
loaded = tf.saved_model.load(sys.argv[1])
out = []
for name, inputs in json.loads(sys.stdin.read()):
    signature = loaded.signatures[name]
    specs = signature.structured_input_signature[1]
    assert set(inputs) == set(specs), (name, sorted(inputs), sorted(specs))
    result = signature(**{key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()})
    out.append({"video_ids": [[v.decode() for v in row] for row in result["video_ids"].numpy().tolist()],
                "score": result["score"].numpy().tolist()})
print(json.dumps(out))
"""


def test_diverse_and_weighted_signatures_in_a_fresh_process(trained, watch_data, exported):
    model, _ = trained
    _, impressions = watch_data
    version_dir, loaded = exported
    request = _request(model, impressions)
    plain = {name: impressions[name][ROWS].tolist() for name in request}
    batch = len(ROWS)
    calls = [
        ("recommend_diverse", dict(plain, diversity=[0.0] * batch)),
        ("recommend_diverse", dict(plain, diversity=[1.0] * batch)),
        ("recommend_diverse", dict(plain, diversity=[i / (batch - 1) for i in range(batch)])),
        ("rank_weighted", dict(plain, click_weight=[1.0] * batch, watch_weight=[0.0] * batch)),
        ("rank_weighted", dict(plain, click_weight=[0.5 * i for i in range(batch)], watch_weight=[1.0] * batch)),
    ]
    result = subprocess.run([sys.executable, "-c", _FRESH, version_dir], input=json.dumps(calls),
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    fresh = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(fresh) == len(calls)
    for (name, inputs), got in zip(calls, fresh):
        specs = loaded.signatures[name].structured_input_signature[1]
        expected = loaded.signatures[name](**{key: tf.constant(value, specs[key].dtype)
                                              for key, value in inputs.items()})
        assert got["video_ids"] == [[v.decode() for v in row] for row in expected["video_ids"].numpy().tolist()], name
        np.testing.assert_allclose(got["score"], expected["score"].numpy(), atol=1e-5, err_msg=name)
    assert fresh[0]["video_ids"] != fresh[1]["video_ids"] and fresh[3]["video_ids"] != fresh[4]["video_ids"]


def test_fit_model_refuses_a_watch_model_on_impressions_without_watch_time(tmp_path):
    """Before any step: the training files, the missing feature and what would do, not a trace-time error."""
    from tfrec_video.data import write_table
    from tfrec_video.data.schema import impressions_schema
    from tfrec_video.errors import DataValidationError
    from tfrec_video.training import TrainingConfig, fit_model

    catalog, impressions = toy_data()
    schema = impressions_schema(5).select([name for name in impressions if name in impressions_schema(5).names])
    path = write_table({name: impressions[name] for name in schema.names},
                       str(tmp_path / "train.parquet"), schema)
    with pytest.raises(DataValidationError, match="watch_fraction") as raised:
        fit_model(catalog, path, schema, ModelConfig(ranking_objectives=("click", "watch")),
                  TrainingConfig(epochs=1), verbose=0)
    assert raised.value.file and "train.parquet" in raised.value.file and raised.value.feature == "watch_fraction"


def test_the_watch_loss_trains_the_head_not_the_towers(trained, watch_data):
    """The towers (shared with retrieval and the click head) get no gradient from the watch loss; the head's
    shared experts and the watch tower do. The click loss still reaches the towers."""
    model, _ = trained
    _, impressions = watch_data
    batch = {name: tf.constant(value[:64]) for name, value in impressions.items()}
    clicked = tf.cast(batch["clicked"], tf.float32)
    towers = model.query_tower.trainable_variables + model.candidate_tower.trainable_variables
    experts = model.ranking_head.mixture.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        logits = model.rank_outputs(batch, training=True)
        watch = watch_fraction_loss(batch, clicked, logits["watch"])
        click = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(clicked, logits["click"]))
    assert all(g is None for g in tape.gradient(watch, towers))
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in tape.gradient(watch, experts))
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0
               for g in tape.gradient(watch, model.ranking_head.towers["watch"].trainable_variables))
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in tape.gradient(click, towers))
