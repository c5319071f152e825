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
  - **which tensor is the embedding** (audio): `output_tensor` names any tensor
    of the graph, an intermediate one included (the interpreter then keeps
    every tensor: `experimental_preserve_all_tensors=True`). By default it is a
    tensor of `KNOWN_EMBEDDING_TENSORS` when the model has one (YAMNet's
    `tower0/network/layer28/reduce_mean`, the 1024-d average before the
    521-class layer), else the model's output (`output_key` = its index, 0 by
    default). An unknown name is a `ConfigError` listing close names.
  - **spectrogram-input audio models**: an audio input that is not a waveform
    (`[samples]` or `[1, samples]`), i.e. `[1, frames, bands]`,
    `[1, frames, bands, 1]` or `[frames, bands]`, is fed log-mel patches that
    `log_mel.LogMelFrontEnd` computes in TF (YAMNet's front end at 16 kHz), the
    patch geometry taken from the input shape (YAMNet: 96 x 64) and the hop half
    a patch (48 frames). A clip's embedding is its patches' mean (`embed_clip`).

**Text models** (`load_text_model`, for `--text-model`): a TF Hub handle or
SavedModel directory mapping a string `[batch]` to float32 `[batch, dim]` (what
`tfrec-video convert-text-encoder` writes), run through
`tfrec_video.towers.pretrained_title.PretrainedTitleEncoder`: the vector a
title gets offline is the one the in-graph encoder would give it.

Example:

    model = load_image_model("../shared/pretrained/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    model.input_size, model.output_dim        # ((224, 224), 1024)
    vectors = model.embed(images)             # images: float32 [batch, 224, 224, 3] in [0, 1]

    yamnet = load_audio_model("../shared/pretrained/audio/yamnet_spectra_in.tflite")
    yamnet.output_tensor, yamnet.output_dim   # ('tower0/network/layer28/reduce_mean', 1024)
    vector = yamnet.embed_clip(waveform)      # waveform: float32 [samples] in [-1, 1] at 16 kHz
"""

import abc
import difflib
import os
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from tfrec_video.errors import ConfigError, first_line, shorten
from tfrec_video.media_embedding.decode import frames
from tfrec_video.media_embedding.log_mel import LogMelFrontEnd

InputRange = Union[str, Tuple[float, float]]
# Intermediate tensors that are a model's embedding when its output is something else (class scores). YAMNet's
# 1024-d global average (the int8 models of google-coral/coralmicro name it so) feeds its 521-class layer.
KNOWN_EMBEDDING_TENSORS = ("tower0/network/layer28/reduce_mean",)


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

    def embed_clip(self, waveform: np.ndarray) -> np.ndarray:
        """An audio clip's `[output_dim]` embedding: the mean over its frames of `input_size` samples.

        Args:
          waveform: float32 `[samples]` in [-1, 1] at the model's rate (any length; the last frame is padded).
        """
        return self.embed(frames(waveform, self.input_size)).mean(axis=0)

    def state_options(self) -> Dict[str, object]:
        """Options that change the vectors beyond the handle and the input size (recorded by the embed step)."""
        return {}


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
            raise ConfigError(f"the {kind} model {handle!r} cannot be used: {first_line(error)}") from None
        self.output_dim = int(self._encoder.output_dim)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        return self._embed(tf.constant(batch, tf.float32)).numpy()


class TFLiteMediaModel(MediaModel):
    """A `.tflite` encoder run through `tf.lite.Interpreter`, with quantized inputs and outputs handled.

    Attributes (beyond `MediaModel`'s):
      output_tensor: the name of the tensor read as the embedding.
      front_end: the `LogMelFrontEnd` of a spectrogram-input audio model, else None.
    """

    def __init__(self, handle: str, kind: str, input_range: InputRange = "auto", output_index: Optional[int] = None,
                 output_tensor: Optional[str] = None, sample_rate: int = 16000):
        self.handle, self.kind = handle, kind
        self._interpreter = self._load(preserve_all_tensors=False)
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._embedding_tensor(output_index, output_tensor)
        self.output_tensor = self._output["name"]
        if self._output["index"] not in [o["index"] for o in self._interpreter.get_output_details()]:
            # An intermediate tensor's buffer is reused by later ops unless the interpreter keeps them all.
            self._interpreter = self._load(preserve_all_tensors=True)
        shape = [int(d) for d in self._input["shape"]]
        self.front_end = None
        if kind == "image":
            if len(shape) != 4 or shape[-1] != 3:
                raise ConfigError(f"the image model {handle!r} takes input shape {shape}; expected "
                                  "[1, height, width, 3].")
            self.input_size = (shape[1], shape[2])
        elif len(shape) == 1 or (len(shape) == 2 and shape[0] == 1):
            self.input_size = shape[-1]  # a waveform
        else:
            self.front_end = self._front_end(shape, sample_rate)
            self.input_size = self.front_end.patch_samples
        self._input_shape = shape
        self._low, self._high = self._float_range(input_range)
        # One item without the leading batch axis of 1 ([h, w, 3], [samples] or [frames, bands]); probed once.
        if self.front_end is not None:
            self._item_shape = [self.front_end.patch_frames, self.front_end.mel_bands]
        else:
            self._item_shape = shape[1:] if len(shape) > 1 else shape
        self.output_dim = int(self._run(np.zeros(self._item_shape, np.float32)).shape[-1])

    def _load(self, preserve_all_tensors: bool) -> tf.lite.Interpreter:
        try:
            interpreter = tf.lite.Interpreter(model_path=self.handle,
                                              experimental_preserve_all_tensors=preserve_all_tensors)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise ConfigError(f"the {self.kind} model {self.handle!r} is not a loadable .tflite file: "
                              f"{first_line(error)}") from None
        return interpreter

    def _embedding_tensor(self, output_index: Optional[int], output_tensor: Optional[str]) -> dict:
        """The details of the tensor read as the embedding (module docstring: the default rule)."""
        outputs = self._interpreter.get_output_details()
        if output_tensor is not None and output_index is not None:
            raise ConfigError(f"the {self.kind} model {self.handle!r}: give an output index or an output tensor "
                              "name, not both.")
        if output_index is not None:
            if not 0 <= output_index < len(outputs):
                raise ConfigError(f"the {self.kind} model {self.handle!r} has {len(outputs)} outputs; output "
                                  f"{output_index} does not exist.")
            return outputs[output_index]
        tensors = {t["name"]: t for t in self._interpreter.get_tensor_details() if t["name"]}
        if output_tensor is None:
            known = [name for name in KNOWN_EMBEDDING_TENSORS if name in tensors]
            return tensors[known[0]] if known else outputs[0]
        found = tensors.get(output_tensor) or tensors.get(f"{output_tensor}:0")
        if found is None:
            close = difflib.get_close_matches(output_tensor, list(tensors), n=5, cutoff=0.5)
            listed = close + [o["name"] for o in outputs if o["name"] not in close]
            raise ConfigError(f"the {self.kind} model {self.handle!r} has no tensor named {shorten(output_tensor)} "
                              f"(expected one of its {len(tensors)} tensor names, e.g. "
                              f"{', '.join(shorten(n, 90) for n in listed)}).")
        batched = len(self._input["shape"]) > 1 and int(self._input["shape"][0]) == 1
        if batched and (len(found["shape"]) == 0 or int(found["shape"][0]) != 1):
            # With a batch axis of 1 on the input, any other leading size is a weight or bias tensor: the model's
            # parameters, not the input's embedding.
            raise ConfigError(f"the {self.kind} model {self.handle!r}: the tensor {shorten(output_tensor)} has shape "
                              f"{[int(d) for d in found['shape']]}, not an activation of one input (expected "
                              "[1, ...], like the model's input).")
        return found

    def _front_end(self, shape, sample_rate: int) -> LogMelFrontEnd:
        if len(shape) == 3 and shape[0] == 1:
            patch_frames, bands = shape[1], shape[2]
        elif len(shape) == 4 and shape[0] == 1 and shape[3] == 1:
            patch_frames, bands = shape[1], shape[2]
        elif len(shape) == 2:
            patch_frames, bands = shape
        else:
            raise ConfigError(f"the audio model {self.handle!r} takes input shape {shape}; expected a waveform "
                              "([samples] or [1, samples]) or a log-mel patch ([1, frames, bands], "
                              "[1, frames, bands, 1] or [frames, bands]).")
        if sample_rate != LogMelFrontEnd.sample_rate:
            raise ConfigError(f"the audio model {self.handle!r} takes log-mel patches, whose front end (YAMNet's) "
                              f"works at {LogMelFrontEnd.sample_rate} Hz; the audio sample rate is {sample_rate} "
                              f"(expected {LogMelFrontEnd.sample_rate}).")
        try:
            return LogMelFrontEnd(mel_bands=bands, patch_frames=patch_frames, patch_hop=max(1, patch_frames // 2))
        except ValueError as error:  # e.g. a dynamic (-1) frame axis
            raise ConfigError(f"the audio model {self.handle!r} takes input shape {shape}, which gives no log-mel "
                              f"patch geometry ({error}; expected fixed positive frames and bands).") from None

    def _float_range(self, input_range: InputRange) -> Tuple[float, float]:
        if input_range != "auto":
            low, high = (float(v) for v in input_range)
            if not low < high:
                raise ConfigError(f"input_range must be (low, high) with low < high, got {input_range!r}.")
            return low, high
        if self.kind == "audio":
            return 0.0, 1.0  # identity: waveforms and log-mel patches are fed as they are
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

    def embed_patches(self, patches: np.ndarray) -> np.ndarray:
        """`[patches, output_dim]` embeddings of log-mel patches `[patches, frames, bands]` (spectrogram models)."""
        patches = np.asarray(patches, np.float32)
        if self.front_end is None or patches.shape[1:] != tuple(self._item_shape):
            geometry = ", ".join(map(str, self._item_shape))
            raise ValueError(f"{self.handle}: expected log-mel patches [patches, {geometry}], got {list(patches.shape)}.")
        return np.stack([self._run(patch) for patch in patches]).astype(np.float32)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        if self.front_end is not None:
            # Waveform frames of `input_size` samples, each exactly one patch.
            return np.stack([self.embed_clip(item) for item in batch]).astype(np.float32)
        return np.stack([self._run(np.asarray(item, np.float32)) for item in batch]).astype(np.float32)

    def embed_clip(self, waveform: np.ndarray) -> np.ndarray:
        if self.front_end is None:
            return super().embed_clip(waveform)
        return self.embed_patches(self.front_end.patches(waveform)).mean(axis=0)

    def state_options(self) -> Dict[str, object]:
        options: Dict[str, object] = {"output_tensor": self.output_tensor}
        if self.front_end is not None:
            options["front_end"] = self.front_end.options()
        return options


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
                     output_key=None, output_tensor: Optional[str] = None) -> MediaModel:
    """An audio encoder from a TF Hub handle, a SavedModel directory or a `.tflite` file.

    Args:
      handle: the model.
      sample_rate: the rate the model expects; clips are resampled to it (a
        spectrogram-input `.tflite` model's front end needs 16000).
      clip_seconds: the frame length a hub model takes (a `.tflite` model's
        comes from its input tensor).
      output_key: the dict key or tuple index of the embedding (hub YAMNet: 1);
        for a `.tflite` model, the index of the output.
      output_tensor: for a `.tflite` model, the name of the tensor to read as
        the embedding, intermediate ones included (default: module docstring).

    Raises:
      ConfigError: the model is missing or unusable, or the options do not fit it.
    """
    handle = os.fspath(handle)
    _check_handle(handle, "audio")
    if handle.endswith(".tflite"):
        if output_key is not None and not isinstance(output_key, int):
            raise ConfigError(f"the audio model {handle!r} is a .tflite file, whose outputs have no keys: the output "
                              f"key {shorten(output_key)} does not apply (expected an output index, or a tensor name "
                              "as the output tensor).")
        return TFLiteMediaModel(handle, "audio", output_index=output_key, output_tensor=output_tensor,
                                sample_rate=sample_rate)
    if output_tensor is not None:
        raise ConfigError(f"the audio model {handle!r} is not a .tflite file: an output tensor name applies to .tflite "
                          "models only (expected an output key for a hub model or SavedModel).")
    return HubMediaModel(handle, "audio", sample_rate=sample_rate, clip_seconds=clip_seconds, output_key=output_key)


class TextModel:
    """A text encoder for the embedding step: `embed(titles)` -> `[n, output_dim]` float32.

    Attributes:
      handle: what it was loaded from.
      output_dim: the embedding width.
    """

    def __init__(self, handle: str):
        from tfrec_video.towers.pretrained_title import PretrainedTitleEncoder

        self.handle = handle
        try:
            self._encoder = PretrainedTitleEncoder(handle)
        except ConfigError as error:
            raise ConfigError(f"--text-model: {error}") from None
        self.output_dim = int(self._encoder.output_dim)
        self._embed = tf.function(self._encoder, input_signature=[tf.TensorSpec([None], tf.string)])

    def embed(self, titles: Sequence[str]) -> np.ndarray:
        """`[len(titles), output_dim]` float32 vectors of `titles` (strings, any language)."""
        return self._embed(tf.constant(list(titles), tf.string)).numpy()


def load_text_model(handle: str) -> TextModel:
    """A title encoder from a TF Hub handle or a SavedModel directory (string `[batch]` -> `[batch, dim]`).

    Raises:
      ConfigError: the model is missing, does not load, or does not map strings to `[batch, dim]`.
    """
    return TextModel(os.fspath(handle))
