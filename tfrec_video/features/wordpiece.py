"""WordPiece vocabularies for titles in any language.

Titles are tokenized by keras-nlp's `WordPieceTokenizer`, which lower-cases,
splits on whitespace and punctuation, and splits CJK text into single
characters (Chinese and Japanese titles have no spaces, so a per-character split
is what makes a sub-word vocabulary learnable at all). The vocabulary itself is
learned from catalog titles with `keras_nlp.tokenizers.compute_word_piece_vocabulary`.

keras-nlp is a Keras 3 library. We only use its tokenizer (a callable over
`tf.string` tensors backed by TF Text ops) and its vocabulary learner; no Keras 3
layer is ever placed in a `tf_keras` functional graph.

Example:

>>> vocab = learn_title_vocabulary(["funny cat video", "猫咪 搞笑", "cat 猫"], vocabulary_size=64)
>>> vocab[:2]
['[PAD]', '[UNK]']
"""

from typing import Iterable, List

RESERVED_TOKENS = ["[PAD]", "[UNK]"]
PAD_TOKEN, UNK_TOKEN = RESERVED_TOKENS


def learn_title_vocabulary(titles: Iterable[str], vocabulary_size: int = 8000) -> List[str]:
    """Learns a WordPiece vocabulary from titles.

    Args:
      titles: the catalog's titles (any iterable of `str`; an array is fine).
      vocabulary_size: the most tokens to keep, reserved tokens included.

    Returns:
      The vocabulary, a list of tokens whose first two are `[PAD]` (id 0, the
      padding id) and `[UNK]`.
    """
    import tensorflow as tf
    import keras_nlp

    if vocabulary_size < len(RESERVED_TOKENS) + 1:
        raise ValueError(f"vocabulary_size must be > {len(RESERVED_TOKENS)}, got {vocabulary_size}.")
    titles = [t if isinstance(t, str) else t.decode("utf-8") for t in titles]
    titles = [t for t in titles if t.strip()] or ["[UNK]"]
    data = tf.data.Dataset.from_tensor_slices(tf.constant(titles, tf.string)).batch(4096)
    vocab = keras_nlp.tokenizers.compute_word_piece_vocabulary(
        data,
        vocabulary_size=vocabulary_size,
        lowercase=True,
        split_on_cjk=True,
        reserved_tokens=RESERVED_TOKENS,
    )
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in vocab]
