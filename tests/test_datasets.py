"""Tests of the built-in dataset: determinism, the planted truth, splits, media, formats, caching."""

import argparse
import collections
import csv
import filecmp
import json
import os
import re

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfrec_video.cli.generate_data import add_cli, summary
from tfrec_video.data import read_table, read_table_numpy
from tfrec_video.data.pipeline import builtin_splits
from tfrec_video.datasets import (
    FILLER_WORDS,
    TOPICS,
    BuiltinConfig,
    GroundTruth,
    auc,
    default_cache_dir,
    ensure_builtin,
    generate,
    load_manifest,
    oracle_auc,
)
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.datasets.builtin import media as media_lib
from tfrec_video.errors import ConfigError

CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny dataset (parquet), generated once for the module."""
    path = str(tmp_path_factory.mktemp("builtin") / "tiny")
    generate(path, BuiltinConfig.tiny(), progress=False)
    return path


@pytest.fixture(scope="module")
def tables(tiny):
    m = load_manifest(tiny)
    cfg = BuiltinConfig.from_dict(m["config"])
    imp = impressions_schema(cfg.history_length)
    return {
        "manifest": m,
        "config": cfg,
        "catalog": read_table_numpy(m["files"]["catalog"], catalog_schema(cfg.image_dim, cfg.audio_dim)),
        "train": read_table_numpy(m["files"]["train"], imp),
        "validation": read_table_numpy(m["files"]["validation"], imp),
        "test": read_table_numpy(m["files"]["test"], imp),
        "truth": GroundTruth.load(tiny),
    }


def _all_files(root):
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.relpath(os.path.join(d, f), root) for f in files]
    return sorted(out)


def _sorted_rows(columns):   # the rows of a table as sorted tuples: an order-free comparison
    return sorted(zip(*[[tuple(x) if np.ndim(x) else x for x in columns[n].tolist()] for n in sorted(columns)]))


# -- determinism -----------------------------------------------------------------


def test_same_seed_gives_byte_identical_files(tiny, tmp_path):
    again = str(tmp_path / "again")
    generate(again, BuiltinConfig.tiny(), progress=False)
    files = _all_files(tiny)
    assert files == _all_files(again)
    assert "dataset.json" in files and len(files) > 20
    _, mismatch, errors = filecmp.cmpfiles(tiny, again, files, shallow=False)
    assert mismatch == [] and errors == []


def test_different_seed_differs(tiny, tmp_path):
    other = str(tmp_path / "other")
    generate(other, BuiltinConfig.tiny(seed=1), progress=False)
    for rel in ("catalog/part-00000.parquet", "train/part-00000.parquet", "truth/videos/theta.npy"):
        with open(os.path.join(tiny, rel), "rb") as a, open(os.path.join(other, rel), "rb") as b:
            assert a.read() != b.read(), rel


def test_shard_size_changes_only_the_split_into_files(tiny, tmp_path):
    other = str(tmp_path / "shards")
    generate(other, BuiltinConfig.tiny(impressions_rows_per_shard=333), progress=False)
    imp = impressions_schema(20)
    a = read_table_numpy(load_manifest(tiny)["files"]["train"], imp)
    b = read_table_numpy(load_manifest(other)["files"]["train"], imp)
    assert len(load_manifest(other)["files"]["train"]) > len(load_manifest(tiny)["files"]["train"])
    for name in imp.names:
        np.testing.assert_array_equal(a[name], b[name])


# -- planted truth -----------------------------------------------------------------


def test_clicks_follow_the_true_probability(tables, tiny):
    gt = tables["truth"]
    prob = {"train": gt.train_click_prob(), "validation": gt.validation_click_prob(), "test": gt.test_click_prob()}
    for split in SPLITS:
        clicked = tables[split]["clicked"]
        assert prob[split].shape == clicked.shape
        assert prob[split][clicked == 1].mean() > prob[split][clicked == 0].mean() + 0.05
    np.testing.assert_array_equal(gt.test_clicked(), tables["test"]["clicked"])
    np.testing.assert_array_equal(gt.validation_clicked(), tables["validation"]["clicked"])
    assert oracle_auc(tiny) > 0.6
    all_clicked = np.concatenate([tables[split]["clicked"] for split in SPLITS])
    assert auc(all_clicked, np.concatenate([prob[split] for split in SPLITS])) > 0.7
    ctr = tables["manifest"]["ctr"]["overall"]
    assert 0.03 < ctr < 0.2


def test_ground_truth_recomputes_the_stored_probabilities(tables):
    gt, test = tables["truth"], tables["test"]
    logits = gt.click_logits(test["user_id"], hour=test["hour"], device=test["device"])
    assert logits.shape == (len(test["user_id"]), len(gt.video_ids))
    rows = np.arange(len(test["user_id"]))
    recomputed = 1.0 / (1.0 + np.exp(-logits[rows, gt.video_index(test["video_id"])]))
    np.testing.assert_allclose(recomputed, gt.test_click_prob(), atol=1e-5)
    # Subsets of the catalog and scalar context broadcast.
    sub = gt.click_logits(test["user_id"][:3], video_ids=gt.video_ids[:5], hour=20, device="tv")
    assert sub.shape == (3, 5)
    with pytest.raises(KeyError, match="nope"):
        gt.click_logits(["nope"])


def test_cold_start_videos_are_only_in_test(tables):
    gt = tables["truth"]
    cold = set(gt.video_ids[gt.cold_start])
    assert len(cold) == round(0.1 * 150)
    assert cold.isdisjoint(tables["train"]["video_id"])
    assert cold.isdisjoint(tables["validation"]["video_id"])
    assert cold & set(tables["test"]["video_id"])
    assert gt.is_cold_start(sorted(cold)).all()
    split = tables["manifest"]["time"]["split"]
    assert (gt.publish_time[gt.cold_start] >= split).all()
    assert not gt.published_before(split - 1)[gt.cold_start].any()
    assert gt.published_before(np.array([split - 1, 2 ** 40])).shape == (2, len(gt.video_ids))


def test_time_split_and_publish_times(tables):
    gt, cfg, tm = tables["truth"], tables["config"], tables["manifest"]["time"]
    # Train, then validation (the 10% of the window just before the test period), then test (the last 20%).
    assert tm["split"] == cfg.start_timestamp + round(0.8 * cfg.window_days * 86400) == cfg.split_timestamp
    assert tm["validation"] == tm["split"] - round(0.1 * cfg.window_days * 86400) == cfg.validation_timestamp
    assert gt.params["time"] == tm
    train, val, test = (tables[name]["timestamp"] for name in SPLITS)
    assert (train < tm["validation"]).all() and (test >= tm["split"]).all()
    assert ((val >= tm["validation"]) & (val < tm["split"])).all()
    for name in SPLITS:
        assert tables[name]["clicked"].sum() > 0, name   # many tests need clicks in every tiny split
        t = tables[name]
        publish = gt.publish_time[gt.video_index(t["video_id"])]
        assert (t["timestamp"] >= publish).all(), "a video was shown before it was published"
        assert ((t["timestamp"] // 3600) % 24 == t["hour"]).all()
        assert set(t["device"]) <= set(("phone", "tablet", "tv", "desktop"))


def test_validation_fraction_moves_rows_from_train_only(tables, tiny, tmp_path):
    """validation_fraction only relabels train rows: test/ and its truth are byte-identical."""
    none = str(tmp_path / "no-validation")
    m = generate(none, BuiltinConfig.tiny(validation_fraction=0), progress=False)
    assert not any(p.startswith("validation") or "/validation" in p for p in _all_files(none))
    assert not any(k.startswith("validation") for k in [*m["files"], *m["ctr"], *m["time"], *m["counts"]])
    # Test split and its truth: the same bytes with and without a validation split.
    test_files = [f for f in _all_files(tiny) if "test/" in f]   # test/ and truth/*/test/
    assert len(test_files) >= 3 and test_files == [f for f in _all_files(none) if "test/" in f]
    _, mismatch, errors = filecmp.cmpfiles(tiny, none, test_files, shallow=False)
    assert mismatch == [] and errors == []
    # The old train rows are exactly the new train + validation rows.
    train = read_table_numpy(load_manifest(none)["files"]["train"], impressions_schema(20))
    moved = {k: np.concatenate([tables["train"][k], tables["validation"][k]]) for k in train}
    assert len(tables["validation"]["user_id"]) > 0 and _sorted_rows(train) == _sorted_rows(moved)
    # Readers of a dataset without a validation split.
    gt = GroundTruth.load(none)
    assert gt.validation_click_prob().shape == (0,) and gt.validation_clicked().shape == (0,)
    np.testing.assert_array_equal(np.sort(gt.train_click_prob()), np.sort(np.concatenate(
        [tables["truth"].train_click_prob(), tables["truth"].validation_click_prob()])))
    assert set(builtin_splits(none)) == {"catalog", "train", "test"}
    os.makedirs(os.path.join(none, "validation"))   # an empty validation/ folder is no split either
    assert set(builtin_splits(none)) == {"catalog", "train", "test"}
    text = summary(load_manifest(none), "/data")
    assert "validation" not in text and f"{m['counts']['train_impressions']} train and" in text


def test_splits_partition_every_drawn_impression(tables):
    """Every impression the generator draws is in exactly one split, the one its timestamp says."""
    from tfrec_video.datasets.builtin.config import _USER_BLOCK
    from tfrec_video.datasets.builtin.impressions import _impression_block
    from tfrec_video.datasets.builtin.latents import _Latents

    cfg, tm = tables["config"], tables["manifest"]["time"]
    assert cfg.n_users <= _USER_BLOCK   # the tiny dataset's users fit in one block
    lat = _Latents(cfg)
    drawn = _impression_block(cfg, lat, 0)
    t = drawn["timestamp"]
    key = list(zip(lat.user_ids[drawn["user"]].astype(str).tolist(), lat.video_ids[drawn["video"]].astype(str).tolist(),
                   t.tolist()))
    expected = {"train": t < tm["validation"], "validation": (t >= tm["validation"]) & (t < tm["split"]),
                "test": t >= tm["split"]}
    for split in SPLITS:
        got = tables[split]
        written = sorted(zip(got["user_id"].tolist(), got["video_id"].tolist(), got["timestamp"].tolist()))
        assert written == sorted(k for k, m in zip(key, expected[split]) if m), split


def test_builtin_splits_returns_validation(tiny):
    splits = builtin_splits(tiny)
    assert splits == {name: os.path.join(tiny, name) for name in ("catalog", "train", "validation", "test")}


def test_history_is_earlier_clicks_newest_first(tables):
    L = tables["config"].history_length
    rows = collections.defaultdict(list)
    for name in SPLITS:
        t = tables[name]
        for u, ts, v, c, h in zip(t["user_id"], t["timestamp"], t["video_id"], t["clicked"], t["history"]):
            rows[u].append((int(ts), v, int(c), [x for x in h if x]))
    n_nonempty = 0
    for u, events in rows.items():
        events.sort()
        assert len({ts for ts, *_ in events}) == len(events), "a user's timestamps must be distinct"
        assert len({v for _, v, _, _ in events}) == len(events), "a user is shown a video at most once"
        clicked_so_far = []
        for ts, v, c, history in events:
            assert history == clicked_so_far[::-1][:L]
            n_nonempty += bool(history)
            if c:
                clicked_so_far.append(v)
    assert n_nonempty > 100
    assert max(len([x for x in h if x]) for h in tables["train"]["history"]) <= L


# -- content features ------------------------------------------------------------------


def test_titles_mix_english_and_chinese(tables):
    titles = tables["catalog"]["title"]
    zh = [t for t in titles if CJK.search(t)]
    en = [t for t in titles if LATIN.search(t)]
    mixed = [t for t in titles if CJK.search(t) and LATIN.search(t)]
    assert len(zh) > 20 and len(en) > 50 and len(mixed) > 5
    assert all(" " not in t for t in titles if CJK.search(t) and not LATIN.search(t))
    assert all(3 <= len(t.split()) <= 8 for t in titles if not CJK.search(t))


def test_topic_vocabularies_are_distinct():
    # A word must identify at most one topic, or titles would be noisier than documented.
    for lang in ("en", "zh"):
        words = [w for t in TOPICS for w in getattr(t, lang)]
        assert len(words) == len(set(words)), lang
        assert all(len(getattr(t, lang)) >= 12 for t in TOPICS)
        assert not set(words) & set(FILLER_WORDS[lang])


def test_titles_and_categories_follow_topics(tables):
    gt, cat = tables["truth"], tables["catalog"]
    topics = TOPICS[: tables["config"].n_topics]
    # Categories: the dominant topic's, up to category_noise.
    expected = np.array([topics[k].category for k in gt.dominant_topic])
    assert (cat["category"] == expected).mean() > 0.8
    # Titles: most contain a word of their dominant topic.
    hits = [any(w in title.lower() for w in topics[k].en + topics[k].zh)
            for title, k in zip(cat["title"], gt.dominant_topic)]
    assert np.mean(hits) > 0.7


@pytest.mark.parametrize("feature", ["image_embedding", "audio_embedding"])
def test_same_topic_embeddings_are_closer(tables, feature):
    x = tables["catalog"][feature].astype(np.float64)
    assert x.dtype == np.float64 and np.isfinite(x).all()
    assert 0.5 < x.std() < 2.0, "embeddings should be O(1)"
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    dom = tables["truth"].dominant_topic
    same = dom[:, None] == dom[None, :]
    off_diag = ~np.eye(len(dom), dtype=bool)
    # With a per-dimension SNR far below 1 raw cosines are small, but the gap is
    # many standard errors wide (a random 1024-d cosine has sd 0.03, averaged
    # here over thousands of pairs).
    assert sim[same & off_diag].mean() > sim[~same].mean() + 0.01


def test_media_files_decode_and_depend_on_topic(tables, tiny):
    gt = tables["truth"]
    with open(os.path.join(tiny, "media", "media.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and set(rows[0]) == {"video_id", "thumbnail_path", "audio_path"}
    assert any(r["thumbnail_path"].endswith(".png") for r in rows)
    assert any(r["thumbnail_path"].endswith(".jpg") for r in rows)
    colour_hits = tone_hits = 0
    for r in rows:
        k = int(gt.dominant_topic[gt.video_index([r["video_id"]])[0]])
        img = tf.io.decode_image(tf.io.read_file(os.path.join(tiny, "media", r["thumbnail_path"]))).numpy()
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8
        mean = img.reshape(-1, 3).mean(axis=0)
        palette = np.array([media_lib.topic_colour(j) for j in range(tables["config"].n_topics)])
        cos = palette @ mean / (np.linalg.norm(palette, axis=1) * np.linalg.norm(mean))
        colour_hits += int(np.argmax(cos) == k)
        audio, rate = tf.audio.decode_wav(tf.io.read_file(os.path.join(tiny, "media", r["audio_path"])))
        assert int(rate) == 16000 and tuple(audio.shape) == (16000, 1)
        spectrum = np.abs(np.fft.rfft(audio.numpy()[:, 0]))
        peak_hz = np.argmax(spectrum) * 16000 / 16000
        tone_hits += int(abs(peak_hz - media_lib.topic_frequency(k)) < 10)
    assert colour_hits >= 6 and tone_hits >= 6


# -- files, formats, manifest ------------------------------------------------------------


def test_manifest_lists_readable_files(tables, tiny):
    m = tables["manifest"]
    with open(os.path.join(tiny, "dataset.json"), encoding="utf-8") as f:
        stored = json.load(f)
    assert all(not os.path.isabs(p) for p in stored["files"]["train"])   # relocatable
    assert m["root"] == os.path.abspath(tiny) and m["format"] == "parquet"
    assert m["schema"]["image_dim"] == 1024 and m["schema"]["history_length"] == 20
    assert len(m["files"]["catalog"]) == 2 and len(m["files"]["train"]) >= 2
    assert len(m["files"]["validation"]) >= 1 and all(not os.path.isabs(p) for p in stored["files"]["validation"])
    listed = m["files"]["catalog"] + m["files"]["train"] + m["files"]["validation"] + m["files"]["test"]
    assert all(os.path.exists(p) for p in listed)
    on_disk = sorted(f for f in _all_files(tiny) if f.split("/")[0] in SPLITS)
    assert on_disk == sorted(os.path.relpath(p, tiny) for s in SPLITS for p in m["files"][s])
    for split in SPLITS:
        n, clicks = len(tables[split]["user_id"]), int(tables[split]["clicked"].sum())
        assert m["counts"][f"{split}_impressions"] == n > 0, split
        assert m["counts"][f"{split}_clicks"] == clicks > 0, split
        assert m["ctr"][split] == pytest.approx(clicks / n), split
    total = sum(len(tables[s]["user_id"]) for s in SPLITS)
    assert m["ctr"]["overall"] == pytest.approx(sum(tables[s]["clicked"].sum() for s in SPLITS) / total)
    assert all(len(tables["truth"].params["click_prob_files"][s]) == len(m["files"][s]) for s in SPLITS)
    assert tables["catalog"]["image_embedding"].shape == (150, 1024)
    assert tables["catalog"]["audio_embedding"].shape == (150, 128)
    ds = read_table(m["files"]["train"], impressions_schema(20))
    first = next(iter(ds))
    assert first["history"].shape == (20,) and first["user_id"].dtype == tf.string


@pytest.mark.parametrize("fmt", ["tfrecord", "csv"])
def test_every_format_holds_the_same_data(tables, tmp_path, fmt):
    path = str(tmp_path / fmt)
    m = generate(path, BuiltinConfig.tiny(), format=fmt, progress=False)
    assert all(f.endswith("." + fmt) for f in m["files"]["train"] + m["files"]["catalog"])
    m = load_manifest(path)
    test = read_table_numpy(m["files"]["test"], impressions_schema(20))
    for name in ("user_id", "video_id", "clicked", "timestamp", "hour", "device", "history"):
        np.testing.assert_array_equal(test[name], tables["test"][name])
    cat = read_table_numpy(m["files"]["catalog"], catalog_schema())
    np.testing.assert_array_equal(cat["title"], tables["catalog"]["title"])
    np.testing.assert_allclose(cat["image_embedding"], tables["catalog"]["image_embedding"], rtol=1e-6)


# -- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("n_videos", 0), ("n_users", -3), ("image_noise_std", -0.1), ("audio_noise_std", float("nan")),
    ("title_noise_word_fraction", 1.5), ("test_fraction", 1.0), ("n_topics", 99), ("language_mix", (0.5, 0.5, 0.5)),
    ("n_media_videos", 10 ** 9), ("seed", -1), ("impressions_rows_per_shard", 0),
    ("validation_fraction", -0.1), ("validation_fraction", 1.0), ("validation_fraction", float("nan")),
    ("validation_fraction", "0.1"), ("validation_fraction", 0.8),   # 0.8 + test_fraction 0.2 leaves no train
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"BuiltinConfig.{field}"):
        BuiltinConfig(**{field: value})


def test_validation_fraction_bounds():
    assert BuiltinConfig(validation_fraction=0).validation_timestamp == BuiltinConfig().split_timestamp
    BuiltinConfig(test_fraction=0.5, validation_fraction=0.49)
    with pytest.raises(ConfigError, match=r"BuiltinConfig.validation_fraction must be less than 1 - test_fraction"):
        BuiltinConfig(test_fraction=0.5, validation_fraction=0.5)
    with pytest.raises(ConfigError, match=r"BuiltinConfig.validation_fraction must be a number in \[0, 1\)"):
        BuiltinConfig(validation_fraction=True)


def test_config_round_trip_and_hash():
    cfg = BuiltinConfig.tiny(seed=5)
    again = BuiltinConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert BuiltinConfig.tiny(seed=6).config_hash() != cfg.config_hash()
    with pytest.raises(ConfigError, match="bogus"):
        BuiltinConfig.from_dict({**cfg.to_dict(), "bogus": 1})


# -- caching and atomicity ---------------------------------------------------------------


def test_generate_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(FileExistsError):
        generate(str(tmp_path), BuiltinConfig.tiny(), progress=False)
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        load_manifest(str(tmp_path))


def test_ensure_builtin_caches_and_regenerates_incomplete(tmp_path, monkeypatch):
    monkeypatch.setenv("TFREC_VIDEO_CACHE", str(tmp_path / "cache"))
    assert default_cache_dir() == str(tmp_path / "cache")
    cfg = BuiltinConfig.tiny(n_media_videos=2)
    path = ensure_builtin(config=cfg, progress=False)
    assert os.path.dirname(path) == str(tmp_path / "cache") and cfg.config_hash() in path
    manifest = os.path.join(path, "dataset.json")
    mtime = os.stat(manifest).st_mtime_ns
    assert ensure_builtin(config=cfg, progress=False) == path
    assert os.stat(manifest).st_mtime_ns == mtime, "a complete dataset must not be regenerated"

    # An interrupted generation: data files but no dataset.json.
    os.remove(manifest)
    os.remove(os.path.join(path, "train", "part-00000.parquet"))
    assert ensure_builtin(config=cfg, progress=False) == path
    assert os.path.exists(manifest) and os.path.exists(os.path.join(path, "train", "part-00000.parquet"))
    # A dataset with a missing file is regenerated too.
    for split in ("test", "validation"):
        os.remove(os.path.join(path, split, "part-00000.parquet"))
        ensure_builtin(config=cfg, progress=False)
        assert os.path.exists(os.path.join(path, split, "part-00000.parquet")), split
    assert [e for e in os.listdir(tmp_path / "cache") if ".tmp-" in e] == []


def test_cli_generate_data(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="tfrec-video")
    add_cli(parser.add_subparsers(dest="command"))
    out = str(tmp_path / "cli")
    args = parser.parse_args(["generate-data", "--out", out, "--tiny", "--seed", "3", "--n-users", "60",
                              "--format", "csv", "--no-progress"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "cold-start" in text and "CTR" in text and out in text
    m = load_manifest(out)
    assert f"{m['counts']['validation_impressions']} validation" in text and "validation/" in text
    assert m["config"]["seed"] == 3 and m["config"]["n_users"] == 60 and m["format"] == "csv"
    # Refuses to overwrite without --overwrite.
    args = parser.parse_args(["generate-data", "--out", out, "--tiny", "--no-progress"])
    assert args.func(args) == 2
