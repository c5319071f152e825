"""Pretrained media encoders for the embedding step: TF Hub handles, SavedModels and `.tflite` files.

`load_image_model(handle)` and `load_audio_model(handle)` return a
`MediaModel`: `embed(batch)` maps a batch of decoded inputs (images float32
`[batch, height, width, 3]` in [0, 1], or audio frames float32
`[batch, num_samples]` in [-1, 1]) to `[batch, output_dim]` float32 embeddings.

* **TF Hub handle or SavedModel directory** (anything `hub.KerasLayer`
  resolves): run through `tfrec_video.towers.ImageEncoder` /
  `AudioEncoder`, so the conventions are the in-graph encoders' (image size
  from the signature, per-clip audio encoders such as YAMNet, `output_key`,
  mean-pooling of frame-level outputs).
* **`.tflite` file**: run through `tf.lite.Interpreter`, one item per
  invocation (the batch dimension of a TFLite model is usually fixed at 1).
  The input size comes from the model's input tensor. Quantized tensors are
  handled from their quantization parameters `(scale, zero_point)`:
  - inputs: a float value `f` is fed as `round(f / scale + zero_point)`,
    clipped to the integer type. Which float range the model wants is not in
    the file, so `input_range` says it: `"auto"` (the default) maps images in
    [0, 1] onto the whole range the quantized input can represent,
    `[scale * (qmin - zero_point), scale * (qmax - zero_point)]` (for the
    ImageNet MobileNet-V1 embedder, scale 1/128 and zero point 128: [-1, 1],
    i.e. the raw pixel values), and for a float input keeps [0, 1] (the TF Hub
    convention); `(low, high)` maps [0, 1] onto that range explicitly (e.g.
    `(-1, 1)` for a float model trained on [-1, 1] pixels). Audio is fed as is.
  - outputs: dequantized as `scale * (q - zero_point)`; outputs with more than
    one non-batch axis (`[1, 1, 1, 1024]`, frame-level maps) are mean-pooled to
    `[dim]`.

Example:

    model = load_image_model("../shared/pretrained/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    model.input_size, model.output_dim        # ((224, 224), 1024)
    vectors = model.embed(images)             # images: float32 [batch, 224, 224, 3] in [0, 1]
"""

import abc
import os
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfrec_video.errors import ConfigError

InputRange = Union[str, Tuple[float, float]]


class MediaModel(abc.ABC):
    """A loaded encoder (see module docstring).

    Attributes:
      handle: what it was loaded from.
      kind: `"image"` or `"audio"`.
      input_size: `(height, width)` for images, the frame length in samples for audio.
      output_dim: the embedding width.
    """

    handle: str
    kind: str
    input_size: Union[Tuple[int, int], int]
    output_dim: int

    @abc.abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """`[batch, output_dim]` float32 embeddings of a batch of decoded inputs."""


class HubMediaModel(MediaModel):
    """A TF Hub handle or SavedModel directory, through `ImageEncoder` / `AudioEncoder`."""

    def __init__(self, handle: str, kind: str, image_size=None, sample_rate: int = 16000,
                 clip_seconds: float = 1.0, output_key=None):
        from tfrec_video.towers.media_encoder import AudioEncoder, ImageEncoder

        self.handle, self.kind = handle, kind
        try:
            if kind == "image":
                self._encoder = ImageEncoder(handle, image_size=image_size, output_key=output_key)
                self.input_size = tuple(self._encoder.image_size)
                self._embed = tf.function(self._encoder.embed_images, reduce_retracing=True)
            else:
                self._encoder = AudioEncoder(handle, sample_rate=sample_rate, clip_seconds=clip_seconds,
                                             output_key=output_key)
                self.input_size = self._encoder.num_samples
                self._embed = tf.function(self._encoder.embed_waveforms, reduce_retracing=True)
        except (ValueError, OSError, tf.errors.OpError) as error:
            raise ConfigError(f"the {kind} model {handle!r} cannot be used: {str(error).splitlines()[0]}") from None
        self.output_dim = int(self._encoder.output_dim)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self._embed(tf.constant(batch, tf.float32)).numpy()


class TFLiteMediaModel(MediaModel):
    """A `.tflite` encoder run through `tf.lite.Interpreter`, with quantized inputs and outputs handled."""

    def __init__(self, handle: str, kind: str, input_range: InputRange = "auto", output_index: int = 0):
        self.handle, self.kind = handle, kind
        try:
            self._interpreter = tf.lite.Interpreter(model_path=handle)
            self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"the {kind} model {handle!r} is not a loadable .tflite file: "
                              f"{str(error).splitlines()[0]}") from None
        self._input = self._interpreter.get_input_details()[0]
        outputs = self._interpreter.get_output_details()
        if not 0 <= output_index < len(outputs):
            raise ConfigError(f"the {kind} model {handle!r} has {len(outputs)} outputs; output {output_index} "
                              "does not exist.")
        self._output = outputs[output_index]
        shape = [int(d) for d in self._input["shape"]]
        if kind == "image":
            if len(shape) != 4 or shape[-1] != 3:
                raise ConfigError(f"the image model {handle!r} takes input shape {shape}; expected "
                                  "[1, height, width, 3].")
            self.input_size = (shape[1], shape[2])
        else:
            if len(shape) not in (1, 2):
                raise ConfigError(f"the audio model {handle!r} takes input shape {shape}; expected [samples] or "
                                  "[1, samples].")
            self.input_size = shape[-1]
        self._input_shape = shape
        self._low, self._high = self._float_range(input_range)
        # One item without the leading batch axis of 1 ([h, w, 3] or [samples]); probed once for the width.
        item_shape = shape[1:] if len(shape) in (2, 4) else shape
        self.output_dim = int(self._run(np.zeros(item_shape, np.float32)).shape[-1])

    def _float_range(self, input_range: InputRange) -> Tuple[float, float]:
        if input_range != "auto":
            low, high = (float(v) for v in input_range)
            if not low < high:
                raise ConfigError(f"input_range must be (low, high) with low < high, got {input_range!r}.")
            return low, high
        if self.kind == "audio":
            return 0.0, 1.0  # identity: waveforms are fed as they are
        scale, zero_point = self._input["quantization"]
        if np.issubdtype(self._input["dtype"], np.integer) and scale:
            info = np.iinfo(self._input["dtype"])
            return scale * (info.min - zero_point), scale * (info.max - zero_point)
        return 0.0, 1.0

    def _quantize(self, values: np.ndarray) -> np.ndarray:
        detail = self._input
        if self.kind == "image":
            values = self._low + values * (self._high - self._low)
        scale, zero_point = detail["quantization"]
        if np.issubdtype(detail["dtype"], np.integer):
            info = np.iinfo(detail["dtype"])
            values = np.clip(np.round(values / (scale or 1.0) + zero_point), info.min, info.max)
        return values.astype(detail["dtype"])

    def _run(self, item: np.ndarray) -> np.ndarray:
        self._interpreter.set_tensor(self._input["index"], self._quantize(item).reshape(self._input_shape))
        self._interpreter.invoke()
        out = self._interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        out = out.astype(np.float32)
        if np.issubdtype(self._output["dtype"], np.integer) and scale:
            out = (out - zero_point) * scale
        out = out.reshape(out.shape[1:]) if out.ndim > 1 and out.shape[0] == 1 else out
        if out.ndim > 1:
            out = out.reshape(-1, out.shape[-1]).mean(axis=0)
        return out

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self._run(np.asarray(item, np.float32)) for item in batch]).astype(np.float32)


def _check_handle(handle: str, kind: str) -> None:
    if "://" in handle:
        return  # a hub URL: resolved (and downloaded) by hub.KerasLayer
    if not os.path.exists(handle):
        raise ConfigError(f"the {kind} model {handle!r} does not exist (expected a TF Hub URL, a SavedModel "
                          "directory or a .tflite file).")


def load_image_model(handle: str, image_size: Optional[Union[int, Sequence[int]]] = None,
                     input_range: InputRange = "auto", output_key=None) -> MediaModel:
    """An image encoder from a TF Hub handle, a SavedModel directory or a `.tflite` file.

    Args:
      handle: the model.
      image_size: `(height, width)` (or one int) for a hub model whose signature
        does not declare its size; a `.tflite` model's comes from the file.
      input_range: for `.tflite` models: `"auto"` or `(low, high)` (module docstring).
      output_key: for hub models returning several outputs: the dict key or tuple index.

    Raises:
      ConfigError: the model is missing or unusable.
    """
    handle = os.fspath(handle)
    _check_handle(handle, "image")
    if handle.endswith(".tflite"):
        return TFLiteMediaModel(handle, "image", input_range=input_range,
                                output_index=output_key if isinstance(output_key, int) else 0)
    return HubMediaModel(handle, "image", image_size=image_size, output_key=output_key)


def load_audio_model(handle: str, sample_rate: int = 16000, clip_seconds: float = 1.0,
                     output_key=None) -> MediaModel:
    """An audio encoder from a TF Hub handle, a SavedModel directory or a `.tflite` file.

    Args:
      handle: the model.
      sample_rate: the rate the model expects; clips are resampled to it.
      clip_seconds: the frame length a hub model takes (a `.tflite` model's
        comes from its input tensor).
      output_key: the dict key or tuple index of the embedding (YAMNet: 1).

    Raises:
      ConfigError: the model is missing or unusable.
    """
    handle = os.fspath(handle)
    _check_handle(handle, "audio")
    if handle.endswith(".tflite"):
        return TFLiteMediaModel(handle, "audio", output_index=output_key if isinstance(output_key, int) else 0)
    return HubMediaModel(handle, "audio", sample_rate=sample_rate, clip_seconds=clip_seconds, output_key=output_key)
