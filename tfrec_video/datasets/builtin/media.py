"""Raw media for the built-in dataset: topic-dependent thumbnails and audio clips.

A small subset of the built-in catalog gets real, encoded media files, so the
raw-media path (decode → pretrained encoder → embedding) runs on data that has
signal:

* **Thumbnails** (64x64 RGB, PNG or JPEG): the background colour is the video's
  dominant topic's colour (`topic_colour`), overlaid with stripes whose angle
  and spatial frequency also depend on that topic, a blob in the secondary
  topic's colour, a random brightness and stripe phase, and pixel noise.
* **Audio** (1 s, 16 kHz mono WAV): a sum of sine tones, one per topic at
  `topic_frequency(k)`, each weighted by the video's topic mixture, amplitude-
  modulated at a topic-dependent rate, plus white noise.

Encoding uses TensorFlow ops (`tf.io.encode_png`, `tf.io.encode_jpeg`,
`tf.audio.encode_wav`), which are deterministic, so the same seed gives
byte-identical files.

Example:

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> img = render_thumbnail(np.eye(16)[3], rng)       # uint8 [64, 64, 3]
>>> wav = render_audio(np.eye(16)[3], rng)           # float32 [16000]
"""

import numpy as np

THUMBNAIL_SIZE = 64
SAMPLE_RATE = 16000
CLIP_SECONDS = 1.0

# 20 well-separated colours (RGB), one per topic.
_PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
        [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
        [0, 128, 128], [220, 190, 255], [170, 110, 40], [255, 250, 200], [128, 0, 0],
        [170, 255, 195], [128, 128, 0], [255, 215, 180], [0, 0, 128], [128, 128, 128],
    ],
    dtype=np.float64,
)


def topic_colour(topic: int) -> np.ndarray:
    """The RGB colour (floats 0-255) of a topic's thumbnails."""
    return _PALETTE[topic % len(_PALETTE)].copy()


def topic_frequency(topic: int) -> float:
    """The tone frequency (Hz) of a topic's audio: three semitones apart from 220 Hz up
    (topic 19 is about 5.9 kHz, under the 8 kHz Nyquist limit)."""
    return float(220.0 * 2.0 ** (3 * topic / 12.0))


def render_thumbnail(theta: np.ndarray, rng: np.random.Generator, noise_std: float = 18.0) -> np.ndarray:
    """Draws a thumbnail for a video with topic mixture `theta`.

    Args:
      theta: [K] topic mixture.
      rng: the random generator to draw nuisance variation from.
      noise_std: pixel noise standard deviation (0-255 scale).

    Returns:
      uint8 [64, 64, 3].
    """
    order = np.argsort(-np.asarray(theta), kind="stable")
    dom, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
    n = THUMBNAIL_SIZE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64) / n
    angle = np.pi * (dom % 8) / 8.0
    freq = 3.0 + (dom % 5)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    brightness = rng.uniform(0.85, 1.1)
    img = topic_colour(dom)[None, None, :] * (0.7 + 0.3 * stripes[..., None]) * brightness
    # A blob in the secondary topic's colour, sized by its weight.
    cy, cx = rng.uniform(0.25, 0.75, size=2)
    radius = 0.1 + 0.3 * float(theta[second])
    blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < radius ** 2
    img[blob] = 0.5 * img[blob] + 0.5 * topic_colour(second)
    img = img + rng.normal(0.0, noise_std, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_audio(theta: np.ndarray, rng: np.random.Generator, noise_std: float = 0.15) -> np.ndarray:
    """Synthesises a 1 s, 16 kHz mono clip for a video with topic mixture `theta`.

    Args:
      theta: [K] topic mixture.
      rng: the random generator for phases and noise.
      noise_std: white-noise standard deviation relative to a unit tone.

    Returns:
      float32 [16000] samples in [-1, 1].
    """
    theta = np.asarray(theta, dtype=np.float64)
    t = np.arange(int(SAMPLE_RATE * CLIP_SECONDS)) / SAMPLE_RATE
    sig = np.zeros_like(t)
    for k in np.flatnonzero(theta > 0.02):
        phase = rng.uniform(0, 2 * np.pi)
        sig += theta[k] * np.sin(2 * np.pi * topic_frequency(int(k)) * t + phase)
    dom = int(np.argmax(theta))
    rate = 2.0 + (dom % 5)   # a topic-dependent rhythm, in Hz
    sig *= 0.6 + 0.4 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    sig += rng.normal(0.0, noise_std, size=t.shape)
    sig *= 0.8 / max(np.max(np.abs(sig)), 1e-6)
    return sig.astype(np.float32)


def encode_image(img: np.ndarray, fmt: str = "png") -> bytes:
    """Encodes a uint8 [H, W, 3] image as PNG or JPEG bytes with TensorFlow."""
    import tensorflow as tf

    if fmt == "png":
        return tf.io.encode_png(img).numpy()
    if fmt in ("jpg", "jpeg"):
        return tf.io.encode_jpeg(img, quality=90).numpy()
    raise ValueError(f"Unknown image format {fmt!r}; expected 'png' or 'jpeg'.")


def encode_wav(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encodes float32 mono samples in [-1, 1] as 16-bit WAV bytes with TensorFlow."""
    import tensorflow as tf

    return tf.audio.encode_wav(np.asarray(samples, np.float32)[:, None], sample_rate).numpy()
