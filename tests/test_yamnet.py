"""YAMNet in `tfrec-video embed`: the log-mel front end in TF against the upstream test vectors, the real
int8 model's classes and embeddings on real recordings, `--audio-output-tensor`, and the resume identity.

The real model and recordings live in `../shared/pretrained/audio/` (README there); those tests skip
cleanly without it. A tiny spectrogram-input `.tflite` converted here checks the patch geometry and the
averaging without it.

Class indices are AudioSet's in YAMNet's order (`yamnet_class_map.csv` of the public tensorflow/models
repository, `research/audioset/yamnet/`; the `.tflite` file ships no class map): 0 Speech, 132 Music,
383 Telephone, 387 Dial tone, 388 Busy signal. The same map gives 495 Sine wave, which the README's
measurement of a sine confirms.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy
from tfrec_video.data.media_embeddings import embeddings_schema
from tfrec_video.errors import ConfigError
from tfrec_video.media_embedding import LogMelFrontEnd, load_audio_model, read_audio, run_embed

AUDIO = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "audio"
YAMNET = AUDIO / "yamnet_spectra_in.tflite"
needs_yamnet = pytest.mark.skipif(not YAMNET.exists(), reason="../shared/pretrained/audio is not here")
EMBEDDING = "tower0/network/layer28/reduce_mean"
SCORES = "tower0/network/layer32/final_output:0"
RECORDINGS = {"speech": "speech_10k_mono.wav", "flute": "music_flute_44k_stereo.wav",
              "synth": "synth_effect_44k_stereo.wav"}


def _cosine(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _clip(name):
    return read_audio(str(AUDIO / RECORDINGS[name]), 16000)


@pytest.fixture(scope="module")
def yamnet():
    return load_audio_model(str(YAMNET))


@pytest.fixture(scope="module")
def yamnet_scores():
    # The same file read at its class output: 521 AudioSet scores per patch.
    return load_audio_model(str(YAMNET), output_tensor=SCORES)


def _media_csv(directory, rows):
    path = directory / "media.csv"
    path.write_text("\n".join(["video_id,thumbnail_path,audio_path"] + [f"{v},,{a}" for v, a in rows]) + "\n")
    return str(path)


# -- the front end and the patches, without the real model ----------------------------------------------------


def test_patches_pad_a_short_clip_and_end_a_long_clip_at_its_last_frame():
    front = LogMelFrontEnd()
    rng = np.random.default_rng(0)
    short = front.patches(0.1 * rng.standard_normal(8000).astype(np.float32))  # 0.5 s
    assert short.shape == (1, 96, 64)
    # The padding is silence: frames wholly past the clip are log(0 + 0.001).
    np.testing.assert_allclose(short[0, -40:], np.log(0.001), atol=1e-5)
    assert short[0, :40].mean() > np.log(0.001) + 1
    # Exactly one patch plus one hop: two patches, no extra one.
    assert front.patches(np.zeros(15600 + 48 * 160, np.float32)).shape == (2, 96, 64)
    # 3 s = 298 frames: patches start at 0, 48, ..., 192, and one more ends at the last frame.
    waveform = np.zeros(48000, np.float32)
    waveform[-600:] = 0.5  # a click in the last frames only, which the regular hops never reach
    patches = front.patches(waveform)
    spectrogram = front.spectrogram(waveform)
    assert patches.shape == (6, 96, 64) and len(spectrogram) == 298
    np.testing.assert_array_equal(patches[4], spectrogram[192:288])
    np.testing.assert_array_equal(patches[5], spectrogram[202:298])
    assert patches[5, -1].max() > patches[4, -1].max() + 1


def test_a_spectrogram_input_tflite_takes_its_patch_geometry_from_the_input_shape(tmp_path):
    # A tiny "model": [1, 20, 8] log-mel patch -> [1, 8] band means. Its patch is 20 frames, its hop 10.
    def band_means(patch):
        return tf.reduce_mean(patch, axis=1)

    concrete = tf.function(band_means, input_signature=[tf.TensorSpec([1, 20, 8], tf.float32)]).get_concrete_function()
    path = tmp_path / "bands.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert())
    model = load_audio_model(str(path))
    assert model.front_end == LogMelFrontEnd(mel_bands=8, patch_frames=20, patch_hop=10)
    assert model.input_size == 19 * 160 + 400 and model.output_dim == 8
    waveform = np.sin(np.arange(16000) * 0.3).astype(np.float32)  # 1 s: 98 frames
    patches = model.front_end.patches(waveform)
    assert len(patches) == 9  # starts 0, 10, ..., 70, then 78
    np.testing.assert_allclose(model.embed_clip(waveform), patches.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match=r"bands\.tflite.*works at 16000 Hz.*sample rate is 22050"):
        load_audio_model(str(path), sample_rate=22050)


# -- the real YAMNet ---------------------------------------------------------------------------------------


@needs_yamnet
def test_the_front_end_matches_the_upstream_test_spectra(yamnet):
    samples = np.fromfile(AUDIO / "yamnet_test_audio.bin", "<i2").astype(np.float32) / 32768.0
    reference = np.fromfile(AUDIO / "yamnet_test_spectra.bin", "<f4").reshape(96, 64)
    assert len(samples) == yamnet.input_size == 15600  # exactly one patch
    patches = yamnet.front_end.patches(samples)
    assert patches.shape == (1, 96, 64)
    assert np.corrcoef(patches[0].ravel(), reference.ravel())[0, 1] >= 0.999
    # The embedding of our patch and of the reference patch agree too (the README measured 0.94).
    assert _cosine(yamnet.embed_clip(samples), yamnet.embed_patches(reference[None])[0]) > 0.9


@needs_yamnet
@pytest.mark.parametrize("name, classes", [("speech", {0}), ("flute", {132}), ("synth", {383, 387, 388})])
def test_each_recording_gets_the_class_the_readme_names(yamnet_scores, name, classes):
    scores = yamnet_scores.embed_clip(_clip(name))  # the mean of the patches' class scores
    assert scores.shape == (521,)
    assert int(np.argmax(scores)) in classes, np.argsort(-scores)[:5]


@needs_yamnet
def test_speech_and_music_are_further_apart_than_two_halves_of_the_music(yamnet):
    assert yamnet.output_tensor == EMBEDDING and yamnet.output_dim == 1024
    flute = _clip("flute")  # 3 s: each half is 1.5 s, two patches
    half = len(flute) // 2
    speech, music = yamnet.embed_clip(_clip("speech")), yamnet.embed_clip(flute)
    first, second = yamnet.embed_clip(flute[:half]), yamnet.embed_clip(flute[half:])
    assert _cosine(first, second) > _cosine(speech, music) + 0.2
    assert _cosine(first, music) > _cosine(speech, music) + 0.2


# -- tfrec-video embed ---------------------------------------------------------------------------------------


@needs_yamnet
def test_embed_writes_yamnet_rows_and_refuses_to_resume_with_another_tensor(tmp_path, yamnet, capsys):
    csv = _media_csv(tmp_path, [(name, str(AUDIO / file)) for name, file in RECORDINGS.items()])
    out = tmp_path / "emb.parquet"
    command = ["embed", "--catalog", csv, "--audio-model", str(YAMNET), "--out", str(out), "--quiet"]
    assert main(command) == 0
    assert "3 rows written" in capsys.readouterr().out
    table = read_table_numpy(str(out), embeddings_schema(audio_dim=1024))
    assert table["audio_embedding"].shape == (3, 1024)
    vectors = dict(zip(table["video_id"], table["audio_embedding"]))
    for name in RECORDINGS:
        np.testing.assert_allclose(vectors[name], yamnet.embed_clip(_clip(name)), rtol=1e-5, atol=1e-5)
    identity = json.loads((out / "_embed_state.json").read_text())["identity"]
    assert identity["audio_output_tensor"] == EMBEDDING
    assert identity["audio_front_end"]["patch_frames"] == 96 and identity["audio_front_end"]["mel_bands"] == 64
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    assert main(command + ["--audio-output-tensor", SCORES]) == 2
    err = capsys.readouterr().err
    assert "holds shards of another embedding run" in err and "audio_output_tensor" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written  # nothing touched
    # Naming the default tensor is the same run: it resumes.
    assert main(command + ["--audio-output-tensor", EMBEDDING]) == 0
    assert "1 already done" in capsys.readouterr().out


@needs_yamnet
@pytest.mark.bad_input
def test_an_unknown_output_tensor_names_the_model_and_lists_tensors(tmp_path, capsys):
    csv = _media_csv(tmp_path, [("speech", str(AUDIO / RECORDINGS["speech"]))])
    out = tmp_path / "emb.parquet"
    assert main(["embed", "--catalog", csv, "--audio-model", str(YAMNET), "--out", str(out),
                 "--audio-output-tensor", "tower0/network/layer28/reduce_max", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "yamnet_spectra_in.tflite" in err and "no tensor named 'tower0/network/layer28/reduce_max'" in err
    assert f"'{EMBEDDING}'" in err and "expected one of its" in err  # the close name is listed
    assert not out.exists()
    # A weight tensor is a name of the graph, but not an embedding of the input.
    with pytest.raises(ConfigError, match=r"layer29/fc/MatMul' has shape \[521, 1024\], not an activation"):
        run_embed(csv, str(out), audio_model=str(YAMNET), audio_output_tensor="tower0/network/layer29/fc/MatMul",
                  progress=False)
    assert not out.exists()


@pytest.mark.bad_input
def test_an_output_tensor_for_a_hub_model_or_a_key_for_a_tflite_model_is_refused(tmp_path):
    (tmp_path / "saved_model").mkdir()
    with pytest.raises(ConfigError, match=r"saved_model' is not a \.tflite file: an output tensor name applies"):
        load_audio_model(str(tmp_path / "saved_model"), output_tensor=EMBEDDING)
    if YAMNET.exists():
        with pytest.raises(ConfigError, match=r"whose outputs have no keys: the output key 'embedding'"):
            load_audio_model(str(YAMNET), output_key="embedding")
        with pytest.raises(ConfigError, match="give an output index or an output tensor name, not both"):
            load_audio_model(str(YAMNET), output_key=0, output_tensor=EMBEDDING)
