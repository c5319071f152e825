"""Reading raw media files for the embedding step: thumbnails to float images, audio to framed waveforms.

* Images: JPEG, PNG (also GIF's first frame and BMP) through `tf.io.decode_image`,
  3 channels, resized with bilinear antialiased resampling to the encoder's
  input size (no crop: the aspect ratio is not kept), float32 in [0, 1].
* Audio: WAV files are read here (`decode_wav`, numpy), in every common sample
  encoding: 8-bit unsigned PCM (silence at 128), 16-, 24- and 32-bit signed PCM,
  and 32- or 64-bit IEEE float, in plain or `WAVE_FORMAT_EXTENSIBLE` headers,
  with any other chunks (`LIST`, `fact`) skipped. (tensorflow-io's reader
  mis-scales 8- and 32-bit PCM and refuses 64-bit float and files with a chunk
  before the samples; `tf.audio.decode_wav` reads only 16-bit PCM.) Other
  encodings inside a WAV (ADPCM, A-law, mu-law, ...)
  raise `MediaError` naming the encoding. FLAC, MP3 and OGG Vorbis go through
  tensorflow-io's `tfio.audio.AudioIOTensor`, which reads the format from the
  file itself. Either way the channels are averaged to mono, samples scaled to
  [-1, 1], and the clip is resampled to the encoder's rate with
  `tfio.audio.resample`. `frames` then cuts it into the encoder's clip length
  (the last frame padded with silence), and the embedding step mean-pools the
  frames' embeddings.

Every failure (a missing file, bytes that do not decode, an empty clip) raises
`MediaError` with the path and the reason, which the embedding step logs and
counts instead of stopping.

Example:

>>> import numpy as np
>>> frames(np.ones(25000, np.float32), 16000).shape   # 1.56 s at 16 kHz in 1 s frames
(2, 16000)
"""

import math
import struct
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrec_video.data.files import open_file
from tfrec_video.errors import first_line


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


def _read_bytes(path: str) -> bytes:
    try:
        with open_file(path, "rb") as f:
            return f.read()
    except (OSError, tf.errors.OpError) as error:
        raise MediaError(path, f"cannot read the file ({first_line(error, last=True)})") from None


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
        raise MediaError(path, f"not a decodable JPEG/PNG image ({first_line(error, last=True)})") from None
    image = tf.image.convert_image_dtype(image, tf.float32)
    image = tf.image.resize(image, list(size), method="bilinear", antialias=True)
    return np.clip(image.numpy(), 0.0, 1.0)


# WAVE format tags (RFC 2361) named in errors; only PCM and IEEE float are decoded.
_WAV_PCM, _WAV_FLOAT, _WAV_EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_WAV_FORMAT_NAMES = {0x0001: "PCM", 0x0002: "Microsoft ADPCM", 0x0003: "IEEE float", 0x0006: "A-law",
                     0x0007: "mu-law", 0x0011: "IMA ADPCM", 0x0031: "GSM 6.10", 0x0050: "MPEG",
                     0x0055: "MPEG Layer 3", 0x00FF: "AAC", 0x0161: "Windows Media Audio"}
# The 14 bytes after the format tag in a KSDATAFORMAT_SUBTYPE_* GUID of an extensible header.
_WAV_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_WAV_SUPPORTED = ("8-bit unsigned, 16-, 24- or 32-bit PCM or 32- or 64-bit IEEE float WAV "
                  "(plain or WAVE_FORMAT_EXTENSIBLE), FLAC, MP3 or OGG Vorbis")


def is_wav(data: bytes) -> bool:
    """Whether `data` starts like a RIFF WAVE file (also big-endian RIFX and RF64, which `decode_wav` refuses)."""
    return len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX", b"RF64") and data[8:12] == b"WAVE"


def _wav_chunks(path: str, data: bytes) -> Tuple[bytes, bytes]:
    """The bodies of the first `fmt ` and `data` chunks; other chunks (`LIST`, `fact`, ...) are skipped."""
    if data[:4] != b"RIFF":
        raise MediaError(path, f"unsupported WAV container {data[:4].decode('latin-1')!r} "
                               f"(expected {_WAV_SUPPORTED})")
    fmt = body = None
    pos = 12
    while pos + 8 <= len(data) and (fmt is None or body is None):
        chunk, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if chunk == b"fmt " and fmt is None:
            fmt = data[pos + 8:pos + 8 + size]
        elif chunk == b"data" and body is None:
            # A writer that streamed the file may leave the size at 0xFFFFFFFF: the rest of
            # the file. A file cut short keeps the samples it has (whole frames, below).
            body = data[pos + 8:] if size == 0xFFFFFFFF else data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)  # Chunks are padded to an even size.
    if fmt is None or len(fmt) < 16:
        raise MediaError(path, "not a valid WAV file: no format ('fmt ') chunk")
    if body is None:
        raise MediaError(path, "not a valid WAV file: no 'data' chunk")
    return fmt, body


def decode_wav(path: str, data: bytes) -> Tuple[int, np.ndarray]:
    """Decodes a WAV file's bytes to float samples.

    Args:
      path: the file, for messages.
      data: its bytes (a RIFF WAVE file).

    Returns:
      `(sample_rate, samples)`: float32 `[frames, channels]` in [-1, 1] for PCM
      (8-bit unsigned, offset 128; 16-, 24- and 32-bit signed, each divided by its
      full scale), and the stored values for IEEE float (32 or 64 bits).

    Raises:
      MediaError: the header is broken, or the samples use another encoding
        (ADPCM, A-law, mu-law, ...), named in the message.
    """
    fmt, body = _wav_chunks(path, data)
    tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _WAV_EXTENSIBLE:
        # The real encoding is the sub-format GUID, whose first two bytes are a format tag.
        if len(fmt) < 40 or fmt[26:40] != _WAV_GUID_TAIL:
            raise MediaError(path, f"unsupported WAV encoding: extensible header with sub-format "
                                   f"{fmt[24:40].hex() or 'missing'} (expected {_WAV_SUPPORTED})")
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if channels == 0 or rate == 0 or block == 0 or block % channels:
        raise MediaError(path, f"not a valid WAV file: {channels} channels, {rate} Hz, {block} bytes a frame")
    width = block // channels  # The container size of one sample, which holds `bits` (left-justified).
    if not ((tag == _WAV_PCM and width in (1, 2, 3, 4)) or (tag == _WAV_FLOAT and width in (4, 8))):
        name = _WAV_FORMAT_NAMES.get(tag, "unknown")
        raise MediaError(path, f"unsupported WAV encoding: format 0x{tag:04x} ({name}), {bits}-bit "
                               f"(expected {_WAV_SUPPORTED})")
    count = len(body) // block
    raw = body[:count * block]
    if tag == _WAV_FLOAT:
        with np.errstate(over="ignore"):  # Huge doubles become inf, refused by the finite check.
            samples = np.frombuffer(raw, "<f4" if width == 4 else "<f8").astype(np.float32)
    elif width == 1:  # 8-bit PCM is the one unsigned width.
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        # Into the top three bytes of an int32, then an arithmetic shift keeps the sign.
        wide = np.zeros((count * channels, 4), np.uint8)
        wide[:, 1:] = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        samples = ((wide.view("<i4")[:, 0] >> 8) / float(1 << 23)).astype(np.float32)
    else:
        samples = (np.frombuffer(raw, "<i2" if width == 2 else "<i4") / float(1 << (8 * width - 1))).astype(np.float32)
    return int(rate), samples.reshape(count, channels)


def _decode_other(path: str) -> Tuple[int, np.ndarray]:
    """`(rate, float32 [frames, channels])` of a FLAC, MP3 or OGG file, through tensorflow-io."""
    import tensorflow_io as tfio

    try:
        audio = tfio.audio.AudioIOTensor(path)
        rate = int(audio.rate.numpy())
        samples = audio.to_tensor().numpy()
    except (tf.errors.OpError, ValueError) as error:
        raise MediaError(path, f"not a decodable audio file ({first_line(error, last=True)}; expected "
                               f"{_WAV_SUPPORTED})") from None
    if samples.dtype.kind == "u":
        half = float(1 << (8 * samples.dtype.itemsize - 1))
        samples = (samples.astype(np.float64) - half) / half
    elif samples.dtype.kind == "i":
        # Integer PCM: scale by the type's full range, as tf.audio.decode_wav does for 16-bit.
        samples = samples / float(-np.iinfo(samples.dtype).min)
    return rate, np.asarray(samples, np.float32)


def read_audio(path: str, sample_rate: int) -> np.ndarray:
    """The audio at `path` as a float32 mono waveform in [-1, 1] at `sample_rate`.

    Raises:
      MediaError: the file is missing, is a WAV of an encoding `decode_wav`
        does not read, is not a FLAC/MP3/OGG file tensorflow-io decodes, or holds
        no samples.
    """
    if not tf.io.gfile.exists(path):
        raise MediaError(path, "no such file")
    data = _read_bytes(path)
    if not data:
        raise MediaError(path, "empty file")
    rate, samples = decode_wav(path, data) if is_wav(data) else _decode_other(path)
    if samples.shape[0] == 0 or rate <= 0:
        raise MediaError(path, "the audio holds no samples")
    waveform = samples.mean(axis=1, keepdims=True, dtype=np.float32)
    if not np.all(np.isfinite(waveform)):
        raise MediaError(path, "the decoded samples are not finite")
    if rate != sample_rate:
        import tensorflow_io as tfio

        waveform = tfio.audio.resample(tf.constant(waveform), rate_in=rate, rate_out=sample_rate).numpy()
    return np.clip(waveform[:, 0], -1.0, 1.0)


def frames(waveform: np.ndarray, num_samples: int) -> np.ndarray:
    """`waveform` cut into `[frames, num_samples]`, the last frame padded with silence (at least one frame)."""
    count = max(1, math.ceil(len(waveform) / num_samples))
    padded = np.zeros(count * num_samples, np.float32)
    padded[:len(waveform)] = waveform
    return padded.reshape(count, num_samples)
