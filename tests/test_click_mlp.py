"""The ClickMLP ranking baseline: what it learns, early stopping, config round trip, OOV ids, optional inputs."""

import numpy as np
import pytest
from tfrec_video.errors import ConfigError, DataValidationError  # before TensorFlow: tf.keras must be Keras 2
import tensorflow as tf
from tfrec_video.evaluation.metrics import auc, logloss
from tfrec_video.features import Vocabularies, adapt
from tfrec_video.models import ClickMLP, fit_click_mlp_baseline

FULL = ["user_id", "video_id", "history", "hour", "device", "category", "duration_s"]
# Sized for a few thousand rows: the defaults are sized for the built-in dataset's 150k.
FIT = dict(batch_size=128, learning_rate=0.01, embedding_dim=8, hidden_units=(16,), l2=0.01, epochs=6, patience=1)


def planted(n_rows=4000, seed=0, n_users=40, n_videos=20):
    """(catalog, impressions): clicks depend on user group x video group only.

    Every user is shown both groups' videos alike and every video is shown to both
    user groups alike, so each user's and each video's click rate is the same
    (about 0.45): a model that learns per-user or per-video rates, or any single
    feature, scores AUC 0.5. Only the user x video interaction tells clicks apart.
    """
    rng = np.random.default_rng(seed)
    users, videos = rng.integers(0, n_users, n_rows), rng.integers(0, n_videos, n_rows)
    match = (users % 2) == (videos % 2)
    clicked = (rng.random(n_rows) < np.where(match, 0.8, 0.1)).astype(np.int64)
    video_ids = np.array([f"v{i}" for i in range(n_videos)], object)
    catalog = {"video_id": video_ids, "title": np.array([f"video {i}" for i in range(n_videos)], object),
               # Each category holds videos of both groups, so it does not reveal the group.
               "category": np.array(["abcd"[i * 4 // n_videos] for i in range(n_videos)], object),
               "duration_s": rng.uniform(10, 600, n_videos).astype(np.float32)}
    history = np.full((n_rows, 3), "", object)
    history[:, 0] = video_ids[rng.integers(0, n_videos, n_rows)]  # random: carries no signal either
    impressions = {"user_id": np.array([f"u{u}" for u in users], object), "video_id": video_ids[videos],
                   "history": history, "hour": rng.integers(0, 24, n_rows).astype(np.int64),
                   "device": rng.choice(np.array(["phone", "tv"], object), n_rows), "clicked": clicked,
                   "category": catalog["category"][videos], "duration_s": catalog["duration_s"][videos]}
    return catalog, impressions


def rows(columns, keep=slice(None)):
    return tf.data.Dataset.from_tensor_slices({k: v[keep] for k, v in columns.items()})


def probabilities(model, columns):
    return model.predict_click_probability({k: tf.constant(v) for k, v in columns.items()}).numpy()


@pytest.fixture(scope="module")
def trained():
    catalog, train = planted(seed=0)
    _, validation = planted(n_rows=1000, seed=1)
    vocabularies = adapt(catalog, {k: v for k, v in train.items() if k not in ("category", "duration_s")},
                         title_vocabulary_size=40)
    fit = fit_click_mlp_baseline(rows(train), rows(validation), vocabularies, **FIT)
    return catalog, vocabularies, fit


def test_learns_the_planted_user_video_interaction(trained):
    catalog, vocabularies, fit = trained
    assert fit.model.feature_names == FULL
    _, train = planted(seed=0)
    _, test = planted(n_rows=2000, seed=2)
    labels = test["clicked"]
    # No single id carries the signal: training click rates per user or per video do not rank the test rows.
    for name in ("user_id", "video_id"):
        rate = {i: train["clicked"][train[name] == i].mean() for i in set(train[name])}
        assert abs(auc(labels, np.array([rate[i] for i in test[name]])) - 0.5) < 0.05
    p = probabilities(fit.model, test)
    assert p.shape == (2000,) and np.all((p > 0) & (p < 1))
    assert auc(labels, p) > 0.8  # the true probabilities score 0.85
    assert logloss(labels, p) < 0.5  # a constant 0.45 scores 0.69


def test_early_stopping_restores_the_best_epoch():
    catalog, train = planted(n_rows=2000, seed=3)
    _, validation = planted(n_rows=500, seed=4)
    train["clicked"] = np.random.default_rng(5).permutation(train["clicked"])  # noise: it can only memorise
    vocabularies = adapt(catalog, train, title_vocabulary_size=40)
    fit = fit_click_mlp_baseline(rows(train), rows(validation), vocabularies, batch_size=64, learning_rate=0.05,
                                 embedding_dim=16, hidden_units=(64,), dropout=0.0, l2=0.0, epochs=8, patience=2)
    history = fit.history["val_logloss"]
    best = int(np.argmin(history))
    assert fit.best_epoch == best + 1 and fit.validation["logloss"] == min(history)
    assert fit.validation["auc"] == fit.history["val_auc"][best]
    assert len(history) == min(8, best + 3)  # stopped `patience` epochs after the best one
    assert history[-1] > min(history) + 0.02, "memorising noise should have made the last epoch worse"
    # The model holds the best epoch's weights, not the last epoch's.
    restored = logloss(validation["clicked"], probabilities(fit.model, validation))
    assert restored == pytest.approx(min(history), abs=1e-4)


def test_config_round_trip(trained):
    model = trained[2].model
    again = ClickMLP.from_config(model.get_config())
    assert again.get_config() == model.get_config()
    assert model.get_config()["user_ids"] == trained[1].user_ids
    _, test = planted(n_rows=50, seed=6)
    probabilities(again, test)  # build
    again.set_weights(model.get_weights())
    np.testing.assert_array_equal(probabilities(again, test), probabilities(model, test))


def test_unknown_ids_and_values_at_predict_time(trained):
    model = trained[2].model
    unknown = {"user_id": np.array(["new-user", "other-new-user", "u1"], object),
               "video_id": np.array(["new-video", "v3", "other-new-video"], object),
               "history": np.array([["new-video", "", ""], ["", "", ""], ["v1", "yet-another", ""]], object),
               "hour": np.array([-1, 24, 99], np.int64), "device": np.array(["fridge", "tv", ""], object),
               "category": np.array(["new-category", "a", ""], object),
               "duration_s": np.array([0.0, 1e6, 30.0], np.float32)}
    p = probabilities(model, unknown)
    assert p.shape == (3,) and np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
    index = model.user_lookup(tf.constant(["new-user", "other-new-user", "u1"])).numpy()
    assert 1 <= index[0] <= 4 and 1 <= index[1] <= 4 and index[2] > 4  # hashed OOV buckets, then the vocabulary
    buckets = model.video_lookup(tf.constant([f"new-{i}" for i in range(20)])).numpy()
    assert set(buckets.tolist()) == {1, 2, 3, 4}  # unknown ids spread over the buckets, not one shared row


def test_extra_features_are_ignored(trained):
    model = trained[2].model
    _, test = planted(n_rows=20, seed=7)
    extra = dict(test, title=np.array(["anything"] * 20, object), image_embedding=np.ones([20, 4], np.float32))
    np.testing.assert_array_equal(probabilities(model, extra), probabilities(model, test))


def test_absent_optional_inputs_build_a_smaller_model(trained):
    full = trained[2].model
    vocabularies = Vocabularies(user_ids=list(trained[1].user_ids), video_ids=list(trained[1].video_ids),
                                video_counts=list(trained[1].video_counts), title_tokens=[])
    bare = ClickMLP.from_vocabularies(vocabularies, embedding_dim=8, hidden_units=(16,))
    assert bare.feature_names == ["user_id", "video_id"]
    ids_only = {"user_id": np.array(["u1", "u2"], object), "video_id": np.array(["v1", "v2"], object)}
    assert probabilities(bare, ids_only).shape == (2,)  # needs nothing else
    assert bare.count_params() < full.count_params()
    layers = {layer.name for layer in bare.layers}
    assert not layers & {"hour_embedding", "device_embedding", "category_embedding"}
    with pytest.raises(KeyError):
        probabilities(full, ids_only)  # the full model does read its optional inputs


def test_two_runs_give_identical_weights():
    catalog, train = planted(n_rows=600, seed=8)
    vocabularies = adapt(catalog, train, title_vocabulary_size=40)
    options = dict(FIT, epochs=2, dropout=0.3)
    first = fit_click_mlp_baseline(rows(train), rows(train), vocabularies, **options).model.get_weights()
    second = fit_click_mlp_baseline(rows(train), rows(train), vocabularies, **options).model.get_weights()
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_and_data_are_named(trained):
    catalog, vocabularies, _ = trained
    _, train = planted(n_rows=50, seed=9)
    with pytest.raises(ConfigError, match="patience"):
        fit_click_mlp_baseline(rows(train), rows(train), vocabularies, patience=-1)
    with pytest.raises(ConfigError, match="hidden_units"):
        ClickMLP(["u"], ["v"], hidden_units=())
    no_label = {k: v for k, v in train.items() if k != "clicked"}
    with pytest.raises(DataValidationError, match="clicked"):
        fit_click_mlp_baseline(rows(no_label), rows(train), vocabularies)
    no_history = {k: v for k, v in train.items() if k != "history"}
    with pytest.raises(DataValidationError, match="history"):
        fit_click_mlp_baseline(rows(train), rows(no_history), vocabularies)
