"""Byte-level checks that encoded media will decode, in core TF ops (servable).

A thumbnail must start like a JPEG (`FF D8 FF`) or a PNG (its 8-byte signature)
and end like one (the JPEG end-of-image marker or the PNG `IEND` chunk within its
last 64 bytes); a WAV must be a 16-bit PCM RIFF/WAVE file at the expected sample
rate whose chunks TensorFlow's WAV reader accepts (the check walks the chunks as
the reader does). `ImageEncoder` and `AudioEncoder` replace the rows that fail
with `BLANK_PNG` or `silent_wav` before decoding and zero their outputs, so a
bad file never fails a batch.

Example:

>>> import tensorflow as tf
>>> decodable_image_mask(tf.constant([BLANK_PNG, b"GIF89a"])).numpy().tolist()
[True, False]
"""

import struct
from typing import Optional

import tensorflow as tf

_JPEG_START = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_TAIL_WINDOW = 64
# A 1x1 black PNG (what tf.io.encode_png writes): decoded in place of unusable rows.
BLANK_PNG = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS"
              b"\xde\x00\x00\x00\x0cIDAT\x08\x99c```\x00\x00\x00\x04\x00\x01\xa3\n\x15\xe3\x00\x00\x00\x00IEND"
              b"\xaeB`\x82")
_MAX_WAV_CHUNKS = 32
_INT32_MAX = 2 ** 31 - 1


def as_bytes_vector(inputs) -> tf.Tensor:
    """`inputs` (`[batch]` or `[batch, 1]` encoded files) as a `[batch]` `tf.string` vector."""
    data = tf.convert_to_tensor(inputs)
    if data.dtype != tf.string:
        raise TypeError(f"Expected a tf.string tensor of encoded media files, got dtype {data.dtype.name}.")
    return tf.reshape(data, [-1])


def _ends_with_marker(data: tf.Tensor, marker: bytes, window: int = _TAIL_WINDOW) -> tf.Tensor:
    """Whether `marker` occurs within the last `window` bytes of each string."""
    length = tf.strings.length(data)
    start = tf.maximum(length - window, 0)
    tail = tf.io.decode_raw(tf.strings.substr(data, start, tf.fill(tf.shape(start), window)), tf.uint8,
                            fixed_length=window)
    positions = window - len(marker) + 1
    found = tf.ones([tf.shape(data)[0], positions], tf.bool)
    for i, byte in enumerate(marker):
        found &= tf.equal(tail[:, i:i + positions], byte)
    return tf.reduce_any(found, axis=1)


def decodable_image_mask(data: tf.Tensor) -> tf.Tensor:
    """Which rows look like complete JPEG or PNG files (see the module docstring).

    Args:
      data: `[batch]` tf.string of encoded images.

    Returns:
      `[batch]` bool. Never raises on any bytes.
    """
    data = as_bytes_vector(data)
    is_jpeg = tf.equal(tf.strings.substr(data, 0, len(_JPEG_START)), _JPEG_START) & _ends_with_marker(data, _JPEG_END)
    is_png = tf.equal(tf.strings.substr(data, 0, len(_PNG_START)), _PNG_START) & _ends_with_marker(data, _PNG_END)
    return is_jpeg | is_png


def _fourcc(tag: bytes) -> int:
    return struct.unpack("<I", tag)[0]


# Chunks TensorFlow's WAV reader skips between "WAVE" and "fmt " (JUNK padding, broadcast WAV tags).
_SKIPPABLE_BEFORE_FMT = [_fourcc(t) for t in (b"JUNK", b"bext", b"iXML", b"qlty", b"mext", b"levl", b"link", b"axml")]


def _walk_chunks(step, state):
    """Applies `step` to the next chunk of every row still `scanning`, at most `_MAX_WAV_CHUNKS` times."""
    _, *state = tf.while_loop(lambda i, offset, scanning, *rest: (i < _MAX_WAV_CHUNKS) & tf.reduce_any(scanning),
                              lambda i, *rest: (i + 1, *step(*rest)), [tf.constant(0), *state])
    return state


def decodable_wav_mask(data: tf.Tensor, sample_rate: Optional[int] = None) -> tf.Tensor:
    """Which rows `tf.audio.decode_wav` decodes without an error (and at `sample_rate`).

    It mirrors the checks of TensorFlow's WAV reader: `RIFF`/`WAVE`, optional
    JUNK-like chunks, a `fmt ` chunk (16 or 18 bytes, PCM, at least one channel,
    16 bits, consistent block size and byte rate), then chunk headers that fit
    in the file and exactly one `data` chunk whose samples fit in the file;
    rows with more than 32 chunks before or after `fmt ` count as unusable.

    Args:
      data: `[batch]` tf.string of encoded audio.
      sample_rate: the required sample rate, or None for any.

    Returns:
      `[batch]` bool. Never raises on any bytes.
    """
    data = as_bytes_vector(data)
    length = tf.cast(tf.strings.length(data), tf.int64)

    def read(offset, count):
        """Little-endian reader of `count` bytes at each row's `offset`: field(i, width) -> int64 [batch].

        Bytes past the end read as zeros (Substr raises only for a start past the end, hence the clip).
        """
        pos = tf.cast(tf.clip_by_value(offset, 0, length), tf.int32)
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(data, pos, tf.fill(tf.shape(pos), count)), tf.uint8,
                                       fixed_length=count), tf.int64)
        return lambda i, width: sum(raw[:, i + k] * (1 << (8 * k)) for k in range(width))

    riff = read(tf.zeros_like(length), 12)
    ok = (length >= 12) & (riff(0, 4) == _fourcc(b"RIFF")) & (riff(8, 4) == _fourcc(b"WAVE"))

    def skip_to_fmt(offset, scanning, ok):
        chunk = read(offset, 8)
        chunk_id, size = chunk(0, 4), chunk(4, 4)
        is_fmt = chunk_id == _fourcc(b"fmt ")
        skippable = tf.reduce_any(chunk_id[:, None] == tf.constant(_SKIPPABLE_BEFORE_FMT, tf.int64), axis=1)
        bad = scanning & ((offset + 4 > length) | (~is_fmt & (~skippable | (offset + 8 + size > length))))
        moving = scanning & ~bad & ~is_fmt
        return tf.where(moving, offset + 8 + size, offset), moving, ok & ~bad

    offset, scanning, ok = _walk_chunks(skip_to_fmt, [tf.fill(tf.shape(length), tf.constant(12, tf.int64)), ok, ok])
    fmt = read(offset, 24)
    fmt_size, channels, rate, block = fmt(4, 4), fmt(10, 2), fmt(12, 4), fmt(20, 2)
    ok &= (~scanning & (offset + 24 <= length) & ((fmt_size == 16) | (fmt_size == 18)) & (fmt(8, 2) == 1)
           & (channels >= 1) & (fmt(22, 2) == 16) & (block == 2 * channels) & (fmt(16, 4) == block * rate))
    if sample_rate is not None:
        ok &= rate == int(sample_rate)
    block = tf.maximum(block, 1)
    offset += tf.where(fmt_size == 18, tf.constant(26, tf.int64), tf.constant(24, tf.int64))

    def walk_to_end(offset, scanning, found, ok):
        chunk = read(offset, 8)
        size, is_data = chunk(4, 4), chunk(0, 4) == _fourcc(b"data")
        data_bytes = size // block * block  # what the reader consumes of a data chunk
        bad = scanning & ((offset + 8 > length) | (size > _INT32_MAX) | (is_data & found)
                          | (is_data & (offset + 8 + data_bytes > length)))
        found |= scanning & is_data & ~bad
        offset = tf.where(scanning & ~bad, offset + 8 + tf.where(is_data, data_bytes, size), offset)
        return offset, scanning & ~bad & (offset < length), found, ok & ~bad

    _, scanning, found, ok = _walk_chunks(walk_to_end, [offset, ok & (offset < length), tf.zeros_like(ok), ok])
    return ok & found & ~scanning


def silent_wav(sample_rate: int) -> bytes:
    """A valid 16-bit mono WAV with no samples: decoded in place of unusable rows."""
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
                       2 * sample_rate, 2, 16, b"data", 0)
