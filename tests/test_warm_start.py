"""Warm start (`tfrec_video.training.warm_start`, `features.vocabulary_merge`): vocabulary merge with old
rows kept bit for bit, eviction, lineage, refusing an incompatible config, refreshed WordPiece and PCA."""

import dataclasses
import json
import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from toy import SMALL, SMALL_MODEL, toy_data
from tfrec_video.data.schema import impressions_schema
from tfrec_video.data.tables import read_table, write_table
from tfrec_video.errors import ConfigError
from tfrec_video.features.pca import fit_pca
from tfrec_video.features.vocabulary import Vocabularies
from tfrec_video.features.vocabulary_merge import merge_vocabularies
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.models.saving import dummy_batch, load_model, save_model
from tfrec_video.towers import PrincipalComponents
from tfrec_video.training import TrainingConfig, fit_model
from tfrec_video.training.warm_start import (WarmStartConfig, check_compatible, content_estimate, copy_weights,
                                             window_vocabularies, _remap_projection)

HISTORY = 5
CONFIG = ModelConfig(**SMALL)
COLUMNS = ["user_id", "history", "hour", "device", "video_id", "clicked"]


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    """A catalog, two impression windows (the second with new users and videos) and a model trained on the first."""
    root = tmp_path_factory.mktemp("warm")
    catalog, rows = toy_data(n_videos=150, n_users=60, n_rows=3600, history_length=HISTORY, seed=3)
    video = np.array([int(v[1:]) for v in rows["video_id"]])
    user = np.array([int(u[1:]) for u in rows["user_id"]])
    first = (np.arange(len(video)) < 1800) & (video < 110) & (user < 45)
    second = np.arange(len(video)) >= 1800
    schema = impressions_schema(HISTORY)
    for name, mask in (("w1", first), ("w2", second)):
        write_table({k: rows[k][mask] for k in COLUMNS}, str(root / name / "part-0.parquet"), schema)
    parent, _ = fit_model(catalog, str(root / "w1"), schema, CONFIG, TrainingConfig(batch_size=128, epochs=1),
                          verbose=0)
    save_model(parent, str(root / "m1"))
    return root, catalog, schema


def _child(windows, warm=WarmStartConfig(), config=CONFIG, catalog=None):
    """The warm-started model before any training step: `fit_model`'s own steps, without `fit`."""
    root, fixture_catalog, schema = windows
    catalog = fixture_catalog if catalog is None else catalog
    parent = load_model(str(root / "m1"))
    vocab, summary = window_vocabularies(parent.vocabularies, catalog, read_table(str(root / "w2"), schema),
                                         config, warm)
    child = VideoRecModel(config, vocab, catalog=catalog)
    child(dummy_batch(child), training=False)
    summary.update(copy_weights(parent, child, catalog, warm))
    return parent, child, summary


def _rows(layer, ids):
    return layer(tf.constant(np.asarray(ids, object)), training=False).numpy()


def test_old_ids_keep_their_rows_bit_for_bit_and_new_ids_start_where_the_parent_served_them(windows):
    parent, child, summary = _child(windows)
    old_videos, old_users = parent.vocabularies.video_ids, parent.vocabularies.user_ids
    assert summary["videos"]["kept"] == len(old_videos) and summary["videos"]["added"] > 0
    assert summary["users"]["kept"] == len(old_users) and summary["users"]["added"] > 0
    assert child.vocabularies.video_ids[:len(old_videos)] == old_videos  # old rows first, in their order
    np.testing.assert_array_equal(_rows(child.video_embedding, old_videos), _rows(parent.video_embedding, old_videos))
    np.testing.assert_array_equal(_rows(child.query_tower.user_embedding, old_users),
                                  _rows(parent.query_tower.user_embedding, old_users))
    for p, c in ((parent.query_tower.device_embedding, child.query_tower.device_embedding),
                 (parent.candidate_tower.category_embedding, child.candidate_tower.category_embedding)):
        np.testing.assert_array_equal(_rows(c, p.vocabulary), _rows(p, p.vocabulary))
    # A new user starts from the OOV bucket the parent served it from.
    new_users = [u for u in child.vocabularies.user_ids if u not in set(old_users)]
    np.testing.assert_array_equal(_rows(child.query_tower.user_embedding, new_users),
                                  _rows(parent.query_tower.user_embedding, new_users))
    # New videos start from the content estimate, not from their OOV bucket.
    new_videos = [v for v in child.vocabularies.video_ids if v not in set(old_videos)]
    assert summary["new_videos_from_content"] == len(new_videos)
    estimate = content_estimate(parent, windows[1], new_videos)
    np.testing.assert_allclose(_rows(child.video_embedding, new_videos), estimate, atol=1e-6)
    assert not np.allclose(estimate, _rows(parent.video_embedding, new_videos))
    # Every other weight is the parent's: the retrieval embeddings of known users and videos are unchanged.
    _, catalog, _ = windows
    batch = {k: v[:8] for k, v in dummy_batch(parent).items()}
    batch = dict(batch, user_id=tf.constant(np.asarray(old_users[:1], object)),
                 video_id=tf.constant(np.asarray(old_videos[:1], object)))
    for key in ("query_embedding", "video_embedding"):
        np.testing.assert_array_equal(child(batch)[key].numpy(), parent(batch)[key].numpy())


def test_new_videos_start_from_their_oov_bucket_when_asked(windows):
    parent, child, summary = _child(windows, WarmStartConfig(new_video_rows="oov"))
    new_videos = [v for v in child.vocabularies.video_ids if v not in set(parent.vocabularies.video_ids)]
    assert summary["new_videos_from_content"] == 0
    np.testing.assert_array_equal(_rows(child.video_embedding, new_videos), _rows(parent.video_embedding, new_videos))


def test_the_served_order_reads_the_accumulated_popularity_not_the_latest_windows(windows):
    # The logQ correction reads the window's counts; the served order's popularity must not: a video not shown
    # in the window would get log(0) there and sink to the bottom of every served list.
    _, child, _ = _child(windows)
    vocab, oov = child.vocabularies, 1 + CONFIG.video_oov_buckets
    counts = np.asarray(vocab.video_counts, np.float64)
    assert not np.array_equal(counts, vocab.video_window_counts)
    np.testing.assert_allclose(child._log_popularity.numpy()[oov:], np.log(counts / counts.sum()), rtol=1e-5)
    np.testing.assert_allclose(vocab.popularity(), counts / counts.sum(), rtol=1e-6)


def _vocab(users, videos, counts, last=None, window=0):
    return Vocabularies(user_ids=users, video_ids=videos, video_counts=counts, title_tokens=["[PAD]", "[UNK]"],
                        video_last_window=last, window=window)


def test_eviction_by_recency_keeps_the_newest_window_then_the_most_recently_seen():
    parent = _vocab(["u"], ["a", "b", "c", "d"], [9, 8, 7, 6], last=[0, 2, 1, 2], window=2)
    window = _vocab(["u"], ["e", "c"], [3, 1])
    merged, summary = merge_vocabularies(parent, window, max_videos=4)
    # Seen now: e, c (window 3). Then b and d (last seen in window 2), ties in parent order; a (window 0) goes.
    assert merged.video_ids == ["b", "c", "d", "e"]
    assert merged.video_last_window == [2, 3, 2, 3] and merged.window == 3
    assert merged.video_counts == [8, 8, 6, 3]  # accumulated
    # The logQ correction reads the window's counts alone: its batches are the window's.
    assert merged.video_window_counts == [0, 1, 0, 3]
    np.testing.assert_allclose(merged.candidate_sampling_probabilities(), [0, 0.25, 0, 0.75])
    assert summary["videos"] == {"kept": 3, "added": 1, "evicted": 1}
    merged, _ = merge_vocabularies(parent, window, max_videos=2)
    assert merged.video_ids == ["c", "e"]  # the window's own ids outrank every older one


def test_eviction_by_frequency_keeps_the_most_impressions_and_refreshed_counts_forget_the_parent():
    parent = _vocab(["u"], ["a", "b", "c"], [9, 2, 5])
    window = _vocab(["u"], ["d", "b"], [6, 4])
    merged, summary = merge_vocabularies(parent, window, max_videos=3, eviction="frequency")
    assert merged.video_ids == ["a", "b", "d"] and merged.video_counts == [9, 6, 6]  # c (5) goes
    assert summary["videos"]["evicted"] == 1
    merged, _ = merge_vocabularies(parent, window, max_videos=3, eviction="frequency", counts="refresh")
    assert merged.video_ids == ["a", "b", "d"] and merged.video_counts == [0, 4, 6]  # a and c count 0: ties by id
    with pytest.raises(ConfigError, match="eviction"):
        merge_vocabularies(parent, window, eviction="oldest")
    # A parent without impression counts cannot be ranked by them: an error, not eviction by id order.
    uncounted = dataclasses.replace(parent, video_counts=None)
    with pytest.raises(ConfigError, match=r"eviction='frequency' ranks videos by `video_counts`, which the parent"):
        merge_vocabularies(uncounted, window, max_videos=3, eviction="frequency")


def test_an_evicted_video_falls_back_to_the_oov_buckets(windows):
    parent, child, summary = _child(windows, config=dataclasses.replace(CONFIG, max_videos=100))
    assert len(child.vocabularies.video_ids) == 100 and summary["videos"]["evicted"] > 0
    gone = sorted(set(parent.vocabularies.video_ids) - set(child.vocabularies.video_ids))
    index = child.video_embedding.lookup(tf.constant(np.asarray(gone, object))).numpy()
    assert (index <= child.video_embedding.num_oov_buckets).all()
    kept = [v for v in parent.vocabularies.video_ids if v in set(child.vocabularies.video_ids)]
    np.testing.assert_array_equal(_rows(child.video_embedding, kept), _rows(parent.video_embedding, kept))


def test_lineage_is_recorded_through_generations_and_saved(windows, tmp_path):
    root, catalog, schema = windows
    scratch = json.loads((root / "m1" / "model.json").read_text())["lineage"]
    assert scratch["generation"] == 0 and scratch["parent"] is None and len(scratch["windows"]) == 1
    assert scratch["windows"][0]["train"] == [str(root / "w1")] and not scratch["windows"][0]["warm_started"]
    model, history = fit_model(catalog, str(root / "w2"), schema, dataclasses.replace(CONFIG, learning_rate=1e-3),
                               TrainingConfig(batch_size=128, epochs=1), verbose=0, warm_start_from=str(root / "m1"))
    assert history.warm_start["videos"]["added"] > 0 and history.warm_start["copied"] > 0
    save_model(model, str(tmp_path / "m2"))
    lineage = load_model(str(tmp_path / "m2")).lineage
    assert lineage["generation"] == 1
    assert lineage["parent"] == {"path": str(root / "m1"), "model_id": scratch["model_id"]}
    assert [w["train"] for w in lineage["windows"]] == [[str(root / "w1")], [str(root / "w2")]]
    assert lineage["windows"][1]["warm_started"] and lineage["model_id"] != scratch["model_id"]
    assert lineage["warm_start"]["title_vocabulary"] == "keep" and lineage["warm_start"]["counts"] == "accumulate"
    # The kept WordPiece vocabulary is the parent's, not one learned again.
    assert model.vocabularies.title_tokens == load_model(str(root / "m1")).vocabularies.title_tokens


def test_a_warm_start_across_an_incompatible_config_is_refused_naming_the_field(windows):
    root, catalog, schema = windows
    with pytest.raises(ConfigError, match=r"ModelConfig\.embedding_dim is 32 .* trained with 16"):
        fit_model(catalog, str(root / "w2"), schema, dataclasses.replace(CONFIG, embedding_dim=32),
                  TrainingConfig(batch_size=128, epochs=1), verbose=0, warm_start_from=str(root / "m1"))
    with pytest.raises(ConfigError, match=r"ModelConfig\.ranking_hidden_units"):
        check_compatible(CONFIG, dataclasses.replace(CONFIG, ranking_hidden_units=(8,)))
    check_compatible(CONFIG, dataclasses.replace(CONFIG, learning_rate=1e-4, ranking_dropout=0.1, max_videos=10))
    # The media projections' width, and a title vocabulary size that a kept vocabulary would silently ignore.
    with pytest.raises(ConfigError, match=r"ModelConfig\.media_components"):
        check_compatible(CONFIG, dataclasses.replace(CONFIG, media_components=CONFIG.media_components + 1))
    bigger = dataclasses.replace(CONFIG, title_vocabulary_size=CONFIG.title_vocabulary_size * 2)
    with pytest.raises(ConfigError, match=r"ModelConfig\.title_vocabulary_size"):
        check_compatible(CONFIG, bigger)
    check_compatible(CONFIG, bigger, warm=WarmStartConfig(title_vocabulary="refresh"))
    # Data that feeds the model other inputs is refused too, naming the feature.
    parent = load_model(str(root / "m1"))
    impressions = {k: v for k, v in read_table(str(root / "w2"), schema, validate=False).batch(4096)
                   .get_single_element().items() if k != "device"}
    with pytest.raises(ConfigError, match="'device'"):
        window_vocabularies(parent.vocabularies, catalog, impressions, CONFIG, WarmStartConfig())


def test_refreshed_title_vocabulary_moves_token_rows_by_token(windows):
    catalog = dict(windows[1])
    titles = catalog["title"].copy()
    titles[110:] = [f"skateboard kickflip {t}" for t in titles[110:]]  # the new videos bring new words
    catalog["title"] = titles
    parent, child, _ = _child(windows, WarmStartConfig(title_vocabulary="refresh"), catalog=catalog)
    old, new = parent.candidate_tower.title_encoder, child.candidate_tower.title_encoder
    assert "skateboard" in new.vocabulary and "skateboard" not in old.vocabulary
    before = dict(zip(old.vocabulary, old.token_embedding.embeddings.numpy()))
    rows = new.token_embedding.embeddings.numpy()
    for i, token in enumerate(new.vocabulary):
        np.testing.assert_array_equal(rows[i], before.get(token, before["[UNK]"]))


def test_a_refreshed_pca_keeps_the_media_projection_output_on_the_shared_subspace():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 3)))[0]
    old_x = rng.normal(size=(200, 3)) * [3, 2, 1] @ basis.T + 1.0
    new_x = rng.normal(size=(300, 3)) * [1, 3, 2] @ basis.T - 2.0  # same subspace, other spread and mean
    old, new = PrincipalComponents(**fit_pca(old_x, 3)), PrincipalComponents(**fit_pca(new_x, 3))
    projection = tf.keras.layers.Dense(4)
    before = projection(old(new_x)).numpy()
    _remap_projection(old, new, projection)
    np.testing.assert_allclose(projection(new(new_x)).numpy(), before, atol=1e-4)


def test_the_run_config_reads_warm_start_and_resolves_its_path(tmp_path):
    from tfrec_video.training.run_config import load_run_config

    (tmp_path / "parent").mkdir()
    path = tmp_path / "run.yaml"
    path.write_text("data: {builtin: tiny}\nwarm_start_from: parent\nwarm_start: {counts: refresh}\n")
    config = load_run_config(str(path))
    assert config.warm_start_from == str(tmp_path / "parent") and config.warm_start.counts == "refresh"
    path.write_text("data: {builtin: tiny}\nwarm_start_from: missing\n")
    with pytest.raises(ConfigError, match="warm_start_from"):
        load_run_config(str(path))
    path.write_text("data: {builtin: tiny}\nwarm_start: {pca: sometimes}\n")
    with pytest.raises(ConfigError, match="pca"):
        load_run_config(str(path))
    assert os.path.isdir(tmp_path / "parent")


# -- the daily job through the CLI ----------------------------------------------------------------

_DAILY = {"days": 3, "window_days": 8, "n_videos": 300, "n_users": 300, "impressions_per_user": 20.0,
          "test_fraction": 0.375, "validation_fraction": 0.125, "media_embeddings": False}


def _daily_run(tmp_path, days, output):
    return {"output_dir": output, "data": {"builtin": "daily", "builtin_dir": str(tmp_path / "cache"),
                                           "builtin_options": _DAILY, "days": days},
            "model": SMALL_MODEL, "training": {"epochs": 1, "batch_size": 128},
            "callbacks": {"recall_k": 10}, "export": {"enabled": False}}


@pytest.mark.slow
def test_a_daily_job_trains_on_its_days_tests_on_the_next_and_warm_starts_through_the_cli(tmp_path):
    import yaml

    from tfrec_video.cli import main

    first = tmp_path / "day4.yaml"
    first.write_text(yaml.safe_dump(_daily_run(tmp_path, [0, 4], "day4")))
    assert main(["train", "--config", str(first), "--verbose", "0"]) == 0
    second = tmp_path / "day5.yaml"
    second.write_text(yaml.safe_dump(_daily_run(tmp_path, 5, "day5")))
    assert main(["train", "--config", str(second), "--verbose", "0",
                 "--warm-start-from", str(tmp_path / "day4" / "model")]) == 0
    parent = json.loads((tmp_path / "day4" / "report.json").read_text())
    child = json.loads((tmp_path / "day5" / "report.json").read_text())
    assert parent["training"]["warm_start"] is None and child["training"]["warm_start"]["users"]["kept"] > 0
    assert child["training"]["lineage"]["warm_start"]["counts"] == "accumulate"
    assert child["training"]["lineage"]["parent"]["model_id"] == parent["training"]["lineage"]["model_id"]
    # Trained on the days asked for, tested on the day after: the day tables, not the splits, with the day's oracle.
    from tfrec_video.data.schema import impressions_schema
    from tfrec_video.data.tables import read_table_numpy
    from tfrec_video.datasets import GroundTruth
    from tfrec_video.datasets.builtin import day_files
    from tfrec_video.evaluation.metrics import auc

    cache = str(next(p for p in (tmp_path / "cache").iterdir() if p.is_dir()))
    assert parent["training"]["lineage"]["windows"][-1]["train"] == day_files(cache, 0, 4)
    assert child["training"]["lineage"]["windows"][-1]["train"] == day_files(cache, 5)
    day6 = read_table_numpy(day_files(cache, 6), impressions_schema(20, day=True))
    assert child["counts"]["test_impressions"] == len(day6["clicked"]) and set(day6["day"]) == {6}
    truth = GroundTruth.load(cache)
    np.testing.assert_array_equal(truth.with_test_day(6).test_clicked(), day6["clicked"])
    assert child["ranking"]["oracle_auc"] == pytest.approx(auc(day6["clicked"], truth.day_click_prob(6)))


def test_data_days_needs_a_daily_built_in_dataset_and_days_inside_its_window():
    from tfrec_video.training.run_config import DataConfig

    assert DataConfig(builtin="daily", builtin_options=_DAILY, days=[2, 4]).days == (2, 4)
    assert DataConfig(builtin="daily", days=3).days == (3, 3)
    with pytest.raises(ConfigError, match=r"data.days selects days of the built-in daily service"):
        DataConfig(builtin="tiny", days=3)
    with pytest.raises(ConfigError, match=r"window has days 0 to 7, got \[6, 8\]"):
        DataConfig(builtin="daily", builtin_options=_DAILY, days=[6, 8])
    with pytest.raises(ConfigError, match=r"data.days must be a day .* or \[first, last\]"):
        DataConfig(builtin="daily", days=[4, 2])


# -- the ranking head's learning rate -------------------------------------------------------------


def _steps(optimizer, variables, gradients):
    for step in gradients:
        optimizer.apply_gradients(zip(step, variables))
    return [v.numpy() for v in variables]


def test_scaled_adam_steps_the_scaled_variables_by_exactly_that_fraction_of_adam():
    from tfrec_video.training.scaled_adam import ScaledAdam

    rng = np.random.default_rng(0)
    grads = [[tf.constant(rng.normal(size=(3, 2)), tf.float32),
              tf.IndexedSlices(tf.constant(rng.normal(size=(2, 2)), tf.float32), tf.constant([0, 2]),
                               tf.constant([4, 2]))] for _ in range(5)]
    start = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=(4, 2)).astype(np.float32)]
    plain = [tf.Variable(x) for x in start]
    after_plain = _steps(tf.keras.optimizers.Adam(0.01), plain, grads)
    # Scaling by 1 is Adam; scaling the embedding-like variable by 0.25 scales its total step by 0.25 (Adam's
    # moments do not depend on the rate), and leaves the other variable exactly as Adam moves it.
    for scale in (1.0, 0.25):
        scaled = [tf.Variable(x) for x in start]
        optimizer = ScaledAdam(0.01, scaled_variables=[scaled[1]], scale=scale)
        after = _steps(optimizer, scaled, grads)
        np.testing.assert_allclose(after[0], after_plain[0], rtol=1e-6)
        np.testing.assert_allclose(after[1] - start[1], scale * (after_plain[1] - start[1]), rtol=1e-4, atol=1e-6)
    assert optimizer.get_config()["scale"] == 0.25
    with pytest.raises(ConfigError, match=r"scale must be in \(0, 1\], got 0"):
        ScaledAdam(0.01, scale=0)


def test_scaled_adam_finds_a_variable_mirrored_by_a_strategy():
    from tfrec_video.training.scaled_adam import ScaledAdam

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        fast, slow = tf.Variable([1.0]), tf.Variable([1.0])
        optimizer = ScaledAdam(0.1, scaled_variables=[slow], scale=0.5)

    @tf.function
    def step():
        strategy.run(lambda: optimizer.apply_gradients([(tf.constant([1.0]), fast), (tf.constant([1.0]), slow)]))

    step()
    np.testing.assert_allclose([1.0 - fast.numpy()[0], 1.0 - slow.numpy()[0]], [0.1, 0.05], rtol=1e-4)


def test_a_warm_start_trains_the_ranking_head_at_its_fraction_of_the_rate(windows):
    from tfrec_video.training.scaled_adam import ScaledAdam

    root, catalog, schema = windows
    child, _ = fit_model(catalog, str(root / "w2"), schema, CONFIG, TrainingConfig(batch_size=128, epochs=1),
                         verbose=0, warm_start_from=str(root / "m1"),
                         warm_start=WarmStartConfig(ranking_learning_rate=0.25))
    assert isinstance(child.optimizer, ScaledAdam) and child.optimizer.scale == 0.25
    assert {child.optimizer._var_key(v) for v in child.ranking_variables} == child.optimizer._scaled_keys
    assert child.lineage["warm_start"]["ranking_learning_rate"] == 0.25
    with pytest.raises(ConfigError, match=r"ranking_learning_rate must be a fraction in \(0, 1\], got 1.5"):
        WarmStartConfig(ranking_learning_rate=1.5)
