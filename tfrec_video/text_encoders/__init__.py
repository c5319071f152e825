"""Pretrained text encoders converted into TF SavedModels that TF Serving can run.

A title encoder pretrained on many languages places "How to make ramen noodles
at home" next to "在家做拉面的方法" before it has seen a click; the CNN
`TitleEncoder` learns only from the training period's titles. This package turns
a pretrained multilingual encoder into a TF Hub-style SavedModel (a string batch
in, an L2-normalised `[batch, dim]` embedding out) whose graph holds only TF and
TF Text ops, so `ModelConfig(text_model=DIR)` can load it with `hub.KerasLayer`
and an export that contains it still loads in TF Serving.

May import data and the base modules only.
"""
