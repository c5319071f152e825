"""`ImageEncoder` / `AudioEncoder`: raw media bytes → embedding through `hub.KerasLayer`.

No model hub is reachable here, so the tests save their own tiny encoders in TF
Hub's reusable SavedModel format (a `__call__` tf.function plus `variables` and
`trainable_variables`, as `hub.KerasLayer` expects) and pass the directory as
the handle. The real pretrained image model in ../shared/pretrained is a
.tflite file, which `hub.KerasLayer` cannot load, so it is not used here.
"""

import io
import json
import os
import struct
import subprocess
import sys
import wave

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf

from tfrec_video.datasets.builtin.media import encode_image, encode_wav, render_thumbnail
from tfrec_video.towers.media_encoder import AudioEncoder, ImageEncoder, decodable_image_mask, decodable_wav_mask

RATE = 16000
# Image encoder: mean RGB colour @ W + b. W's rows are the embeddings of pure red, green, blue.
IMAGE_W = [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.5]]
BANDS = 8  # audio encoders: mean |DFT| magnitude in 8 bands of 1 kHz, then @ W


def _save_hub_model(path, fn, input_spec, variables):
    """Saves `fn` as a reusable SavedModel (the TF Hub format `hub.KerasLayer` loads)."""
    obj = tf.train.Checkpoint()
    obj.variables = list(variables)
    obj.trainable_variables = [v for v in variables if v.trainable]
    obj.__call__ = tf.function(fn, input_signature=[input_spec])
    tf.saved_model.save(obj, str(path))
    return str(path)


def _band_energies(waveforms):
    """[..., n] waveforms → [..., 8] mean DFT magnitudes over 8 equal bands up to Nyquist."""
    magnitude = tf.abs(tf.signal.rfft(waveforms))
    n = magnitude.shape[-1] - 1
    bands = tf.reshape(magnitude[..., :n], tf.concat([tf.shape(magnitude)[:-1], [BANDS, n // BANDS]], 0))
    return tf.reduce_mean(bands, axis=-1)


@pytest.fixture(scope="module")
def handles(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    w, b = tf.Variable(IMAGE_W), tf.Variable(tf.zeros([4]))
    image = _save_hub_model(root / "image32", lambda x: tf.reduce_mean(x, [1, 2]) @ w + b,
                            tf.TensorSpec([None, 32, 32, 3], tf.float32), [w, b])
    # Any image size, dict output: only usable with image_size and output_key.
    w2 = tf.Variable(IMAGE_W)
    any_size = _save_hub_model(
        root / "image_any", lambda x: {"embedding": tf.reduce_mean(x, [1, 2]) @ w2, "logits": tf.reduce_sum(x, [1, 2])},
        tf.TensorSpec([None, None, None, 3], tf.float32), [w2])
    audio_w = np.random.default_rng(0).normal(size=(BANDS, 6)).astype(np.float32)
    wa = tf.Variable(audio_w)
    audio = _save_hub_model(root / "audio", lambda x: tf.math.log1p(_band_energies(x)) @ wa,
                            tf.TensorSpec([None, RATE], tf.float32), [wa])

    # YAMNet-style: one 1-D waveform in, (scores, frame embeddings [frames, 6], spectrogram) out.
    wy = tf.Variable(audio_w)

    def yamnet_like(x):
        frames = tf.signal.frame(x, 4000, 4000)
        embeddings = tf.math.log1p(_band_energies(frames)) @ wy
        return tf.nn.softmax(embeddings), embeddings, tf.abs(tf.signal.rfft(frames))

    per_clip = _save_hub_model(root / "yamnet_like", yamnet_like, tf.TensorSpec([None], tf.float32), [wy])
    return dict(image=image, any_size=any_size, audio=audio, per_clip=per_clip)


def _solid(rgb, height=32, width=32):
    return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()


def _tone(freq, seconds=1.0, rate=RATE):
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _stdlib_wav(samples, rate=RATE, width=2):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(width)
        out.setframerate(rate)
        if width == 2:
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        else:
            out.writeframes((128 + np.clip(samples, -1, 1) * 127).astype(np.uint8).tobytes())
    return buffer.getvalue()


def _wav_with_chunks(chunks, fmt_size=16, rate=RATE, channels=1, before_fmt=()):
    """A hand-made 16-bit PCM WAV: `before_fmt` chunks, the fmt chunk, then `chunks` ((id, payload) pairs)."""
    def pack(pairs):
        return b"".join(cid + struct.pack("<I", len(payload)) + payload for cid, payload in pairs)

    fmt = struct.pack("<HHIIHH", 1, channels, rate, 2 * channels * rate, 2 * channels, 16) + b"\x00" * (fmt_size - 16)
    body = b"WAVE" + pack(before_fmt) + b"fmt " + struct.pack("<I", fmt_size) + fmt + pack(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _decodes(fn, data):
    try:
        fn(tf.constant(data))
        return True
    except (tf.errors.InvalidArgumentError, UnicodeDecodeError):  # the error may quote the bad bytes
        return False


RED, BLUE = encode_image(_solid([255, 0, 0])), encode_image(_solid([0, 0, 255]))


def test_image_embeddings_from_png_and_jpeg_bytes(handles):
    encoder = ImageEncoder(handles["image"])
    assert encoder.image_size == (32, 32) and encoder.output_dim == 4
    png = RED
    batch = [
        png,                                                # 0 red PNG
        BLUE,                                               # 1 blue PNG
        encode_image(_solid([255, 0, 0]), "jpeg"),          # 2 red JPEG
        encode_image(_solid([255, 0, 0], 50, 70)),          # 3 red PNG of another size: resized
        tf.io.encode_png(np.full([20, 20, 1], 128, np.uint8)).numpy(),  # 4 grayscale PNG: 3 channels
        b"",                                                # 5 no thumbnail
        b"definitely not an image",                         # 6 garbage
        png[:-20],                                          # 7 truncated PNG
        encode_image(_solid([255, 0, 0]), "jpeg")[:200],    # 8 truncated JPEG
    ]
    out = encoder(tf.constant(batch)).numpy()
    assert out.shape == (9, 4) and out.dtype == np.float32
    # Pixels reach the encoder as floats in [0, 1]: pure red is exactly W's first row.
    np.testing.assert_allclose(out[0], IMAGE_W[0], atol=1e-5)
    np.testing.assert_allclose(out[1], IMAGE_W[2], atol=1e-5)
    assert np.linalg.norm(out[0] - out[1]) > 1.0
    np.testing.assert_allclose(out[2], out[0], atol=0.03)   # JPEG ≈ PNG
    np.testing.assert_allclose(out[3], out[0], atol=1e-5)
    np.testing.assert_allclose(out[4], [128 / 255] * 3 + [0.5 * 3 * 128 / 255], atol=1e-5)
    np.testing.assert_array_equal(out[5:], 0.0)


def test_built_in_thumbnails_of_different_topics_separate(handles):
    rng = np.random.default_rng(0)
    topics = [0, 0, 3, 3]
    images = [encode_image(render_thumbnail(np.eye(16)[t], rng), fmt) for t, fmt in zip(topics, ["png", "jpeg"] * 2)]
    out = ImageEncoder(handles["image"])(tf.constant(images)).numpy()
    same = max(np.linalg.norm(out[0] - out[1]), np.linalg.norm(out[2] - out[3]))
    assert np.linalg.norm(out[0] - out[2]) > 3 * same


def test_image_mask_never_accepts_what_decode_image_rejects():
    png, jpeg = RED, encode_image(_solid([255, 0, 0]), "jpeg")
    cases = {
        "png": (png, True), "jpeg": (jpeg, True), "jpeg + trailing bytes": (jpeg + b"\x00" * 16, True),
        "empty": (b"", False), "garbage": (bytes(np.random.default_rng(1).integers(0, 256, 300, np.uint8)), False),
        "jpeg start only": (jpeg[:3], False), "png signature only": (png[:8], False),
        "truncated png": (png[: len(png) // 2], False), "truncated jpeg": (jpeg[: len(jpeg) // 2], False),
        "gif": (b"GIF89a" + b"\x00" * 30, False),
    }
    mask = decodable_image_mask(tf.constant([data for data, _ in cases.values()])).numpy()
    decode = lambda data: tf.io.decode_image(data, channels=3, expand_animations=False)  # noqa: E731
    for (name, (data, expected)), accepted in zip(cases.items(), mask):
        assert accepted == expected, name
        assert not accepted or _decodes(decode, data), name


def test_wav_mask_agrees_with_decode_wav():
    pcm = (np.arange(100, dtype="<i2") * 50).tobytes()
    valid = encode_wav(_tone(440, 0.1))
    cases = {  # name: (bytes, whether TensorFlow's WAV reader takes them)
        "tf.audio.encode_wav": (valid, True), "stdlib wave": (_stdlib_wav(_tone(440, 0.1)), True),
        "LIST chunk before data": (_wav_with_chunks([(b"LIST", b"INFOISFT\x02\x00x\x00"), (b"data", pcm)]), True),
        "fmt chunk of 18 bytes": (_wav_with_chunks([(b"data", pcm)], fmt_size=18), True),
        "stereo": (tf.audio.encode_wav(np.zeros([50, 2], np.float32), RATE).numpy(), True),
        "no samples": (_wav_with_chunks([(b"data", b"")]), True),
        "last chunk runs past the end": (_wav_with_chunks([(b"data", pcm)]) + b"LIST" + struct.pack("<I", 99), True),
        "JUNK before fmt": (_wav_with_chunks([(b"data", pcm)], before_fmt=[(b"JUNK", b"\x00" * 28)]), True),
        "LIST before fmt": (_wav_with_chunks([(b"data", pcm)], before_fmt=[(b"LIST", b"INFO")]), False),
        "JUNK past the end": (b"RIFF" + struct.pack("<I", 30) + b"WAVE" + b"JUNK" + struct.pack("<I", 99) + b"\x00" * 14,
                              False),
        "empty": (b"", False), "garbage": (b"RIFF but not really a wav file at all........", False),
        "truncated": (valid[: len(valid) // 2], False), "header only": (valid[:44], False),
        "short header": (valid[:30], False), "trailing byte": (valid + b"\x00", False),
        "two data chunks": (_wav_with_chunks([(b"data", pcm), (b"data", pcm)]), False),
        "no data chunk": (_wav_with_chunks([(b"LIST", b"INFO")]), False),
        "8-bit": (_stdlib_wav(_tone(440, 0.1), width=1), False),
    }
    mask = decodable_wav_mask(tf.constant([data for data, _ in cases.values()])).numpy()
    decode = lambda data: tf.audio.decode_wav(data, desired_channels=1)  # noqa: E731
    for (name, (data, expected)), accepted in zip(cases.items(), mask):
        assert accepted == expected == _decodes(decode, data), name
    eight_khz = encode_wav(_tone(440, 0.1), 8000)
    assert decodable_wav_mask(tf.constant([eight_khz, valid]), sample_rate=RATE).numpy().tolist() == [False, True]


def test_audio_embeddings_from_wav_bytes(handles):
    encoder = AudioEncoder(handles["audio"])
    assert encoder.num_samples == RATE and not encoder.per_clip and encoder.output_dim == 6
    low, high = _tone(440), _tone(3000)
    half = _tone(440, 0.5)
    batch = [
        encode_wav(low),                                   # 0 440 Hz
        _stdlib_wav(high),                                 # 1 3 kHz, written by the stdlib
        encode_wav(half),                                  # 2 0.5 s: padded with silence
        encode_wav(np.concatenate([half, np.zeros_like(half)])),  # 3 what 2 is padded to
        encode_wav(np.concatenate([low, high])),           # 4 2 s: cropped to its first second
        b"",                                               # 5 no audio
        b"garbage bytes",                                  # 6
        encode_wav(_tone(440, 1.0, 8000), 8000),           # 7 another sample rate
    ]
    out = encoder(tf.constant(batch)).numpy()
    assert out.shape == (8, 6)
    assert np.linalg.norm(out[0] - out[1]) > 1.0
    np.testing.assert_allclose(out[2], out[3], atol=1e-4)
    np.testing.assert_allclose(out[4], out[0], atol=1e-4)
    assert np.linalg.norm(out[2] - out[0]) > 1e-2
    np.testing.assert_array_equal(out[5:], 0.0)


def test_per_clip_encoder_with_tuple_output_is_mean_pooled(handles):
    with pytest.raises(ValueError, match="returns 3 outputs"):
        AudioEncoder(handles["per_clip"])
    encoder = AudioEncoder(handles["per_clip"], output_key=1)
    assert encoder.per_clip and encoder.output_dim == 6
    clips = [_tone(440), _tone(3000)]
    out = encoder(tf.constant([encode_wav(c) for c in clips] + [b""])).numpy()
    reference = tf.saved_model.load(handles["per_clip"])
    for clip, row in zip(clips, out):
        decoded = tf.audio.decode_wav(encode_wav(clip), desired_channels=1).audio[:, 0]
        np.testing.assert_allclose(row, tf.reduce_mean(reference(decoded)[1], 0).numpy(), rtol=1e-5, atol=1e-5)
    assert np.linalg.norm(out[0] - out[1]) > 1.0
    np.testing.assert_array_equal(out[2], 0.0)


def test_image_size_and_output_key_for_a_model_without_static_size(handles):
    with pytest.raises(ValueError, match="image_size"):
        ImageEncoder(handles["any_size"], output_key="embedding")
    with pytest.raises(ValueError, match="'embedding', 'logits'"):
        ImageEncoder(handles["any_size"], image_size=16)
    encoder = ImageEncoder(handles["any_size"], image_size=16, output_key="embedding")
    assert encoder.image_size == (16, 16) and encoder.output_dim == 4
    np.testing.assert_allclose(encoder(tf.constant([RED]))[0], [1, 0, 0, 0.5], atol=1e-5)
    with pytest.raises(ValueError, match=r"takes \(32, 32\)"):
        ImageEncoder(handles["image"], image_size=64)
    with pytest.raises(ValueError, match="16000 samples"):
        AudioEncoder(handles["audio"], clip_seconds=0.5)


def test_frozen_by_default_and_fine_tunable(handles):
    frozen = ImageEncoder(handles["image"])
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 2
    images = tf.constant([RED, BLUE])
    before = frozen(images).numpy()

    tuned = ImageEncoder(handles["image"], trainable=True)
    assert len(tuned.trainable_weights) == 2
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tuned(images, training=True))
    grads = tape.gradient(loss, tuned.trainable_weights)
    assert all(g is not None for g in grads)
    tf.keras.optimizers.SGD(0.1).apply_gradients(zip(grads, tuned.trainable_weights))
    assert np.abs(tuned(images).numpy() - before).max() > 1e-2
    np.testing.assert_array_equal(frozen(images).numpy(), before)  # its own copy of the variables

    audio = AudioEncoder(handles["per_clip"], output_key=1)
    assert audio.trainable_weights == []
    audio.trainable = True  # unfreezing later works too, through map_fn
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(audio(tf.constant([encode_wav(_tone(440))]), training=True))
    assert [g is not None for g in tape.gradient(loss, audio.trainable_weights)] == [True]


def test_keras_exported_encoder_with_training_argument(tmp_path):
    """Most TF Hub models are Keras models exported with tf.saved_model.save: their `__call__` takes
    `training`, has one trace per mode, and may hold batch norm statistics."""
    inputs = tf.keras.Input([24, 24, 3])
    conv = tf.keras.layers.Conv2D(5, 3, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=0))
    features = tf.keras.layers.BatchNormalization()(conv(inputs))
    tf.saved_model.save(tf.keras.Model(inputs, tf.keras.layers.GlobalAveragePooling2D()(features)),
                        str(tmp_path / "keras_cnn"))
    handle = str(tmp_path / "keras_cnn")
    images = tf.constant([encode_image(_solid([c, 255 - c, 40], 30, 40)) for c in (10, 120, 250)])

    frozen = ImageEncoder(handle)
    assert frozen.image_size == (24, 24) and frozen.output_dim == 5 and frozen.trainable_weights == []
    # Frozen, the encoder always runs in inference mode: batch statistics are not used.
    np.testing.assert_array_equal(frozen(images, training=True).numpy(), frozen(images, training=False).numpy())

    tuned = ImageEncoder(handle, trainable=True)
    assert len(tuned.trainable_weights) == 4  # kernel, bias, gamma, beta
    assert np.abs(tuned(images, training=True).numpy() - tuned(images, training=False).numpy()).max() > 1e-3
    thumbnails = tf.keras.Input(shape=(), dtype=tf.string)
    head = tf.keras.layers.Dense(1, kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1))
    model = tf.keras.Model(thumbnails, head(tuned(thumbnails)))
    model.compile(tf.keras.optimizers.SGD(0.1), "mse")
    kernel = tuned.trainable_weights[0].numpy()
    model.fit(tf.data.Dataset.from_tensor_slices((images, [0.0, 1.0, 0.0])).batch(3), epochs=1, verbose=0)
    assert np.abs(tuned.trainable_weights[0].numpy() - kernel).max() > 0


def test_config_round_trip(handles):
    image = ImageEncoder(handles["image"], name="thumbnail_encoder")
    audio = AudioEncoder(handles["per_clip"], sample_rate=RATE, clip_seconds=1.0, output_key=1, trainable=True)
    image_config, audio_config = image.get_config(), audio.get_config()
    json.dumps([image_config, audio_config])
    assert image_config["handle"] == handles["image"] and image_config["image_size"] == [32, 32]
    assert image_config["trainable"] is False and image_config["output_key"] is None
    assert audio_config["output_key"] == 1 and audio_config["trainable"] is True
    assert (audio_config["sample_rate"], audio_config["clip_seconds"]) == (RATE, 1.0)
    image2, audio2 = ImageEncoder.from_config(image_config), AudioEncoder.from_config(audio_config)
    assert image2.name == "thumbnail_encoder" and image2.get_config() == image_config
    assert len(audio2.trainable_weights) == 1 and audio2.get_config() == audio_config
    images = tf.constant([RED, BLUE, b""])
    np.testing.assert_array_equal(image2(images).numpy(), image(images).numpy())
    wavs = tf.constant([encode_wav(_tone(440)), b""])
    np.testing.assert_array_equal(audio2(wavs).numpy(), audio(wavs).numpy())


def test_in_a_functional_model_with_static_output_width(handles):
    encoder = ImageEncoder(handles["image"])
    assert encoder.compute_output_shape([None]).as_list() == [None, 4]
    thumbnails = tf.keras.Input(shape=(), dtype=tf.string, name="thumbnail")
    embedding = encoder(thumbnails)
    assert embedding.shape.as_list() == [None, 4]
    model = tf.keras.Model(thumbnails, tf.keras.layers.Dense(2)(embedding))
    assert model(tf.constant([RED, b""])).shape == (2, 2)


_SERVE_SCRIPT = """
import json, sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
batch = json.load(open(sys.argv[2]))
out = serve(thumbnail=tf.constant([bytes.fromhex(h) for h in batch["thumbnail"]]),
            audio=tf.constant([bytes.fromhex(h) for h in batch["audio"]]))
print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))
print("tensorflow_hub" in sys.modules, "tfrec_video" in sys.modules)
"""


def test_servable_saved_model_taking_raw_bytes(handles, tmp_path):
    image_encoder, audio_encoder = ImageEncoder(handles["image"]), AudioEncoder(handles["audio"])
    module = tf.Module()
    module.image_encoder, module.audio_encoder = image_encoder, audio_encoder

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
    def serve(thumbnail, audio):
        return {"image_embedding": image_encoder(thumbnail), "audio_embedding": audio_encoder(audio)}

    export = str(tmp_path / "export")
    tf.saved_model.save(module, export, signatures={"serving_default": serve})

    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(export, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for fn in graph.library.function for n in fn.node_def}
    assert {"DecodeImage", "DecodeWav"} <= ops
    assert not {op for op in ops if "PyFunc" in op or op.startswith("IO>")}

    batch = {"thumbnail": [RED, BLUE, b"", b"junk"], "audio": [encode_wav(_tone(440)), b"", b"junk"]}
    expected = {"image_embedding": image_encoder(tf.constant(batch["thumbnail"])).numpy(),
                "audio_embedding": audio_encoder(tf.constant(batch["audio"])).numpy()}
    batch_file = tmp_path / "batch.json"
    batch_file.write_text(json.dumps({k: [v.hex() for v in vs] for k, vs in batch.items()}))
    # A fresh process with TensorFlow alone (no tfrec_video, no tensorflow_hub) serves it.
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, export, str(batch_file)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    served = json.loads(lines[-2])
    assert lines[-1] == "False False"
    for key, value in expected.items():
        np.testing.assert_allclose(np.array(served[key]), value, atol=1e-6)
