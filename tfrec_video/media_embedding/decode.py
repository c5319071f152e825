"""Reading raw media files for the embedding step: thumbnails to float images, audio to framed waveforms.

* Images: JPEG, PNG (also GIF's first frame and BMP) through `tf.io.decode_image`,
  3 channels, resized with bilinear antialiased resampling to the encoder's
  input size (no crop: the aspect ratio is not kept), float32 in [0, 1].
* Audio: WAV, FLAC, MP3 and OGG Vorbis through tensorflow-io's
  `tfio.audio.AudioIOTensor`, which reads the format from the file itself; the
  channels are averaged to mono, samples scaled to [-1, 1], and the clip is
  resampled to the encoder's rate with `tfio.audio.resample`. `frames` then
  cuts it into the encoder's clip length (the last frame padded with silence),
  and the embedding step mean-pools the frames' embeddings.

Every failure (a missing file, bytes that do not decode, an empty clip) raises
`MediaError` with the path and the reason, which the embedding step logs and
counts instead of stopping.

Example:

>>> import numpy as np
>>> frames(np.ones(25000, np.float32), 16000).shape   # 1.56 s at 16 kHz in 1 s frames
(2, 16000)
"""

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import open_file


class MediaError(Exception):
    """A media file that cannot be used: missing, unreadable or undecodable.

    Args:
      path: the file.
      reason: what went wrong, in words.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:300]


def _read_bytes(path: str) -> bytes:
    try:
        with open_file(path, "rb") as f:
            return f.read()
    except (OSError, tf.errors.OpError) as error:
        raise MediaError(path, f"cannot read the file ({_first_line(error)})") from None


def read_image(path: str, size: Sequence[int]) -> np.ndarray:
    """The image at `path` as float32 `[height, width, 3]` in [0, 1], resized to `size`.

    Raises:
      MediaError: the file is missing or is not a decodable image.
    """
    data = _read_bytes(path)
    if not data:
        raise MediaError(path, "empty file")
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, ValueError) as error:
        raise MediaError(path, f"not a decodable JPEG/PNG image ({_first_line(error)})") from None
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.resize(image, list(size), method="bilinear", antialias=True)
    return np.clip(image.numpy(), 0.0, 1.0)


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """The audio at `path` as a float32 mono waveform in [-1, 1] at `sample_rate`.

    Raises:
      MediaError: the file is missing, not a WAV/FLAC/MP3/OGG file tensorflow-io
        decodes, or holds no samples.
    """
    import tensorflow_io as tfio

    if not tf.io.gfile.exists(path):
        raise MediaError(path, "no such file")
    try:
        audio = tfio.audio.AudioIOTensor(path)
        rate = int(audio.rate.numpy())
        samples = audio.to_tensor()
    except (tf.errors.OpError, ValueError) as error:
        raise MediaError(path, f"not a decodable WAV/FLAC/MP3/OGG file ({_first_line(error)})") from None
    if samples.shape[0] == 0 or rate <= 0:
        raise MediaError(path, "the audio holds no samples")
    if samples.dtype.is_integer:
        # Integer PCM: scale by the type's full range, as tf.audio.decode_wav does for 16-bit.
        samples = tf.cast(samples, tf.float32) / float(-samples.dtype.min)
    waveform = tf.reduce_mean(tf.cast(samples, tf.float32), axis=1, keepdims=True)
    if rate != sample_rate:
        waveform = tfio.audio.resample(waveform, rate_in=rate, rate_out=sample_rate)
    waveform = waveform.numpy()[:, 0]
    if not np.all(np.isfinite(waveform)):
        raise MediaError(path, "the decoded samples are not finite")
    return np.clip(waveform, -1.0, 1.0)


def frames(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """`waveform` cut into `[frames, num_samples]`, the last frame padded with silence (at least one frame)."""
    count = max(1, math.ceil(len(waveform) / num_samples))
    padded = np.zeros(count * num_samples, np.float32)
    padded[:len(waveform)] = waveform
    return padded.reshape(count, num_samples)
