"""The ranking stage's features and tools: `ClickCounts`, the click-rate priors `adapt` learns,
`TargetAttention`, `RankingHead`'s calibration, Platt scaling, ranking-only training, and the served lists."""

import json
import math

import numpy as np
import pytest
from tfrec_video.errors import ConfigError  # before TensorFlow: tf.keras must be Keras 2
import tensorflow as tf
from tfrec_video.evaluation.metrics import auc, logloss
from tfrec_video.evaluation.served import hit_rate, served_lists
from tfrec_video.features import Vocabularies, adapt
from tfrec_video.features.vocabulary import click_rate_prior
from tfrec_video.models.dtype_policy import dtype_policy
from tfrec_video.models.ranking_head import RankingHead
from tfrec_video.towers import ClickCounts, TargetAttention
from tfrec_video.training.calibration import calibrate_clicks, fit_platt

from toy import toy_data, small_model


def _logit(x):
    x = np.asarray(x, np.float64)
    return np.log(x) - np.log1p(-x)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))


# -- ClickCounts ---------------------------------------------------------------------------------------------

# Vocabulary ids 0..3 sit at lookup rows 3..6 (row 0: mask, rows 1-2: OOV buckets).
IMPRESSIONS, CLICKS, OOV, P, S = [10, 2, 0, 100], [5, 1, 0, 30], 2, 0.1, 4.0


def _counts(impressions=IMPRESSIONS, clicks=CLICKS):
    return ClickCounts(impressions, clicks, num_oov_buckets=OOV, prior_rate=P, prior_strength=S)


def test_click_counts_rate_feature_is_the_shrunk_logit_minus_the_prior_logit():
    out = _counts()(tf.constant([3, 4, 5, 6])).numpy()
    n, c = np.array(IMPRESSIONS, np.float64), np.array(CLICKS, np.float64)
    rate = (c + S * P) / (n + S)
    np.testing.assert_allclose(out[:, 0], _logit(rate) - _logit(P), rtol=1e-5, atol=1e-6)
    # The count feature is log1p(impressions) times one positive scale, at most 1.
    np.testing.assert_allclose(out[:, 1], np.log1p(n) * (out[3, 1] / np.log1p(100)), rtol=1e-5, atol=1e-7)
    assert 0 < out[3, 1] <= 1 and out[2, 1] == 0


def test_click_counts_count_feature_matches_the_documented_scale():
    out = _counts()(tf.constant([3, 6])).numpy()
    np.testing.assert_allclose(out[:, 1], np.log1p([10, 100]) / np.log1p(100), rtol=1e-6)


def test_click_counts_oov_and_mask_rows_are_zero():
    layer = _counts()
    index = tf.constant([0, 1, 2])
    np.testing.assert_array_equal(layer(index).numpy(), np.zeros((3, 2), np.float32))
    # Leave-one-out does not touch rows without counts either.
    np.testing.assert_array_equal(layer(index, clicked=tf.constant([1, 0, 1])).numpy(), np.zeros((3, 2)))


def test_click_counts_leave_one_out_equals_the_counts_minus_the_row():
    # Rows 3 and 4 (ids 0 and 1) lose their own impression, and their click when clicked; the max id (row 6)
    # is kept so that both layers have the same count scale.
    index = tf.constant([3, 3, 4, 4])
    clicked = tf.constant([1, 0, 1, 0])
    out = _counts()(index, clicked=clicked).numpy()
    clicked_minus = _counts([9, 1, 0, 100], [4, 0, 0, 30])(tf.constant([3, 4])).numpy()
    unclicked_minus = _counts([9, 1, 0, 100], [5, 1, 0, 30])(tf.constant([3, 4])).numpy()
    np.testing.assert_allclose(out[[0, 2]], clicked_minus, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out[[1, 3]], unclicked_minus, rtol=1e-6, atol=1e-7)
    # ...and it differs from the counts used as they are (no leak-free no-op).
    assert not np.allclose(out, _counts()(index).numpy())


def test_click_counts_zero_impression_row_ignores_clicked():
    layer = _counts()
    plain = layer(tf.constant([5, 5])).numpy()
    np.testing.assert_array_equal(layer(tf.constant([5, 5]), clicked=tf.constant([1, 0])).numpy(), plain)
    np.testing.assert_array_equal(plain, np.zeros((2, 2)))  # no counts: the prior itself


def test_click_counts_shrink_few_impressions_towards_the_prior():
    layer = ClickCounts([2, 200], [2, 200], num_oov_buckets=1, prior_rate=0.1, prior_strength=20.0)
    few, many = layer(tf.constant([2, 3])).numpy()[:, 0]
    assert 0 < few < many
    assert few < 0.5 * many


def test_click_counts_config_round_trip_and_tf_function():
    layer = _counts()
    index = tf.constant([0, 1, 3, 4, 6, 3])
    clicked = tf.constant([0, 1, 1, 0, 1, 0])
    expected = layer(index, clicked=clicked).numpy()
    config = layer.get_config()
    json.dumps(config)  # plain Python values, as Keras saving needs
    again = ClickCounts.from_config(config)
    np.testing.assert_array_equal(again(index, clicked=clicked).numpy(), expected)
    np.testing.assert_array_equal(again(index).numpy(), layer(index).numpy())
    traced = tf.function(lambda i, c: layer(i, clicked=c))
    np.testing.assert_allclose(traced(index, clicked).numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tf.function(layer)(index).numpy(), layer(index).numpy(), rtol=1e-6, atol=1e-7)


def test_click_counts_refuses_bad_arguments():
    with pytest.raises(ValueError):
        ClickCounts([1, 2], [1], num_oov_buckets=1, prior_rate=0.1, prior_strength=1.0)
    for rate, strength in ((0.0, 1.0), (1.0, 1.0), (0.1, 0.0)):
        with pytest.raises(ValueError):
            ClickCounts([1], [1], num_oov_buckets=1, prior_rate=rate, prior_strength=strength)


# -- click_rate_prior and adapt's counts ----------------------------------------------------------------------

def test_click_rate_prior_identical_rates_get_the_cap():
    impressions = np.array([100] * 30 + [20] * 30 + [0] * 5)
    rate, strength = click_rate_prior(impressions, np.array([20] * 30 + [4] * 30 + [0] * 5))
    assert rate == pytest.approx(0.2)
    assert strength == 1e4


def test_click_rate_prior_binomial_noise_only_gives_a_strong_prior():
    rng = np.random.default_rng(0)
    impressions = rng.integers(20, 200, 2000)
    rate, strength = click_rate_prior(impressions, rng.binomial(impressions, 0.1))
    assert rate == pytest.approx(0.1, abs=0.005)
    assert strength >= 1000


def test_click_rate_prior_very_different_rates_give_a_weak_prior():
    impressions = np.full(400, 100)
    clicks = np.where(np.arange(400) % 2 == 0, 1, 50)  # rates 0.01 and 0.5
    rate, strength = click_rate_prior(impressions, clicks)
    assert rate == pytest.approx(0.255)
    # True Beta strength: 0.255 * 0.745 / 0.245**2 - 1 = 2.17.
    assert 1.0 <= strength < 5.0


@pytest.mark.parametrize("per_id", [50, 10])  # at 10, binomial noise is twice the true spread of the rates
def test_click_rate_prior_recovers_a_beta_binomial_strength(per_id):
    rng = np.random.default_rng(0)
    true_rate, true_strength = 0.1, 20.0
    rates = rng.beta(true_rate * true_strength, (1 - true_rate) * true_strength, 5000)
    impressions = np.full(5000, per_id)
    rate, strength = click_rate_prior(impressions, rng.binomial(impressions, rates))
    assert rate == pytest.approx(true_rate, abs=0.005)
    assert true_strength / 1.5 <= strength <= true_strength * 1.5


def test_click_rate_prior_without_impressions():
    assert click_rate_prior(np.zeros(3), np.zeros(3)) == (0.5, 1.0)


@pytest.fixture(scope="module")
def toy():
    return toy_data()


def _per_id(ids, keys, clicked):
    ids = np.asarray(ids).astype(str)
    return ([int((ids == k).sum()) for k in keys], [int(clicked[ids == k].sum()) for k in keys])


def test_adapt_click_counts_are_aligned_with_the_vocabularies(toy):
    catalog, impressions = toy
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    clicked = impressions["clicked"]
    user_n, user_c = _per_id(impressions["user_id"], vocab.user_ids, clicked)
    video_n, video_c = _per_id(impressions["video_id"], vocab.video_ids, clicked)
    assert vocab.user_impressions == user_n and vocab.user_clicks == user_c
    assert vocab.video_counts == video_n and vocab.video_clicks == video_c
    assert sum(vocab.user_impressions) == sum(vocab.video_counts) == len(clicked)
    assert sum(vocab.user_clicks) == sum(vocab.video_clicks) == int(clicked.sum())
    assert vocab.click_rate == pytest.approx(clicked.mean())
    assert vocab.user_prior_strength == pytest.approx(click_rate_prior(user_n, user_c)[1])
    assert vocab.video_prior_strength == pytest.approx(click_rate_prior(video_n, video_c)[1])
    assert all(isinstance(x, int) for x in vocab.user_impressions + vocab.user_clicks + vocab.video_clicks)

    capped = adapt(catalog, impressions, title_vocabulary_size=80, max_users=5, max_videos=7)
    assert capped.user_ids == vocab.user_ids[:5] and capped.video_ids == vocab.video_ids[:7]
    assert capped.user_impressions == vocab.user_impressions[:5] and capped.user_clicks == vocab.user_clicks[:5]
    assert capped.video_counts == vocab.video_counts[:7] and capped.video_clicks == vocab.video_clicks[:7]
    # The priors describe the data, not the capped vocabularies.
    assert (capped.click_rate, capped.user_prior_strength, capped.video_prior_strength) == (
        vocab.click_rate, vocab.user_prior_strength, vocab.video_prior_strength)


def test_adapt_streams_the_counts_over_several_batches():
    rng = np.random.default_rng(3)
    rows = 9000  # more than adapt's 8192-row batches
    catalog = {"video_id": np.array([f"v{i}" for i in range(30)], object),
               "title": np.array([f"video {i}" for i in range(30)], object)}
    impressions = {"user_id": np.array([f"u{i}" for i in rng.integers(0, 50, rows)], object),
                   "video_id": catalog["video_id"][rng.integers(0, 30, rows)],
                   "clicked": (rng.random(rows) < 0.2).astype(np.int64)}
    from_arrays = adapt(catalog, impressions, title_vocabulary_size=40)
    streamed = adapt(catalog, tf.data.Dataset.from_tensor_slices(impressions), title_vocabulary_size=40)
    for name in ("user_ids", "video_ids", "video_counts", "user_impressions", "user_clicks", "video_clicks"):
        assert getattr(streamed, name) == getattr(from_arrays, name), name
    assert streamed.click_rate == pytest.approx(from_arrays.click_rate)
    assert streamed.user_prior_strength == pytest.approx(from_arrays.user_prior_strength)
    assert streamed.video_prior_strength == pytest.approx(from_arrays.video_prior_strength)
    assert sum(streamed.user_clicks) == int(impressions["clicked"].sum())


def test_adapt_without_clicks_has_no_counts(toy):
    catalog, impressions = toy
    vocab = adapt(catalog, {k: v for k, v in impressions.items() if k != "clicked"}, title_vocabulary_size=80)
    for name in ("user_impressions", "user_clicks", "video_clicks", "click_rate", "user_prior_strength",
                 "video_prior_strength"):
        assert getattr(vocab, name) is None, name
    assert vocab.video_counts  # the impression counts do not need clicks


def test_vocabularies_dict_round_trip_keeps_the_counts(toy):
    catalog, impressions = toy
    vocab = adapt(catalog, impressions, title_vocabulary_size=80)
    assert vocab.user_impressions is not None
    again = Vocabularies.from_dict(vocab.to_dict())
    assert again == vocab
    fields = ("user_impressions", "user_clicks", "video_clicks", "click_rate", "user_prior_strength",
              "video_prior_strength")
    through_json = json.loads(json.dumps({name: vocab.to_dict()[name] for name in fields}))
    assert through_json == {name: getattr(vocab, name) for name in fields}


# -- TargetAttention ------------------------------------------------------------------------------------------

def _history(seed=0, batch=4, length=5, dim=6):
    rng = np.random.default_rng(seed)
    history = rng.normal(size=(batch, length, dim)).astype(np.float32)
    history /= np.linalg.norm(history, axis=-1, keepdims=True)
    target = rng.normal(size=(batch, dim)).astype(np.float32)
    target /= np.linalg.norm(target, axis=-1, keepdims=True)
    mask = np.array([[True, True, False, True, False], [False] * 5, [True] * 5, [True, False, False, False, False]])
    return history, mask[:batch], target


def test_target_attention_width_and_similarity_features():
    history, mask, target = _history()
    layer = TargetAttention(hidden_units=8)
    out = layer(tf.constant(history), tf.constant(mask), tf.constant(target)).numpy()
    dim = history.shape[-1]
    assert out.shape == (4, dim + 3)
    assert np.isfinite(out).all()
    for b in range(4):
        sims = history[b][mask[b]] @ target[b]
        if len(sims):
            np.testing.assert_allclose(out[b, dim], sims.max(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out[b, dim + 1], sims.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[b, dim + 2], np.log1p(mask[b].sum()) / np.log1p(5), rtol=1e-6)
        # The pooled part is a convex combination of the unmasked watched videos.
        if mask[b].sum() == 1:
            np.testing.assert_allclose(out[b, :dim], history[b][mask[b]][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[1], np.zeros(dim + 3))  # the empty history


def test_target_attention_ignores_masked_entries():
    history, mask, target = _history()
    layer = TargetAttention(hidden_units=8)
    out = layer(tf.constant(history), tf.constant(mask), tf.constant(target)).numpy()
    changed = history.copy()
    changed[~mask] = 100.0 * np.random.default_rng(1).normal(size=changed[~mask].shape)
    out_changed = layer(tf.constant(changed), tf.constant(mask), tf.constant(target)).numpy()
    np.testing.assert_allclose(out_changed, out, rtol=1e-6, atol=1e-6)


def test_target_attention_empty_history_is_zero_under_mixed_float16():
    history, mask, target = _history()
    with dtype_policy("mixed_float16"):
        layer = TargetAttention(hidden_units=8)
        out = layer(tf.constant(history), tf.constant(mask), tf.constant(target))
    assert layer.compute_dtype == "float16"
    out = out.numpy().astype(np.float32)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[1], np.zeros(out.shape[1]))
    # All-masked in every row, with large embeddings: still zeros, not NaN.
    with dtype_policy("mixed_float16"):
        empty = layer(tf.constant(50 * history), tf.zeros(mask.shape, tf.bool), tf.constant(target)).numpy()
    np.testing.assert_array_equal(empty, np.zeros_like(empty))


def test_grouped_targets_give_each_pairs_output_without_repeating_the_history():
    """K candidates per user at once (serving) equal the same pairs one row each (training), also when
    the grouped call is the layer's first (it builds the kernel it splits)."""
    history, mask, _ = _history()
    rng = np.random.default_rng(3)
    targets = rng.normal(size=(4, 3, history.shape[-1])).astype(np.float32)
    layer = TargetAttention(hidden_units=8)
    grouped = layer(tf.constant(history), tf.constant(mask), tf.constant(targets)).numpy()
    assert grouped.shape == (4, 3, history.shape[-1] + 3)
    pairs = layer(tf.constant(np.repeat(history, 3, axis=0)), tf.constant(np.repeat(mask, 3, axis=0)),
                  tf.constant(targets.reshape(12, -1))).numpy()
    np.testing.assert_allclose(grouped.reshape(12, -1), pairs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(grouped[1], np.zeros_like(grouped[1]))  # the empty history


def test_target_attention_config_round_trip():
    history, mask, target = _history()
    layer = TargetAttention(hidden_units=7, name="attention")
    out = layer(tf.constant(history), tf.constant(mask), tf.constant(target)).numpy()
    config = layer.get_config()
    assert config["hidden_units"] == 7
    again = TargetAttention.from_config(config)
    again(tf.constant(history), tf.constant(mask), tf.constant(target))
    again.set_weights(layer.get_weights())
    np.testing.assert_allclose(again(tf.constant(history), tf.constant(mask), tf.constant(target)).numpy(), out,
                               rtol=1e-6, atol=1e-7)


# -- RankingHead ----------------------------------------------------------------------------------------------

def _features(rows=32, width=10, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32))


def test_ranking_head_calibration_is_identity_then_affine():
    tf.keras.utils.set_random_seed(0)
    head = RankingHead(cross_layers=1, hidden_units=(8,))
    x = _features()
    raw = head(x).numpy()
    x0 = head.normalization(x)
    manual = tf.squeeze(head.mlp(head.crosses[0](x0, x0)), axis=-1).numpy()
    np.testing.assert_allclose(raw, manual, rtol=1e-6, atol=1e-7)  # identity until set_calibration
    head.set_calibration(0.5, -1.25)
    np.testing.assert_allclose(head(x).numpy(), 0.5 * raw - 1.25, rtol=1e-6, atol=1e-6)
    assert float(head.calibration_scale) == 0.5 and float(head.calibration_bias) == -1.25


def test_ranking_head_set_calibration_refuses_non_positive_scale():
    head = RankingHead(cross_layers=0, hidden_units=(4,))
    head.set_calibration(2.0, 0.5)
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            head.set_calibration(scale, 0.0)
    with pytest.raises(ValueError):
        head.set_calibration(1.0, float("nan"))
    assert (float(head.calibration_scale), float(head.calibration_bias)) == (2.0, 0.5)  # unchanged
    with pytest.raises(ValueError):
        RankingHead(hidden_units=(4,), calibration=False).set_calibration(1.0, 0.0)


def test_ranking_head_calibration_weights_are_not_trainable():
    head = RankingHead(cross_layers=1, hidden_units=(4,))
    head(_features())
    trainable = {id(v) for v in head.trainable_variables}
    non_trainable = {id(v) for v in head.non_trainable_variables}
    for weight in (head.calibration_scale, head.calibration_bias):
        assert id(weight) not in trainable and id(weight) in non_trainable
    plain = RankingHead(cross_layers=1, hidden_units=(4,), calibration=False)
    plain(_features())
    assert not plain.non_trainable_variables and not hasattr(plain, "calibration_scale")


def test_ranking_head_config_dropout_and_l2():
    head = RankingHead(cross_layers=1, hidden_units=(8, 4), dropout=0.25, l2=1e-3, calibration=True)
    config = head.get_config()
    assert (config["dropout"], config["l2"], config["hidden_units"], config["cross_layers"], config["calibration"]) == (
        0.25, 1e-3, [8, 4], 1, True)
    assert RankingHead.from_config(config).get_config() == config
    x = _features()
    head(x)
    # l2 * sum of squares of every kernel: the cross layer's and the MLP's (two hidden layers and the output).
    kernels = [v for v in head.trainable_variables if "kernel" in v.name]
    assert len(kernels) == 4
    expected = 1e-3 * sum(float(tf.reduce_sum(tf.square(v))) for v in kernels)
    assert float(tf.add_n(head.losses)) == pytest.approx(expected, rel=1e-5)
    plain = RankingHead(cross_layers=1, hidden_units=(8, 4))
    plain(x)
    assert not plain.losses
    # Dropout works in training only.
    np.testing.assert_array_equal(head(x, training=False).numpy(), head(x, training=False).numpy())
    assert not np.allclose(head(x, training=True).numpy(), head(x, training=False).numpy())


# -- Platt scaling --------------------------------------------------------------------------------------------

def test_fit_platt_recovers_known_parameters():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, 20000)
    y = (rng.random(20000) < _sigmoid(0.7 * z - 1.2)).astype(np.int64)
    scale, bias = fit_platt(z, y)
    assert scale == pytest.approx(0.7, abs=0.05)
    assert bias == pytest.approx(-1.2, abs=0.05)


def test_fit_platt_refuses_bad_labels():
    z = np.linspace(-2, 2, 50)
    for labels in (np.zeros(50), np.ones(50)):
        with pytest.raises(ValueError):
            fit_platt(z, labels)
    with pytest.raises(ValueError):
        fit_platt(z[:1], np.ones(1))
    with pytest.raises(ValueError):  # scores running against the clicks
        fit_platt(z, (z < 0).astype(float))


@pytest.fixture(scope="module")
def trained(toy):
    """A small model trained two epochs; tests may change its calibration (a monotone map) only."""
    catalog, impressions = toy
    return small_model(catalog, impressions, epochs=2)


def _click_probability(model, impressions):
    return np.concatenate([model(batch, training=False)["click_probability"].numpy()
                           for batch in tf.data.Dataset.from_tensor_slices(impressions).batch(256)])


def test_calibrate_clicks_lowers_the_logloss_and_keeps_the_auc(toy, trained):
    _, impressions = toy
    labels = impressions["clicked"].astype(np.float64)
    data = tf.data.Dataset.from_tensor_slices(impressions).batch(256)
    trained.ranking_head.set_calibration(1.0, 0.0)
    before = _click_probability(trained, impressions)
    result = calibrate_clicks(trained, data)
    after = _click_probability(trained, impressions)
    assert result["rows"] == len(labels)
    assert result["logloss_before"] == pytest.approx(logloss(labels, before), abs=1e-5)
    assert logloss(labels, after) <= logloss(labels, before) + 1e-9
    assert result["logloss_after"] <= result["logloss_before"] + 1e-9
    assert logloss(labels, after) == pytest.approx(result["logloss_after"], abs=1e-5)
    assert float(trained.ranking_head.calibration_scale) == pytest.approx(result["scale"], rel=1e-6)
    assert float(trained.ranking_head.calibration_bias) == pytest.approx(result["bias"], rel=1e-6, abs=1e-6)
    assert auc(labels, after) == pytest.approx(auc(labels, before), abs=1e-4)
    # Fitting again starts from the raw logits, so it gives the same values.
    again = calibrate_clicks(trained, data)
    assert again["scale"] == pytest.approx(result["scale"], rel=1e-6)
    assert again["bias"] == pytest.approx(result["bias"], rel=1e-6, abs=1e-6)


def test_calibrate_clicks_refuses_one_class_data(toy, trained):
    _, impressions = toy
    scale, bias = float(trained.ranking_head.calibration_scale), float(trained.ranking_head.calibration_bias)
    no_clicks = dict(impressions, clicked=np.zeros_like(impressions["clicked"]))
    with pytest.raises(ConfigError):
        calibrate_clicks(trained, tf.data.Dataset.from_tensor_slices(no_clicks).batch(256))
    trained.ranking_head.set_calibration(scale, bias)  # calibrate_clicks reset it before refusing


def test_calibrate_clicks_needs_calibration_weights(toy):
    catalog, impressions = toy
    model = small_model(catalog, impressions, ranking_calibration=False)
    with pytest.raises(ConfigError):
        calibrate_clicks(model, tf.data.Dataset.from_tensor_slices(impressions).batch(256))


# -- VideoRecModel: ranking-only training, ranking the catalog ------------------------------------------------

def test_ranking_only_training_changes_only_the_ranking_variables(toy):
    catalog, impressions = toy
    model = small_model(catalog, impressions, epochs=1)
    metric_variables = {id(v) for metric in model.metrics for v in metric.variables}
    ranking = {id(v) for v in model.ranking_variables}
    assert ranking
    before = {id(v): (v.name, v.numpy().copy()) for v in model.variables if id(v) not in metric_variables}
    model.trained_heads = "ranking"
    model.make_train_function(force=True)
    model.fit(tf.data.Dataset.from_tensor_slices(impressions).batch(256), epochs=1, verbose=0)
    changed = {key for key, v in ((id(v), v) for v in model.variables) if key in before
               and not np.array_equal(v.numpy(), before[key][1])}
    assert changed - ranking == set(), sorted(before[key][0] for key in changed - ranking)
    assert ranking - changed == set(), sorted(v.name for v in model.ranking_variables if id(v) not in changed)


def _pairs(impressions, catalog, users, rows):
    """Features of (impression row users[i], catalog row rows[i, j]) pairs, flattened row-major."""
    k = rows.shape[1]
    features = {name: np.repeat(impressions[name][users], k, axis=0)
                for name in ("user_id", "history", "hour", "device")}
    for name, values in catalog.items():
        features[name] = values[rows.reshape(-1)]
    return {name: tf.constant(value) for name, value in features.items()}


def test_rank_candidates_matches_rank_logits(toy, trained):
    catalog, impressions = toy
    rng = np.random.default_rng(0)
    users = rng.choice(len(impressions["user_id"]), 12, replace=False)
    rows = rng.integers(0, len(catalog["video_id"]), (12, 5))
    query_features = {name: tf.constant(impressions[name][users]) for name in trained.query_feature_names}
    query = trained.encode_queries(query_features, training=False)
    parts = trained.encode_catalog(catalog)
    parts.pop("embedding")
    ranked = trained.rank_candidates(query, parts, tf.constant(rows)).numpy()
    direct = trained.rank_logits(_pairs(impressions, catalog, users, rows), training=False).numpy()
    assert ranked.shape == (12, 5)
    np.testing.assert_allclose(ranked.reshape(-1), direct, rtol=1e-5, atol=1e-5)
    assert np.ptp(direct) > 1e-3  # the logits are not all one value


# -- served lists ---------------------------------------------------------------------------------------------

def test_served_lists_retrieve_then_rank(toy, trained):
    catalog, impressions = toy
    k, n, users = 10, 4, 40
    features = {name: impressions[name][:users] for name in trained.query_feature_names}
    retrieved, served = served_lists(trained, catalog, k=k, n=n)(features)
    assert retrieved.shape == served.shape == (users, n)

    query = trained.embed_queries({name: tf.constant(v) for name, v in features.items()}, training=False).numpy()
    videos = trained.embed_videos({name: tf.constant(catalog[name]) for name in trained.video_feature_names},
                                  training=False).numpy()
    top_k = np.argsort(-(query @ videos.T), axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(retrieved, top_k[:, :n])

    parts = trained.encode_catalog(catalog)
    parts.pop("embedding")
    encoded = trained.encode_queries({name: tf.constant(v) for name, v in features.items()}, training=False)
    logits = trained.rank_candidates(encoded, parts, tf.constant(top_k)).numpy()
    for u in range(users):
        assert len(set(served[u])) == n and set(served[u]) <= set(top_k[u])
        served_logits = logits[u][[list(top_k[u]).index(r) for r in served[u]]]
        assert np.all(np.diff(served_logits) <= 1e-6)
        np.testing.assert_allclose(served_logits, np.sort(logits[u])[::-1][:n], rtol=1e-5, atol=1e-6)
    assert (served != retrieved).any()  # ranking re-orders something


def test_served_lists_in_chunks_equal_one_pass(toy, trained):
    catalog, impressions = toy
    features = {name: impressions[name][:25] for name in trained.query_feature_names}
    whole = served_lists(trained, catalog, k=8, n=3)(features)
    chunked = served_lists(trained, catalog, k=8, n=3, max_scores=7 * len(catalog["video_id"]))(features)
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)


def test_served_lists_of_a_retrieval_only_model_is_none():
    catalog = {"video_id": np.array(["a", "b", "c"], object)}
    assert served_lists(object(), catalog) is None

    class RetrievalOnly:  # has some of the stages, not serve_candidates
        def encode_catalog(self, catalog):
            raise AssertionError("not called")

        def encode_queries(self, features, training=None):
            raise AssertionError("not called")

    assert served_lists(RetrievalOnly(), catalog) is None


def test_served_lists_of_a_model_with_its_own_lists():
    catalog = {"video_id": np.array(["a", "b", "c"], object)}

    class Exported:
        def served_lists(self, features):
            return np.array([[b"b", b"a"], [b"c", b"zzz"]], object), np.array([["a", "c"], ["zzz", "b"]], object)

    retrieved, served = served_lists(Exported(), catalog)({})
    np.testing.assert_array_equal(retrieved, [[1, 0], [2, -1]])
    np.testing.assert_array_equal(served, [[0, 2], [-1, 1]])


def test_hit_rate():
    lists = np.array([[1, 2], [3, 4], [5, 6]])
    assert hit_rate(lists, np.array([2, 5, 6])) == pytest.approx(2 / 3)
    assert hit_rate(lists, np.array([[0], [3], [-1]])) == pytest.approx(1 / 3)
    assert math.isnan(hit_rate(np.zeros((0, 2)), np.zeros(0)))


def test_count_tables_are_exported_and_follow_a_re_adapt(toy, tmp_path):
    """The counts live in the exported SavedModel as variables, and re-adapting on other data replaces them."""
    from tfrec_video.serving.export import export_saved_model

    catalog, impressions = toy
    model = small_model(catalog, impressions)
    model({k: v[:8] for k, v in impressions.items()})  # builds the tables
    table = model.video_click_counts.table.numpy()
    vocab = model.vocabularies
    rows = 1 + model.config.video_oov_buckets  # the mask row and the OOV buckets come first, at zero
    np.testing.assert_array_equal(table[rows:, 0], vocab.video_counts)
    np.testing.assert_array_equal(table[rows:, 1], vocab.video_clicks)
    assert not table[:rows].any()

    version = export_saved_model(model, catalog, str(tmp_path), k=10, n=5)
    reader = tf.train.load_checkpoint(f"{version}/variables/variables")
    exported = [reader.get_tensor(name) for name, shape in reader.get_variable_to_shape_map().items()
                if list(shape) == list(table.shape)]
    assert any(np.array_equal(v, table) for v in exported)

    # Re-adapting on the first half of the rows counts only those rows.
    half = {k: v[: len(v) // 2] for k, v in impressions.items()}
    again = small_model(catalog, half)
    again({k: v[:8] for k, v in half.items()})
    ids = np.asarray(half["video_id"]).astype(str)
    expected = [int(half["clicked"][ids == v].sum()) for v in again.vocabularies.video_ids]
    np.testing.assert_array_equal(again.video_click_counts.table.numpy()[rows:, 1], expected)
    assert sum(expected) < sum(vocab.video_clicks)


def test_click_calibration_that_cannot_be_fitted_warns_and_keeps_the_model(monkeypatch):
    from tfrec_video.errors import ConfigError
    from tfrec_video.training import calibration as calibration_module

    def cannot(model, data, steps=None):
        raise ConfigError("calibrate_clicks: cannot calibrate on this validation data: the logits do not rank")

    monkeypatch.setattr(calibration_module, "calibrate_clicks", cannot)
    callback = calibration_module.ClickCalibration(validation_data=None)
    with pytest.warns(UserWarning, match="not calibrated: calibrate_clicks: cannot calibrate"):
        callback.on_train_end()
    assert callback.result == {"skipped": "calibrate_clicks: cannot calibrate on this validation data: the logits "
                                          "do not rank"}


def test_an_unseen_videos_popularity_in_the_served_order_is_the_median_not_the_least():
    catalog, impressions = toy_data(n_rows=600, seed=3)
    model = small_model(catalog, impressions)
    known = model.vocabularies.video_ids
    probs = model.vocabularies.candidate_sampling_probabilities()
    ids = tf.constant([known[0], known[-1], "a-video-published-after-training"])
    popularity = model.encode_videos({name: _video_features(catalog, ids)[name]
                                      for name in model.video_feature_names})["log_popularity"].numpy()
    np.testing.assert_allclose(popularity[:2], np.log([probs[0], probs[-1]]), rtol=1e-5)
    # A new video is typical until its counts say otherwise: the blend must not sink every cold video.
    assert popularity[2] == pytest.approx(float(np.median(np.log(probs))), rel=1e-5)
    assert popularity[2] > np.log(probs.min())


def _video_features(catalog, ids):
    rows = [0, 1, 2]  # content of three catalog videos; only the ids differ in what is looked up
    return {name: tf.constant(np.asarray(values)[rows]) if name != "video_id" else ids
            for name, values in catalog.items()}
