"""`tfrec-video embed`: the parts of the issue's spec that `tests/test_embedding_step.py` leaves open.

* OGG Vorbis end to end (tensorflow-io encodes Vorbis at 44.1 kHz here, though not at 16 kHz), resampled to
  a 16 kHz encoder; an int8 (not uint8) quantized `.tflite`; a run that dies mid-way and resumes without
  recomputing finished shards; the CLI over images and audio with `--zero-fill` into TFRecord shards whose
  join into a catalog trains a model.
* Fixed gaps: an `--out` that is a file, options that change the vectors (output key, image size) in the
  resume identity, a kill right after the first shard, a NaN embedding counted as a failure, duplicate ids
  named by shard file and row, and the recorded widths found for a glob of shards.
"""

import json
import logging
import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tensorflow_io as tfio

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy, write_table
from tfrec_video.data.media_embeddings import attach_embeddings, embeddings_schema
from tfrec_video.data.schema import catalog_schema
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.media_embedding import load_image_model, run_embed
from tfrec_video.media_embedding import step as embed_step
# The media helpers of the first embed test file: one tone, WAV writer, encoder saver and CSV writer for both.
from test_embedding_step import _band_energies, _cosine, _media_csv, _save_encoder, _tone, _write_wav

RATE = 16000
AUDIO_DIM = 16
IMAGE_DIM = 6


def _colour_stats(images):
    """[batch, 32, 32, 3] in [0, 1] -> [batch, 6]: mean and spread of each channel."""
    return tf.concat([tf.reduce_mean(images, [1, 2]), tf.math.reduce_std(images, [1, 2])], -1)


def _png(path, rgb, seed):
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, 8, (40, 40, 3)), 0, 255).astype(np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())
    return str(path)


def _image_rows(directory, n=6):
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    return [(f"v{i}", _png(directory / f"v{i}.png", colours[i % 3], seed=i), "") for i in range(n)]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    return {"audio": _save_encoder(root / "audio", _band_energies, tf.TensorSpec([None, RATE], tf.float32)),
            "image": _save_encoder(root / "image", _colour_stats, tf.TensorSpec([None, 32, 32, 3], tf.float32))}


class _Counting:
    """Wraps a loaded `MediaModel`: counts `embed` calls, and raises `fail_at` on the call with that number."""

    def __init__(self, model, fail_at=None, error=KeyboardInterrupt):
        self.model, self.calls, self.fail_at, self.error = model, 0, fail_at, error

    def __getattr__(self, name):
        return getattr(self.model, name)

    def embed(self, batch):
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.error("killed mid-run")
        return self.model.embed(batch)


# -- OGG Vorbis ----------------------------------------------------------------------------------------------


def test_ogg_vorbis_clip_at_44k_resamples_and_embeds_like_the_wav_of_its_tone(tmp_path, encoders):
    try:
        ogg = tfio.audio.encode_vorbis(tf.constant(_tone(440, rate=44100)[:, None]), rate=44100).numpy()
    except tf.errors.OpError as error:
        pytest.skip(f"tensorflow-io cannot write Vorbis here ({str(error).splitlines()[0][-60:]})")
    (tmp_path / "a440.ogg").write_bytes(ogg)
    rows = [("wav440", "", _write_wav(tmp_path / "a440.wav", _tone(440))), ("ogg440", "", "a440.ogg"),
            ("wav3000", "", _write_wav(tmp_path / "a3000.wav", _tone(3000)))]
    summary = run_embed(_media_csv(tmp_path, rows), str(tmp_path / "emb.parquet"), audio_model=encoders["audio"],
                        progress=False)
    assert (summary.written, summary.failed_audio) == (3, 0)
    table = read_table_numpy(str(tmp_path / "emb.parquet"), embeddings_schema(audio_dim=AUDIO_DIM))
    v = dict(zip(table["video_id"], table["audio_embedding"]))
    # Lossy coding and the 44.1 -> 16 kHz filter add a little broadband energy; the pitch stays in band 0.
    assert np.argmax(v["ogg440"]) == np.argmax(v["wav440"]) == 0
    assert _cosine(v["ogg440"], v["wav440"]) > _cosine(v["ogg440"], v["wav3000"]) + 0.1


# -- int8 TFLite ---------------------------------------------------------------------------------------------


def test_int8_quantized_tflite_matches_the_float_model(tmp_path):
    rng = np.random.default_rng(2)
    kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))

    def embed(images):  # [1, 32, 32, 3] in [-1, 1] -> [1, 1, 1, 8]
        return tf.nn.avg_pool2d(tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")), 32, 32, "VALID")

    concrete = tf.function(embed, input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)]).get_concrete_function()
    for name, quantize in (("float", False), ("int8", True)):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        if quantize:
            data = np.random.default_rng(0)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([data.uniform(-1, 1, [1, 32, 32, 3]).astype(np.float32)]
                                                        for _ in range(50))
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = converter.inference_output_type = tf.int8
        (tmp_path / f"{name}.tflite").write_bytes(converter.convert())
    quant = load_image_model(str(tmp_path / "int8.tflite"))
    detail = quant._interpreter.get_input_details()[0]
    assert detail["dtype"] == np.int8
    # "auto" maps [0, 1] pixels onto the float range int8 codes -128..127 stand for: about [-1, 1] here.
    assert quant._low == pytest.approx(-1.0, abs=0.02) and quant._high == pytest.approx(1.0, abs=0.02)
    floating = load_image_model(str(tmp_path / "float.tflite"), input_range=(-1.0, 1.0))
    images = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    expected = embed(tf.constant(images * 2 - 1)).numpy().reshape(4, 8)
    np.testing.assert_allclose(floating.embed(images), expected, atol=1e-5)
    got = quant.embed(images)
    assert got.shape == (4, 8) and got.dtype == np.float32
    assert min(_cosine(a, b) for a, b in zip(got, expected)) > 0.97
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max() + 0.05


# -- a run that dies mid-way ---------------------------------------------------------------------------------


def test_a_run_killed_mid_way_resumes_without_recomputing_finished_shards(tmp_path, encoders, monkeypatch):
    csv = _media_csv(tmp_path, _image_rows(tmp_path))
    clean = tmp_path / "clean.tfrecord"
    run_embed(csv, str(clean), image_model=encoders["image"], shard_size=2, batch_size=2, progress=False)

    load = embed_step.load_image_model
    models = []

    def counting(fail_at):
        def loader(*args, **kwargs):
            models.append(_Counting(load(*args, **kwargs), fail_at))
            return models[-1]
        return loader

    out = tmp_path / "emb.tfrecord"
    monkeypatch.setattr(embed_step, "load_image_model", counting(fail_at=3))  # one call per shard: dies in shard 2
    with pytest.raises(KeyboardInterrupt):
        run_embed(csv, str(out), image_model=encoders["image"], shard_size=2, batch_size=2, progress=False)
    assert sorted(p for p in os.listdir(out) if p.startswith("part-")) == ["part-00000.tfrecord", "part-00001.tfrecord"]
    kept = {p: (out / p).stat().st_mtime_ns for p in ("part-00000.tfrecord", "part-00001.tfrecord")}
    # What a kill during write_table leaves behind: readers and the resumed run ignore it.
    (out / "part-00002.tfrecord.tmp-0123456789ab").write_bytes(b"half a shard")

    monkeypatch.setattr(embed_step, "load_image_model", counting(fail_at=None))
    summary = run_embed(csv, str(out), image_model=encoders["image"], shard_size=2, batch_size=2, progress=False)
    assert models[-1].calls == 1  # only the unfinished shard was embedded
    assert (summary.shards_skipped, summary.shards_written, summary.written) == (2, 1, 6)
    assert {p: (out / p).stat().st_mtime_ns for p in kept} == kept
    schema = embeddings_schema(image_dim=IMAGE_DIM)
    a, b = read_table_numpy(str(out), schema), read_table_numpy(str(clean), schema)
    assert a["video_id"].tolist() == b["video_id"].tolist() == [f"v{i}" for i in range(6)]
    np.testing.assert_array_equal(a["image_embedding"], b["image_embedding"])


# -- the CLI, --zero-fill, and training on the joined catalog -----------------------------------------------


@pytest.mark.bad_input
def test_cli_zero_fills_broken_media_and_the_joined_catalog_trains(tmp_path, encoders, capsys, caplog):
    rows = _image_rows(tmp_path)
    wavs = [_write_wav(tmp_path / f"t{i}.wav", _tone(300 + 700 * (i % 3))) for i in range(len(rows))]
    rows = [(vid, image, wav) for (vid, image, _), wav in zip(rows, wavs)]
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows[1] = ("v1", "broken.jpg", rows[1][2])          # corrupt thumbnail, good audio
    rows[4] = ("v4", rows[4][1], "")                    # no audio track
    csv = _media_csv(tmp_path, rows)
    out = tmp_path / "emb.tfrecord"
    with caplog.at_level(logging.WARNING, logger="tfrec_video.embed"):
        code = main(["embed", "--catalog", csv, "--image-model", encoders["image"], "--audio-model",
                     encoders["audio"], "--out", str(out), "--zero-fill", "--shard-size", "4", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "6 rows written" in printed and "zero-filled 2, left out 0" in printed
    assert str(tmp_path / "broken.jpg") in caplog.text

    catalog = {"video_id": np.array([f"v{i}" for i in (5, 3, 1, 0, 2, 4)], object),
               "title": np.array(["cat video", "goal", "足球", "kitten", "recipe", "cat"], object)}
    joined = attach_embeddings(catalog, str(out))  # widths from the run's state
    assert joined["image_embedding"].shape == (6, IMAGE_DIM) and joined["audio_embedding"].shape == (6, AUDIO_DIM)
    assert not joined["image_embedding"][2].any() and not joined["audio_embedding"][5].any()
    # The joined columns are a valid catalog of the package's schema with these widths.
    write_table(joined, str(tmp_path / "catalog.parquet"), catalog_schema(IMAGE_DIM, AUDIO_DIM))
    from toy import small_model

    rng = np.random.default_rng(0)
    videos = rng.integers(0, 6, 64)
    impressions = {"user_id": np.array([f"u{u}" for u in rng.integers(0, 5, 64)], object),
                   "video_id": catalog["video_id"][videos], "clicked": (rng.random(64) < 0.5).astype(np.int64),
                   **{name: joined[name][videos] for name in ("title", "image_embedding", "audio_embedding")}}
    model = small_model(joined, impressions, epochs=1, media_components=2)
    assert "image_embedding" in model.video_feature_names and "audio_embedding" in model.video_feature_names
    assert np.isfinite(model.evaluate(tf.data.Dataset.from_tensor_slices(impressions).batch(64), verbose=0)).all()


# -- fixed gaps ------------------------------------------------------------------------------------------------


@pytest.mark.bad_input
def test_an_out_that_is_a_file_is_a_clean_config_error(tmp_path, encoders):
    (tmp_path / "emb.parquet").write_bytes(b"an earlier single-file table")
    with pytest.raises(ConfigError, match="is a file"):
        run_embed(_media_csv(tmp_path, _image_rows(tmp_path, 1)), str(tmp_path / "emb.parquet"),
                  image_model=encoders["image"], progress=False)


def test_another_output_key_or_image_size_does_not_reuse_old_shards(tmp_path):
    two = _save_encoder(tmp_path / "two", lambda x: {"mean": tf.reduce_mean(x, [1, 2]), "max": tf.reduce_max(x, [1, 2])},
                        tf.TensorSpec([None, 32, 32, 3], tf.float32))
    any_size = _save_encoder(tmp_path / "any", lambda x: tf.reduce_mean(x, [1, 2]),
                             tf.TensorSpec([None, None, None, 3], tf.float32))
    csv = _media_csv(tmp_path, _image_rows(tmp_path, 2))
    run_embed(csv, str(tmp_path / "k.parquet"), image_model=two, image_output_key="mean", progress=False)
    with pytest.raises(ConfigError, match="image_output_key"):
        run_embed(csv, str(tmp_path / "k.parquet"), image_model=two, image_output_key="max", progress=False)
    run_embed(csv, str(tmp_path / "s.parquet"), image_model=any_size, image_size=8, progress=False)
    with pytest.raises(ConfigError, match="image_size"):
        run_embed(csv, str(tmp_path / "s.parquet"), image_model=any_size, image_size=16, progress=False)


def test_a_run_killed_right_after_its_first_shard_still_resumes(tmp_path, encoders, monkeypatch):
    csv = _media_csv(tmp_path, _image_rows(tmp_path, 4))
    write = embed_step.write_table

    def write_then_die(*args, **kwargs):
        write(*args, **kwargs)
        raise KeyboardInterrupt("killed after the rename")

    monkeypatch.setattr(embed_step, "write_table", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_embed(csv, str(tmp_path / "emb.parquet"), image_model=encoders["image"], shard_size=2, progress=False)
    monkeypatch.setattr(embed_step, "write_table", write)
    summary = run_embed(csv, str(tmp_path / "emb.parquet"), image_model=encoders["image"], shard_size=2,
                        progress=False)
    assert summary.written == 4


@pytest.mark.bad_input
def test_a_non_finite_embedding_is_a_counted_failure_and_the_run_goes_on(tmp_path, caplog):
    # NaN for a black image only (x / max(x) is 0/0 there).
    odd = _save_encoder(tmp_path / "odd", lambda x: tf.reduce_mean(x / tf.reduce_max(x, [1, 2, 3], keepdims=True), [1, 2]),
                        tf.TensorSpec([None, 32, 32, 3], tf.float32))
    rows = _image_rows(tmp_path, 3)
    black = tmp_path / "black.png"
    black.write_bytes(tf.io.encode_png(np.zeros((8, 8, 3), np.uint8)).numpy())
    csv = _media_csv(tmp_path, rows + [("dark", str(black), "")])
    with caplog.at_level(logging.WARNING, logger="tfrec_video.embed"):
        summary = run_embed(csv, str(tmp_path / "emb.parquet"), image_model=odd, progress=False)
    assert (summary.written, summary.failed_thumbnail, summary.left_out) == (3, 1, 1)
    assert str(black) in caplog.text


@pytest.mark.bad_input
def test_a_duplicate_id_across_shards_is_named_by_its_file_and_row(tmp_path):
    schema = embeddings_schema(image_dim=2)
    write_table({"video_id": ["a", "b"], "image_embedding": np.ones((2, 2), np.float32)},
                str(tmp_path / "emb.parquet" / "part-00000.parquet"), schema)
    write_table({"video_id": ["c", "b"], "image_embedding": np.ones((2, 2), np.float32)},
                str(tmp_path / "emb.parquet" / "part-00001.parquet"), schema)
    catalog = {"video_id": np.array(["a", "b", "c"], object)}
    with pytest.raises(DataValidationError, match=r"part-00001\.parquet, row 1: feature 'video_id': duplicate"):
        attach_embeddings(catalog, str(tmp_path / "emb.parquet"), image_dim=2)


def test_attach_embeddings_reads_the_recorded_widths_for_a_glob_of_shards(tmp_path, encoders):
    csv = _media_csv(tmp_path, _image_rows(tmp_path, 3))
    run_embed(csv, str(tmp_path / "emb.parquet"), image_model=encoders["image"], shard_size=2, progress=False)
    catalog = {"video_id": np.array(["v2", "v0", "v1"], object)}
    joined = attach_embeddings(catalog, str(tmp_path / "emb.parquet" / "part-*.parquet"))
    assert joined["image_embedding"].shape == (3, IMAGE_DIM)
    state = json.loads((tmp_path / "emb.parquet" / "_embed_state.json").read_text())
    assert state["widths"]["image_embedding"] == IMAGE_DIM
