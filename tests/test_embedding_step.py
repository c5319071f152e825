"""`tfrec-video embed`: real photos through the real MobileNet embedder, generated audio through small
encoders, TFLite quantization, resuming, broken media, and the join into the catalog."""

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf
import tensorflow_io as tfio

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy
from tfrec_video.data.media_embeddings import attach_embeddings
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.media_embedding import frames, load_image_model, read_audio, run_embed

PRETRAINED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"
MOBILENET = PRETRAINED / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
RATE = 16000
IMAGE_DIM = 13  # _image_features: 3 means, 3 deviations, a 2x2 layout, 3 maxima


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _tone(freq, rate=RATE, seconds=1.5):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _write_wav(path, samples, rate=RATE):
    path.write_bytes(tf.audio.encode_wav(samples[:, None], rate).numpy())
    return str(path)


def _write_flac(path, samples, rate=RATE):
    pcm = tf.constant(np.round(samples * 32767).astype(np.int16)[:, None])
    path.write_bytes(tfio.audio.encode_flac(pcm, rate=rate).numpy())
    return path


def _save_encoder(path, fn, spec):
    module = tf.Module()
    module.__call__ = tf.function(fn, input_signature=[spec])
    tf.saved_model.save(module, str(path))
    return str(path)


def _band_energies(waveforms):
    """[batch, 16000] -> [batch, 16]: log mean DFT magnitude in 16 bands up to 8 kHz."""
    magnitude = tf.abs(tf.signal.rfft(waveforms))[:, :8000]
    return tf.math.log1p(tf.reduce_mean(tf.reshape(magnitude, [-1, 16, 500]), -1))


def _image_features(images):
    """[batch, 32, 32, 3] in [0, 1] -> [batch, IMAGE_DIM]: colour statistics and a coarse 2x2 brightness layout."""
    means = tf.reduce_mean(images, [1, 2])
    layout = tf.reshape(tf.nn.avg_pool2d(tf.reduce_mean(images, -1, keepdims=True), 16, 16, "VALID"), [-1, 4])
    return tf.concat([means, tf.math.reduce_std(images, [1, 2]), layout, tf.reduce_max(images, [1, 2])], -1)


def _solid_png(path, rgb, size=40, noise=0, seed=0):
    rng = np.random.default_rng(seed)
    image = np.clip(np.array(rgb)[None, None, :] + rng.normal(0, noise, (size, size, 3)), 0, 255).astype(np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())
    return path


def _media_csv(directory, rows, name="media.csv"):
    lines = ["video_id,thumbnail_path,audio_path"] + [",".join(r) for r in rows]
    path = directory / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoders")
    audio = _save_encoder(root / "audio", _band_energies, tf.TensorSpec([None, RATE], tf.float32))
    image = _save_encoder(root / "image", _image_features, tf.TensorSpec([None, 32, 32, 3], tf.float32))
    return {"audio": audio, "image": image}


# -- the real embedder on real photos ----------------------------------------------------------------------


@pytest.mark.skipif(not MOBILENET.exists(), reason="../shared/pretrained is not here")
def test_mobilenet_embeddings_of_the_shared_photos_separate_the_classes(tmp_path, capsys):
    photos = sorted((PRETRAINED / "images").glob("*.jpg"))
    csv = _media_csv(tmp_path, [(p.stem, str(p), "") for p in photos])
    out = tmp_path / "emb.parquet"
    assert main(["embed", "--catalog", csv, "--image-model", str(MOBILENET), "--out", str(out), "--quiet"]) == 0
    assert "6 rows written" in capsys.readouterr().out
    table = read_table_numpy(str(out), _schema(image_dim=1024))
    vectors = dict(zip(table["video_id"], table["image_embedding"]))
    assert table["image_embedding"].shape == (6, 1024) and np.isfinite(table["image_embedding"]).all()
    classes = {name: name.split("_")[0] for name in vectors}
    for name, vector in vectors.items():
        same = [_cosine(vector, v) for n, v in vectors.items() if n != name and classes[n] == classes[name]]
        other = [_cosine(vector, v) for n, v in vectors.items() if classes[n] != classes[name]]
        assert min(same) > max(other), (name, same, other)


def _schema(image_dim=None, audio_dim=None):
    from tfrec_video.data.media_embeddings import embeddings_schema

    return embeddings_schema(image_dim, audio_dim)


# -- audio: WAV, FLAC, resampling, framing -------------------------------------------------------------------


def test_wav_and_flac_of_one_tone_embed_alike_and_tones_separate(tmp_path, encoders):
    rows = [("a440_wav", "", str(_write_wav(tmp_path / "a.wav", _tone(440)))),
            ("a440_flac", "", str(_write_flac(tmp_path / "a.flac", _tone(440)))),
            # 22.05 kHz, resampled to the encoder's 16 kHz.
            ("a440_22k", "", str(_write_wav(tmp_path / "a22.wav", _tone(440, rate=22050), rate=22050))),
            ("a3000", "", str(_write_wav(tmp_path / "b.wav", _tone(3000))))]
    summary = run_embed(_media_csv(tmp_path, rows), str(tmp_path / "emb.tfrecord"), audio_model=encoders["audio"],
                        progress=False)
    assert summary.written == 4 and summary.audio_dim == 16 and summary.image_dim is None
    table = read_table_numpy(str(tmp_path / "emb.tfrecord"), _schema(audio_dim=16))
    assert "image_embedding" not in table
    v = dict(zip(table["video_id"], table["audio_embedding"]))
    assert _cosine(v["a440_wav"], v["a440_flac"]) > 0.999
    # The resampled clip is the same tone (its filter adds a little broadband energy), unlike 3 kHz.
    assert _cosine(v["a440_wav"], v["a440_22k"]) > _cosine(v["a440_wav"], v["a3000"]) + 0.1
    # The 440 Hz energy sits in the first band of 500 Hz: resampling kept the pitch.
    assert np.argmax(v["a440_22k"]) == np.argmax(v["a440_wav"]) == 0
    resampled = read_audio(str(tmp_path / "a22.wav"), RATE)
    assert len(resampled) == int(1.5 * RATE)
    assert np.argmax(np.abs(np.fft.rfft(resampled))) * RATE / len(resampled) == pytest.approx(440, abs=1)


def test_read_audio_mixes_to_mono_resamples_and_frames(tmp_path):
    stereo = np.stack([_tone(440, rate=44100), -_tone(440, rate=44100) * 0.0], axis=1)
    path = tmp_path / "stereo.wav"
    path.write_bytes(tf.audio.encode_wav(stereo, 44100).numpy())
    waveform = read_audio(str(path), RATE)
    assert waveform.ndim == 1 and abs(len(waveform) - int(1.5 * RATE)) <= 2
    assert np.abs(waveform).max() == pytest.approx(0.25, abs=0.02)  # the mean of the two channels
    clips = frames(waveform, RATE)
    assert clips.shape == (2, RATE) and not clips[1, len(waveform) - RATE:].any()


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_mp3_and_ogg_decode_when_an_encoder_can_write_them(tmp_path, fmt):
    encode = {"mp3": tfio.audio.encode_mp3, "ogg": tfio.audio.encode_vorbis}[fmt]
    try:
        data = encode(tf.constant(_tone(440)[:, None]), rate=RATE).numpy()
    except tf.errors.OpError as error:
        pytest.skip(f"tensorflow-io cannot write {fmt} here to make a test clip ({str(error).splitlines()[0][-60:]})")
    path = tmp_path / f"a.{fmt}"
    path.write_bytes(data)
    assert len(read_audio(str(path), RATE)) > RATE


# -- TFLite: float and quantized ----------------------------------------------------------------------------


def _convert(fn, spec, quantize):
    concrete = tf.function(fn, input_signature=[spec]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if quantize:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        # Float pixels in [-1, 1], as quantized image models are trained on.
        converter.representative_dataset = lambda: ([rng.uniform(-1, 1, [1, 32, 32, 3]).astype(np.float32)]
                                                    for _ in range(50))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def test_quantized_tflite_inputs_and_outputs_follow_their_quantization_parameters(tmp_path):
    # A small convolutional image embedder, as float and as full-integer (uint8 in, uint8 out) TFLite.
    rng = np.random.default_rng(1)
    kernel = tf.constant(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))

    def embed(images):  # [1, 32, 32, 3] in [-1, 1] -> [1, 1, 1, 8]
        return tf.nn.avg_pool2d(tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")), 32, 32, "VALID")

    spec = tf.TensorSpec([1, 32, 32, 3], tf.float32)
    (tmp_path / "float.tflite").write_bytes(_convert(embed, spec, quantize=False))
    (tmp_path / "quant.tflite").write_bytes(_convert(embed, spec, quantize=True))
    quant = load_image_model(str(tmp_path / "quant.tflite"))
    # The float model is told the range it was trained on; the quantized one derives it from its input.
    floating = load_image_model(str(tmp_path / "float.tflite"), input_range=(-1.0, 1.0))
    assert quant.input_size == floating.input_size == (32, 32)
    assert quant.output_dim == floating.output_dim == 8
    images = rng.uniform(0, 1, (4, 32, 32, 3)).astype(np.float32)
    expected = embed(tf.constant(images * 2 - 1)).numpy().reshape(4, 8)
    np.testing.assert_allclose(floating.embed(images), expected, atol=1e-5)
    got = quant.embed(images)
    assert got.dtype == np.float32
    for a, b in zip(got, expected):
        assert _cosine(a, b) > 0.97
    # Without dequantizing, the outputs would be raw uint8 codes in the hundreds.
    assert np.abs(got - expected).max() < 0.1 * np.abs(expected).max() + 0.05


# -- resuming, broken media, zero-fill ----------------------------------------------------------------------


def _image_rows(tmp_path, n=6):
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200)]
    return [(f"v{i}", str(_solid_png(tmp_path / f"v{i}.png", colours[i % 3], noise=8, seed=i)), "") for i in range(n)]


def test_a_rerun_skips_finished_shards_and_gives_the_clean_result(tmp_path, encoders):
    csv = _media_csv(tmp_path, _image_rows(tmp_path))
    clean = tmp_path / "clean.parquet"
    run_embed(csv, str(clean), image_model=encoders["image"], shard_size=2, progress=False)
    out = tmp_path / "emb.parquet"
    first = run_embed(csv, str(out), image_model=encoders["image"], shard_size=2, progress=False)
    assert first.shards_written == 3 and sorted(os.listdir(out)) == [
        "_embed_state.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    # An interruption before the last shard was recorded: its file and its state entry are gone.
    state = json.loads((out / "_embed_state.json").read_text())
    del state["shards"]["2"]
    (out / "_embed_state.json").write_text(json.dumps(state))
    (out / "part-00002.parquet").unlink()
    kept = {name: (out / name).stat().st_mtime_ns for name in ("part-00000.parquet", "part-00001.parquet")}
    again = run_embed(csv, str(out), image_model=encoders["image"], shard_size=2, progress=False)
    assert (again.shards_skipped, again.shards_written, again.written) == (2, 1, 6)
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    a, b = read_table_numpy(str(out), _schema(image_dim=IMAGE_DIM)), read_table_numpy(str(clean), _schema(image_dim=IMAGE_DIM))
    assert a["video_id"].tolist() == b["video_id"].tolist()
    np.testing.assert_array_equal(a["image_embedding"], b["image_embedding"])
    # Another model (or catalog) must not reuse these shards. (A model saved here: ../shared may be absent.)
    other = _save_encoder(tmp_path / "other", lambda x: 2.0 * _image_features(x),
                          tf.TensorSpec([None, 32, 32, 3], tf.float32))
    with pytest.raises(ConfigError, match=r"holds shards of another embedding run \(.*image_model"):
        run_embed(csv, str(out), image_model=other, shard_size=2, progress=False)


@pytest.mark.bad_input
def test_broken_and_missing_media_are_logged_counted_and_left_out_unless_zero_filled(tmp_path, encoders, caplog):
    good = _image_rows(tmp_path, 2)
    corrupt_jpeg = tmp_path / "corrupt.jpg"
    corrupt_jpeg.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)
    corrupt_wav = tmp_path / "corrupt.wav"
    corrupt_wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    wav = str(_write_wav(tmp_path / "ok.wav", _tone(440)))
    rows = [(good[0][0], good[0][1], wav), (good[1][0], good[1][1], ""), ("bad_jpeg", str(corrupt_jpeg), wav),
            ("gone", str(tmp_path / "missing.png"), wav), ("bad_wav", good[0][1], str(corrupt_wav))]
    csv = _media_csv(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="tfrec_video.embed"):
        summary = run_embed(csv, str(tmp_path / "emb.parquet"), image_model=encoders["image"],
                            audio_model=encoders["audio"], progress=False)
    assert (summary.failed_thumbnail, summary.missing_audio, summary.failed_audio) == (2, 1, 1)
    assert summary.written == 1 and summary.left_out == 4 and summary.zero_filled == 0
    logged = caplog.text
    for path in (corrupt_jpeg, tmp_path / "missing.png", corrupt_wav):
        assert str(path) in logged
    table = read_table_numpy(str(tmp_path / "emb.parquet"), _schema(image_dim=IMAGE_DIM, audio_dim=16))
    assert table["video_id"].tolist() == [good[0][0]]

    filled = run_embed(csv, str(tmp_path / "filled.parquet"), image_model=encoders["image"],
                       audio_model=encoders["audio"], zero_fill=True, progress=False)
    assert filled.written == 5 and filled.zero_filled == 4 and filled.left_out == 0
    table = read_table_numpy(str(tmp_path / "filled.parquet"), _schema(image_dim=IMAGE_DIM, audio_dim=16))
    rows_by_id = {v: i for i, v in enumerate(table["video_id"])}
    assert not table["image_embedding"][rows_by_id["bad_jpeg"]].any()
    assert not table["audio_embedding"][rows_by_id[good[1][0]]].any()
    assert table["audio_embedding"][rows_by_id["bad_jpeg"]].any()


@pytest.mark.bad_input
@pytest.mark.parametrize("text, message", [
    ("video_id,thumbnail_path\nv1,a.png\n", r"row|lacks the columns \['audio_path'\]"),
    ("video_id,thumbnail_path,audio_path\nv1,a.png,\nv1,b.png,\n", r"line 3: feature 'video_id': duplicate video_id 'v1' \(first on line 2\)"),
    ("video_id,thumbnail_path,audio_path\n,a.png,\n", r"line 2: feature 'video_id': empty video_id"),
    ("video_id,thumbnail_path,audio_path\n", r"no rows"),
])
def test_a_malformed_media_csv_is_named(tmp_path, encoders, text, message):
    path = tmp_path / "media.csv"
    path.write_text(text)
    with pytest.raises(DataValidationError, match=message):
        run_embed(str(path), str(tmp_path / "emb.parquet"), image_model=encoders["image"], progress=False)
    assert not (tmp_path / "emb.parquet").exists()


@pytest.mark.bad_input
def test_bad_models_and_options_exit_2_with_the_reason(tmp_path, encoders, capsys):
    csv = _media_csv(tmp_path, _image_rows(tmp_path, 1))
    cases = [
        (["--image-model", str(tmp_path / "nope.tflite")], "does not exist"),
        ([], "give --image-model, --audio-model or both"),
        (["--image-model", encoders["image"], "--shard-size", "0"], "shard_size must be a positive integer"),
        (["--image-model", encoders["image"], "--image-range", "1"], "--image-range must be auto or LOW,HIGH"),
    ]
    for extra, message in cases:
        assert main(["embed", "--catalog", csv, "--out", str(tmp_path / "emb.parquet"), *extra]) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "garbage.tflite").write_bytes(b"not a flatbuffer")
    assert main(["embed", "--catalog", csv, "--out", str(tmp_path / "e.parquet"), "--image-model",
                 str(tmp_path / "garbage.tflite")]) == 2
    assert "is not a loadable .tflite file" in capsys.readouterr().err
    assert main(["embed", "--catalog", csv, "--out", str(tmp_path / "e.csv"), "--image-model", encoders["image"]]) == 2
    assert "must end in .parquet, .tfrecord" in capsys.readouterr().err
    assert not [p for p in os.listdir(tmp_path) if p.startswith("e")]


# -- the join into the catalog ------------------------------------------------------------------------------


def test_attach_embeddings_joins_by_id_and_names_what_is_missing(tmp_path, encoders):
    csv = _media_csv(tmp_path, _image_rows(tmp_path, 4))
    out = tmp_path / "emb.parquet"
    run_embed(csv, str(out), image_model=encoders["image"], shard_size=3, progress=False)
    catalog = {"video_id": np.array(["v3", "v0", "v2", "v1"], object), "title": np.array(list("abcd"), object)}
    joined = attach_embeddings(catalog, str(out))  # the width comes from the embedding run's state
    table = read_table_numpy(str(out), _schema(image_dim=IMAGE_DIM))
    by_id = dict(zip(table["video_id"], table["image_embedding"]))
    np.testing.assert_array_equal(joined["image_embedding"], np.stack([by_id[v] for v in catalog["video_id"]]))
    assert joined["title"] is catalog["title"]

    bigger = {"video_id": np.array(["v0", "new-video"], object), "title": np.array(["a", "b"], object)}
    with pytest.raises(DataValidationError, match=r"1 of the catalog's 2 videos have no row, e.g. \['new-video'\]"):
        attach_embeddings(bigger, str(out))
    zeros = attach_embeddings(bigger, str(out), missing="zeros")["image_embedding"]
    assert zeros[0].any() and not zeros[1].any()
