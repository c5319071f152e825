"""e5's XLM-R tokenizer as TF ops: a whitespace pre-pass, then `tensorflow_text.SentencepieceTokenizer`.

The SentencePiece model proto is rebuilt from the weights file: its pieces in the model's own id
order (so a SentencePiece id is the id the encoder embeds, `<s>`/`</s>`/`<pad>`/`<mask>` included,
as e5.c matches them), their scores, and its normalisation map compiled into a
`NormalizerSpec.precompiled_charsmap` by `sentencepiece`'s own trainer. Only building the proto
needs the `sentencepiece` package; the graph needs TF Text alone.

e5.c (the reference) differs from stock SentencePiece in two places, which the graph reproduces:

* it maps each character first, *then* collapses runs of spaces into one, and keeps a trailing
  space. SentencePiece would strip it (`remove_extra_whitespaces`) or keep every space. The model
  proto keeps every space, and a regex pre-pass collapses the runs the map would produce: a run of
  spaces and space-like characters (tab, ideographic space, ...), possibly with deleted
  characters (controls) between them, becomes one space; before a character whose replacement
  starts with a space (`´` -> ` ́`), the run disappears.
* it gives each unknown character its own `<unk>`; SentencePiece merges a run of them into one.
  The run is split again using the token offsets (one `<unk>` per character).
"""

import os
import tempfile
from typing import Dict, List, Tuple

import tensorflow as tf

from tfrec_video.errors import ConfigError
from tfrec_video.text_encoders.e5_file import E5File

_SPACE = 0x20


def _char_class(code_points) -> str:
    return "[" + "".join(f"\\x{{{c:x}}}" for c in sorted(code_points)) + "]"


def whitespace_rules(normalizer: Dict[int, Tuple[int, ...]]) -> List[Tuple[str, str]]:
    """The regex rewrites (RE2 pattern, replacement) that collapse spaces the way e5.c does.

    Args:
      normalizer: the weights file's `{code point: replacement}` map.

    Returns:
      Rewrites to apply in order, before SentencePiece normalises with the same map.
    """
    spaces = {c for c, out in normalizer.items() if out == (_SPACE,)}
    deleted = {c for c, out in normalizer.items() if not out}
    leading = {c for c, out in normalizer.items() if len(out) > 1 and out[0] == _SPACE}
    rules = [(_char_class(spaces), " ")] if spaces else []
    run = f"(?: {_char_class(deleted)}*)+" if deleted else "(?: )+"
    if leading:
        rules.append((run + f"({_char_class(leading)})", "\\1"))
    rules.append((run, " "))
    return rules


def _compiled_normalizer(normalizer: Dict[int, Tuple[int, ...]]):
    """A `NormalizerSpec` whose precompiled charsmap applies `normalizer`, compiled by SentencePiece."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as tmp:
        rules, corpus, prefix = (os.path.join(tmp, name) for name in ("rules.tsv", "corpus.txt", "throwaway"))
        with open(rules, "w", encoding="utf-8") as f:
            for code, out in sorted(normalizer.items()):
                # An empty replacement is a deletion rule.
                f.write(f"{code:X}\t{' '.join(f'{c:X}' for c in out)}\n")
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("a throwaway corpus\nonly the normaliser spec is kept\n")
        sentencepiece.SentencePieceTrainer.train(
            input=corpus, model_prefix=prefix, model_type="char", vocab_size=8, hard_vocab_limit=False,
            normalization_rule_tsv=rules, minloglevel=2)
        trained = sentencepiece_model_pb2.ModelProto()
        with open(prefix + ".model", "rb") as f:
            trained.ParseFromString(f.read())
    return trained.normalizer_spec


def sentencepiece_model(weights: E5File) -> bytes:
    """A serialized SentencePiece unigram `ModelProto` equivalent to e5.c's tokenizer (but see the module doc).

    Args:
      weights: the read weights file.

    Returns:
      The proto's bytes, for `tensorflow_text.SentencepieceTokenizer(model=...)`.

    Raises:
      ConfigError: the `sentencepiece` package (needed to compile the normaliser) is missing.
    """
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        raise ConfigError('converting the e5 tokenizer needs the sentencepiece package: '
                          'pip install "tfrec_video[e5]" (or pip install sentencepiece)') from None
    Piece = sentencepiece_model_pb2.ModelProto.SentencePiece
    proto = sentencepiece_model_pb2.ModelProto()
    for index, (piece, score) in enumerate(zip(weights.pieces, weights.scores.tolist())):
        # Every piece but <unk> is matchable, as in e5.c's Viterbi (score 0 for <s>, </s>, ...).
        proto.pieces.add(piece=piece, score=score, type=Piece.UNKNOWN if index == weights.unk else Piece.NORMAL)
    spec = proto.trainer_spec
    spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    spec.vocab_size = len(weights.pieces)
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = weights.unk, -1, -1, -1
    proto.normalizer_spec.CopyFrom(_compiled_normalizer(weights.normalizer))
    proto.normalizer_spec.name = "e5_charsmap"
    # e5.c: a leading metaspace is added, every space (after the pre-pass) becomes one, none is stripped.
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()


class E5Tokenizer(tf.Module):
    """Text to e5's content ids (no `<s>`/`</s>`), as e5.c's `tok_content` gives them.

    Args:
      model: the `sentencepiece_model` bytes.
      rules: the `whitespace_rules`.
      unk_id: the id of `<unk>`.
    """

    def __init__(self, model: bytes, rules: List[Tuple[str, str]], unk_id: int, name: str = "e5_tokenizer"):
        super().__init__(name=name)
        import tensorflow_text

        self.sentencepiece = tensorflow_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
        self._rules = list(rules)
        self._unk_id = int(unk_id)

    def __call__(self, texts: tf.Tensor) -> tf.RaggedTensor:
        """Tokenizes a `[batch]` string tensor (the `passage: ` prefix already joined).

        Args:
          texts: string `[batch]`.

        Returns:
          int32 ragged `[batch, (tokens)]`, not truncated.
        """
        for pattern, rewrite in self._rules:
            texts = tf.strings.regex_replace(texts, pattern, rewrite)
        ids, starts, ends = self.sentencepiece.tokenize_with_offsets(texts)
        rows = ids.value_rowids()
        spans = tf.strings.substr(tf.gather(texts, rows), starts.values, ends.values - starts.values)
        chars = tf.strings.length(spans, unit="UTF8_CHAR")
        repeats = tf.where(tf.equal(ids.values, self._unk_id), tf.maximum(chars, 1), tf.ones_like(chars))
        return tf.RaggedTensor.from_value_rowids(tf.repeat(ids.values, repeats), tf.repeat(rows, repeats),
                                                 nrows=tf.shape(texts, out_type=tf.int64)[0])
