"""Pretrained image and audio encoders that read raw media bytes, through `hub.KerasLayer`.

    thumbnail bytes ─check─► decode JPEG/PNG ─► resize ─► float32 in [0, 1] ──┐
                                                                               ├─► hub.KerasLayer ─► mean-pool frames
    audio bytes ─────check─► decode WAV, mono ─► pad/crop to clip_seconds ────┘    (frozen)         ─► zero the rows
                                                                                                       that failed check

The catalog may carry `image_embedding` / `audio_embedding` as precomputed
vectors, or the raw `thumbnail` / `audio` bytes. `ImageEncoder` and
`AudioEncoder` turn the raw bytes into embeddings *inside* the model, so that a
SavedModel takes the bytes themselves and TF Serving runs the pretrained
encoder. Both are Keras (tf_keras) layers:

* **Input**: a `[batch]` (or `[batch, 1]`) `tf.string` tensor of encoded files.
* **Output**: `[batch, output_dim]` float32. `output_dim` is known when the
  layer is constructed (read from the encoder by tracing it once), so Dense
  layers downstream build as usual.

**Handles.** `handle` is anything `hub.KerasLayer` resolves: a TF Hub / Kaggle
URL (for example
`https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5`,
`https://tfhub.dev/google/yamnet/1`) or a local directory holding a TF2
SavedModel whose `__call__` is a `tf.function`. URLs are downloaded into
`$TFHUB_CACHE_DIR`; where no hub can be reached, download once elsewhere and
point `handle` at the directory.

**Conventions of the encoder.** They follow TF Hub's:

* images: float32 `[batch, height, width, 3]` RGB with values in **[0, 1]**.
  `height` and `width` are read from the encoder's input signature when it has
  static ones (MobileNet-V3: 224x224); otherwise pass `image_size`. Thumbnails
  are resized to that size with bilinear, antialiased resampling and no crop
  (the aspect ratio is not kept).
* audio: float32 mono waveforms in [-1, 1] at `sample_rate`. A *batched*
  encoder takes `[batch, samples]`. A *per-clip* encoder takes one `[samples]`
  waveform (YAMNet and VGGish do); it is recognised from its rank-1 input
  signature and run clip by clip with `tf.map_fn`.

**Outputs.** `output_key` picks one output of an encoder that returns several:
a key of a dict (`"embedding"`, say) or an index into a tuple (YAMNet returns
`(scores, embeddings, spectrogram)`: `output_key=1`). Frame-level outputs
(`[batch, frames, dim]`, or `[frames, dim]` per clip; also `[batch, h, w, dim]`
feature maps) are mean-pooled over every axis between the batch and the feature
axis.

**Missing and unusable media give a zero vector, never an error.** An empty
string is a video without a thumbnail or audio track. Each row is checked
before it is decoded, with byte-level tests that cannot fail
(`decodable_image_mask`, `decodable_wav_mask` in `tfrec_video.towers.media_bytes`): a thumbnail must start like a
JPEG (`FF D8 FF`) or a PNG (its 8-byte signature) and end like one (the JPEG
end-of-image marker or the PNG `IEND` chunk within its last 64 bytes); a WAV
must be a 16-bit PCM RIFF/WAVE file at `sample_rate` whose chunks TensorFlow's
WAV reader accepts (the check walks the chunks as the reader does). Any other
row (empty, garbage, truncated, GIF, FLAC, 8-bit or float WAV, another sample
rate) is replaced by a blank image or silence before decoding, and its output
row is set to zeros. The encoder still
sees those placeholder rows; with `trainable=True` and an encoder that has
batch normalisation, they take part in its batch statistics.

What framing checks cannot see: a file that is well framed but corrupt inside
(a PNG with a flipped bit fails its CRC; a JPEG whose header segments are
garbled) still makes `tf.io.decode_image` raise, and the whole batch fails.
JPEG damage inside the compressed data decodes (to a damaged image) without an
error. Validate media where it is ingested to exclude these.

**Frozen by default.** `trainable=False` keeps the encoder's variables out of
`trainable_weights` and runs it in inference mode; `trainable=True` (or setting
`layer.trainable = True` later) fine-tunes it.

**Servable.** The graph uses core TensorFlow ops only (`Substr`,
`DecodePaddedRaw`, `DecodeImage`, `ScaleAndTranslate` (the antialiased resize),
`DecodeWav`, `While`, and the encoder's own ops): no `py_function` and no
tensorflow-io, so stock TF Serving runs it, and loading the SavedModel needs
neither tensorflow_hub nor this package. For the same reason nothing is
resampled here: a clip at another sample rate gives a zero vector. FLAC, MP3,
OGG and other rates are converted offline with tensorflow-io by
`tfrec-video embed` (a later issue).

Example (needs a reachable handle):

>>> import tensorflow as tf
>>> encoder = ImageEncoder(  # doctest: +SKIP
...     "https://tfhub.dev/google/imagenet/mobilenet_v3_small_100_224/feature_vector/5")
>>> encoder.image_size, encoder.output_dim  # doctest: +SKIP
((224, 224), 1024)
>>> thumbnail = tf.io.encode_png(tf.zeros([64, 48, 3], tf.uint8))
>>> encoder(tf.stack([thumbnail, b""])).shape  # doctest: +SKIP
TensorShape([2, 1024])
>>> yamnet = AudioEncoder("https://tfhub.dev/google/yamnet/1", output_key=1)  # doctest: +SKIP
>>> yamnet.output_dim  # doctest: +SKIP
1024
"""

import numbers
import os
from typing import Mapping, Optional, Sequence, Union

import tensorflow as tf

from tfrec_video.towers.media_bytes import (
    BLANK_PNG,
    as_bytes_vector,
    decodable_image_mask,
    decodable_wav_mask,
    silent_wav,
)

def _import_hub():
    try:
        import tensorflow_hub as hub
    except ModuleNotFoundError as error:
        if error.name == "pkg_resources":
            raise ImportError(
                "tensorflow_hub 0.16.1 imports pkg_resources, which setuptools 81 and later no longer "
                "ship. Install 'setuptools<81' next to tensorflow-hub."
            ) from error
        raise
    return hub


def _encoder_input_spec(resolved) -> Optional[tf.TensorSpec]:
    """The input TensorSpec of a loaded encoder's `__call__`, merged over its traces, or None."""
    function = getattr(resolved, "__call__", None)
    specs = []
    for concrete in getattr(function, "concrete_functions", None) or []:
        args, kwargs = concrete.structured_input_signature
        if args and isinstance(args[0], tf.TensorSpec):
            specs.append(args[0])
        elif not args and len(kwargs) == 1 and isinstance(next(iter(kwargs.values())), tf.TensorSpec):
            specs.append(next(iter(kwargs.values())))
    if not specs:
        signature = getattr(function, "input_signature", None)
        if signature and isinstance(signature[0], tf.TensorSpec):
            specs.append(signature[0])
    if not specs or any(s.shape.rank is None or s.shape.rank != specs[0].shape.rank for s in specs):
        return None
    dims = [d if all(s.shape[i] == d for s in specs) else None for i, d in enumerate(specs[0].shape)]
    return tf.TensorSpec(dims, specs[0].dtype)


class _HubMediaEncoder(tf.keras.layers.Layer):
    """Loads the encoder, picks and pools its output, and masks unusable rows."""

    def __init__(self, handle: Union[str, os.PathLike], trainable: bool = False,
                 output_key: Optional[Union[str, int]] = None, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        if isinstance(output_key, bool) or not (output_key is None or isinstance(output_key, (str, int))):
            raise ValueError(f"{type(self).__name__}: output_key must be a dict key (str), a tuple index (int) "
                             f"or None, got {output_key!r}.")
        hub = _import_hub()
        self.handle = os.fspath(handle)
        self.output_key = output_key
        # float32 whatever the global policy: a mixed_float16 policy would cast the inputs to float16,
        # which the encoder's traced signature does not accept.
        self.hub_layer = hub.KerasLayer(self.handle, trainable=trainable, name="hub", dtype="float32")
        self.encoder_input_spec = _encoder_input_spec(self.hub_layer.resolved_object)
        self.output_dim = None

    def _select(self, outputs):
        name, key = type(self).__name__, self.output_key
        if isinstance(outputs, Mapping):
            if key is None and len(outputs) == 1:
                return next(iter(outputs.values()))
            if key not in outputs:
                raise ValueError(f"{name}: the encoder at {self.handle!r} returns a dict with keys "
                                 f"{sorted(outputs)}; pass one of them as output_key (got {key!r}).")
            return outputs[key]
        if isinstance(outputs, (tuple, list)):
            if key is None and len(outputs) == 1:
                return outputs[0]
            if not isinstance(key, int) or not -len(outputs) <= key < len(outputs):
                raise ValueError(f"{name}: the encoder at {self.handle!r} returns {len(outputs)} outputs; pass "
                                 f"the index of the embedding as output_key (got {key!r}).")
            return outputs[key]
        if key is not None:
            raise ValueError(f"{name}: the encoder at {self.handle!r} returns a single tensor; "
                             f"output_key must be None, got {key!r}.")
        return outputs

    def _embed(self, inputs, batched: bool = True, training=None):
        """Encoder output for a batch (or one clip), selected and mean-pooled to `[(batch,) dim]`."""
        outputs = tf.convert_to_tensor(self._select(self.hub_layer(inputs, training=training)))
        first, rank = (1 if batched else 0), outputs.shape.rank
        if rank is None or rank < first + 1:
            raise ValueError(f"{type(self).__name__}: the encoder at {self.handle!r} returned shape "
                             f"{outputs.shape}; expected {'[batch, ..., dim]' if batched else '[..., dim]'}.")
        if rank > first + 1:
            outputs = tf.reduce_mean(outputs, axis=list(range(first, rank - 1)))
        return tf.cast(outputs, tf.float32)

    def _find_output_dim(self, spec: tf.TensorSpec, batched: bool) -> int:
        """Traces the encoder once on `spec` (no computation) to read the embedding width."""
        traced = tf.function(lambda x: self._embed(x, batched, training=False)).get_concrete_function(spec)
        dim = traced.structured_outputs.shape[-1]
        if dim is None and tf.executing_eagerly():
            probe = tf.zeros([1 if d is None else d for d in spec.shape], spec.dtype)
            dim = self._embed(probe, batched, training=False).shape[-1]
        if dim is None:
            raise ValueError(f"{type(self).__name__}: cannot tell the output width of the encoder at "
                             f"{self.handle!r}; construct the layer eagerly so that it can be probed.")
        return int(dim)

    def _check_dtype(self):
        spec = self.encoder_input_spec
        if spec is not None and spec.dtype != tf.float32:
            raise ValueError(f"{type(self).__name__}: the encoder at {self.handle!r} takes {spec.dtype.name} "
                             "inputs; this layer feeds float32 (the TF Hub convention).")

    def _mask(self, valid, embeddings):
        embeddings = tf.ensure_shape(embeddings, [None, self.output_dim])
        return tf.where(valid[:, None], embeddings, tf.zeros_like(embeddings))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape([tf.TensorShape(input_shape)[0], self.output_dim])

    def get_config(self):
        config = super().get_config()
        config.update(handle=self.handle, trainable=self.trainable, output_key=self.output_key)
        return config


class ImageEncoder(_HubMediaEncoder):
    """Encodes JPEG/PNG bytes with a pretrained TF Hub image encoder (see the module docstring).

    Args:
      handle: a TF Hub / Kaggle URL or a local SavedModel directory. The model
        takes float32 `[batch, height, width, 3]` RGB in [0, 1].
      image_size: `(height, width)` (or one int for both) the thumbnails are
        resized to. Read from the encoder's input signature when it is static;
        required otherwise, and must agree with it when both are known.
      trainable: fine-tune the encoder's variables (frozen by default).
      output_key: the dict key or tuple index of the embedding, when the
        encoder returns several outputs.
      **kwargs: `tf.keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
      inputs: `[batch]` or `[batch, 1]` tf.string of encoded JPEG or PNG files.
      training: passed to the encoder when it is trainable.

    Returns:
      `[batch, output_dim]` float32; all zeros for a row that is empty or not a
      complete JPEG/PNG file.

    Attributes:
      image_size: `(height, width)` fed to the encoder.
      output_dim: the embedding width.
    """

    def __init__(self, handle: Union[str, os.PathLike], image_size: Optional[Union[int, Sequence[int]]] = None,
                 trainable: bool = False, output_key: Optional[Union[str, int]] = None, **kwargs):
        super().__init__(handle, trainable=trainable, output_key=output_key, **kwargs)
        self._check_dtype()
        spec = self.encoder_input_spec
        model_size = None
        if spec is not None:
            if spec.shape.rank != 4 or spec.shape[-1] not in (None, 3):
                raise ValueError(f"ImageEncoder: the encoder at {self.handle!r} takes shape {spec.shape}; "
                                 "expected [batch, height, width, 3].")
            if spec.shape[1] is not None and spec.shape[2] is not None:
                model_size = (int(spec.shape[1]), int(spec.shape[2]))
        size = None
        if image_size is not None:
            size = ((int(image_size),) * 2 if isinstance(image_size, numbers.Integral)
                    else tuple(int(s) for s in image_size))
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"ImageEncoder: image_size must be positive (height, width), got {image_size!r}.")
            if model_size is not None and size != model_size:
                raise ValueError(f"ImageEncoder: image_size={size} but the encoder at {self.handle!r} takes "
                                 f"{model_size} images.")
        if size is None and model_size is None:
            raise ValueError(f"ImageEncoder: the encoder at {self.handle!r} does not declare its image size; "
                             "pass image_size=(height, width).")
        self.image_size = size or model_size
        self.output_dim = self._find_output_dim(tf.TensorSpec([None, *self.image_size, 3], tf.float32), True)

    def _decode(self, data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)  # uint8 [h, w, 3]
        image = tf.image.convert_image_dtype(image, tf.float32)  # [0, 1]
        image = tf.image.resize(image, self.image_size, method="bilinear", antialias=True)
        return tf.clip_by_value(image, 0.0, 1.0)

    def embed_images(self, images, training=None):
        """`[batch, output_dim]` embeddings of decoded images: float32 `[batch, *image_size, 3]` in [0, 1]."""
        return self._embed(images, training=training)

    def call(self, inputs, training=None):
        data = as_bytes_vector(inputs)
        valid = decodable_image_mask(data)
        images = tf.map_fn(self._decode, tf.where(valid, data, BLANK_PNG),
                           fn_output_signature=tf.TensorSpec([*self.image_size, 3], tf.float32))
        return self._mask(valid, self.embed_images(images, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(image_size=list(self.image_size))
        return config


class AudioEncoder(_HubMediaEncoder):
    """Encodes WAV bytes with a pretrained TF Hub audio encoder (see the module docstring).

    Clips are decoded with `tf.audio.decode_wav` (16-bit PCM; the first channel
    of a multi-channel file), then cut to their first `clip_seconds` or padded
    with silence at the end. Nothing is resampled: a clip at another rate gives
    a zero vector (`tfrec-video embed` resamples offline with tensorflow-io).

    Args:
      handle: a TF Hub / Kaggle URL or a local SavedModel directory. The model
        takes float32 waveforms in [-1, 1]: `[batch, samples]`, or one
        `[samples]` clip (YAMNet, VGGish), recognised from its input signature.
      sample_rate: the rate the encoder expects, in Hz; WAVs must have it.
      clip_seconds: the clip length fed to the encoder.
      trainable: fine-tune the encoder's variables (frozen by default).
      output_key: the dict key or tuple index of the embedding, when the
        encoder returns several outputs (YAMNet: 1).
      **kwargs: `tf.keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
      inputs: `[batch]` or `[batch, 1]` tf.string of WAV files.
      training: passed to the encoder when it is trainable.

    Returns:
      `[batch, output_dim]` float32, frame-level outputs mean-pooled; all zeros
      for a row that is empty, not a 16-bit PCM WAV, or at another rate.

    Attributes:
      num_samples: `round(sample_rate * clip_seconds)`.
      per_clip: whether the encoder takes one clip at a time.
      output_dim: the embedding width.
    """

    def __init__(self, handle: Union[str, os.PathLike], sample_rate: int = 16000, clip_seconds: float = 1.0,
                 trainable: bool = False, output_key: Optional[Union[str, int]] = None, **kwargs):
        num_samples = int(round(int(sample_rate) * float(clip_seconds)))
        if int(sample_rate) <= 0 or num_samples <= 0:
            raise ValueError(f"AudioEncoder: sample_rate and clip_seconds must give a positive clip, got "
                             f"sample_rate={sample_rate}, clip_seconds={clip_seconds}.")
        super().__init__(handle, trainable=trainable, output_key=output_key, **kwargs)
        self.sample_rate, self.clip_seconds, self.num_samples = int(sample_rate), float(clip_seconds), num_samples
        self._check_dtype()
        spec = self.encoder_input_spec
        if spec is not None and spec.shape.rank not in (1, 2):
            raise ValueError(f"AudioEncoder: the encoder at {self.handle!r} takes shape {spec.shape}; expected "
                             "[batch, samples] or [samples].")
        if spec is not None and spec.shape[-1] not in (None, self.num_samples):
            raise ValueError(f"AudioEncoder: the encoder at {self.handle!r} takes {spec.shape[-1]} samples, but "
                             f"sample_rate * clip_seconds = {self.num_samples}.")
        self.per_clip = spec is not None and spec.shape.rank == 1
        clip_shape = [self.num_samples] if self.per_clip else [None, self.num_samples]
        self.output_dim = self._find_output_dim(tf.TensorSpec(clip_shape, tf.float32), not self.per_clip)
        self._silence = silent_wav(self.sample_rate)

    def _decode(self, data):
        return tf.audio.decode_wav(data, desired_channels=1, desired_samples=self.num_samples).audio[:, 0]

    def call(self, inputs, training=None):
        data = as_bytes_vector(inputs)
        valid = decodable_wav_mask(data, self.sample_rate)
        waveforms = tf.map_fn(self._decode, tf.where(valid, data, self._silence),
                              fn_output_signature=tf.TensorSpec([self.num_samples], tf.float32))
        return self._mask(valid, self.embed_waveforms(waveforms, training=training))

    def embed_waveforms(self, waveforms, training=None):
        """`[batch, output_dim]` embeddings of clips: float32 `[batch, num_samples]` in [-1, 1] at `sample_rate`."""
        if self.per_clip:
            return tf.map_fn(lambda clip: self._embed(clip, batched=False, training=training), waveforms,
                             fn_output_signature=tf.TensorSpec([self.output_dim], tf.float32))
        return self._embed(waveforms, training=training)

    def get_config(self):
        config = super().get_config()
        config.update(sample_rate=self.sample_rate, clip_seconds=self.clip_seconds)
        return config
