"""`PretrainedTitleEncoder`: raw titles through a pretrained text encoder, loaded with `hub.KerasLayer`.

    title strings [batch] ──► hub.KerasLayer (frozen unless trainable) ──► [batch, output_dim] float32

The CNN `TitleEncoder` learns titles from the training period's clicks alone; a
pretrained multilingual encoder (multilingual-e5-small, converted by
`tfrec-video convert-text-encoder`) places a title it has never seen, in any
language, before a click. The candidate tower uses it beside or instead of the
CNN (`ModelConfig.title_encoder`: `cnn`, `pretrained` or `both`), and projects
its output with a Dense layer to `ModelConfig.title_dim`.

**The model.** `handle` is anything `hub.KerasLayer` resolves: a TF Hub / Kaggle
URL or a local TF2 SavedModel directory whose `__call__` is a `tf.function`
taking a `tf.string` `[batch]` tensor and returning float32 `[batch, dim]`
(`variables` and `trainable_variables` attributes let it fine-tune). A model
returning a dict or tuple needs `output_key`. The encoder is checked when the
layer is built, by tracing it once without computing: a missing directory, a
model that does not take strings, or one whose output is not `[batch, dim]` is
a `ConfigError` naming the handle and what was expected.

**Frozen by default.** `trainable=False` keeps the encoder's variables out of
`trainable_weights`; `trainable=True` fine-tunes them (only those the model
lists as trainable: the converted e5 keeps its 4-bit matrices as constants).

**Servable.** The layer adds nothing but the encoder's own graph, so an export
holding it needs only what the encoder needs (the converted e5: TF and TF Text
ops) and no tensorflow_hub. The loading conventions are the media encoders'
(`tfrec_video.towers.media_encoder`), whose base class this reuses.

Example:

>>> encoder = PretrainedTitleEncoder("text_encoders/e5_small")   # doctest: +SKIP
>>> encoder(tf.constant(["How to make ramen", "在家做拉面的方法"])).shape  # doctest: +SKIP
TensorShape([2, 384])
"""

import os
from typing import Optional, Union

import tensorflow as tf

from tfrec_video.errors import ConfigError, first_line, shorten
from tfrec_video.towers.media_encoder import _HubMediaEncoder

EXPECTED = "a TF Hub-style SavedModel whose __call__ takes a string [batch] and returns float32 [batch, dim]"


class PretrainedTitleEncoder(_HubMediaEncoder):
    """Encodes raw title strings with a pretrained text encoder (see the module docstring).

    Args:
      handle: a TF Hub / Kaggle URL or a local SavedModel directory: string
        `[batch]` in, float32 `[batch, dim]` out.
      trainable: fine-tune the encoder's variables (frozen by default).
      output_key: the dict key or tuple index of the embedding, when the
        encoder returns several outputs.
      **kwargs: `tf.keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
      inputs: `[batch]` or `[batch, 1]` tf.string titles.
      training: passed to the encoder when it is trainable.

    Returns:
      `[batch, output_dim]` float32.

    Attributes:
      output_dim: the embedding width.

    Raises:
      ConfigError: the handle is missing or not a string `[batch]` -> `[batch, dim]` model.
    """

    def __init__(self, handle: Union[str, os.PathLike], trainable: bool = False,
                 output_key: Optional[Union[str, int]] = None, **kwargs):
        handle = os.fspath(handle)
        if "://" not in handle and not os.path.isdir(handle):
            raise ConfigError(f"the text model {shorten(handle)} is not a directory (expected {EXPECTED}, e.g. "
                              "the output of tfrec-video convert-text-encoder).")
        # Text models carry TF Text ops (the converted e5's SentencePiece, TF Hub's BERT preprocessors),
        # which TensorFlow can load only once tensorflow_text has registered them in this process.
        import tensorflow_text  # noqa: F401

        try:
            super().__init__(handle, trainable=trainable, output_key=output_key, **kwargs)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, tf.errors.OpError) as error:
            raise ConfigError(f"the text model {shorten(handle)} does not load: {first_line(error)} "
                              f"(expected {EXPECTED}).") from None
        spec = self.encoder_input_spec
        if spec is not None and (spec.dtype != tf.string or spec.shape.rank not in (None, 1)):
            raise ConfigError(f"the text model {shorten(handle)} takes {spec.dtype.name} {_shape(spec.shape)}, not "
                              f"string [batch] (expected {EXPECTED}).")
        self.output_dim = self._output_width()

    def _output_width(self) -> int:
        """Traces the encoder once on a string `[batch]` (no computation) and checks it returns `[batch, dim]`."""
        handle = shorten(self.handle)
        try:
            traced = tf.function(lambda x: self.hub_layer(x, training=False), autograph=False)
            outputs = tf.nest.map_structure(tf.convert_to_tensor, self._select(
                traced.get_concrete_function(tf.TensorSpec([None], tf.string)).structured_outputs))
        except (ValueError, TypeError, tf.errors.OpError) as error:
            raise ConfigError(f"the text model {handle} cannot be used: {first_line(error)} "
                              f"(expected {EXPECTED}).") from None
        if not isinstance(outputs, tf.Tensor) or outputs.shape.rank != 2 or not outputs.dtype.is_floating:
            got = (f"{outputs.dtype.name} {_shape(outputs.shape)}" if isinstance(outputs, tf.Tensor)
                   else type(outputs).__name__)
            raise ConfigError(f"the text model {handle} returns {got} for a string [batch] (expected {EXPECTED}).")
        dim = outputs.shape[-1]
        if dim is None:  # not declared by the graph: ask the model
            dim = self._embed(tf.constant(["", "a title"])).shape[-1]
        return int(dim)

    def _embed(self, inputs, training=None):
        # Unlike the media encoders, no pooling: a title model returns one vector a title (checked above).
        return tf.cast(self._select(self.hub_layer(inputs, training=training)), tf.float32)

    def call(self, inputs, training=None):
        titles = tf.reshape(tf.convert_to_tensor(inputs, tf.string), [-1])
        return tf.ensure_shape(self._embed(titles, training=training), [None, self.output_dim])


def _shape(shape: tf.TensorShape) -> str:
    return "[?]" if shape.rank is None else str([("batch" if i == 0 and d is None else d) for i, d in
                                                   enumerate(shape.as_list())]).replace("'", "")
