"""Issue 16, round 2: CSV errors name the line an editor shows; WAVs of every common encoding decode alike.

CSV files are written by hand (multi-line quoted cells, blank lines, CRLF, Latin-1
bytes) so that the 0-based record index and the editor's line differ. WAV files
are built byte by byte (`_wav`) with one sine wave in each sample encoding.
"""

import logging
import os
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)
import tensorflow as tf

from tfrec_video.cli.main import main
from tfrec_video.data import read_table, read_table_numpy, write_table
from tfrec_video.data.schema import catalog_schema
from tfrec_video.errors import DataValidationError
from tfrec_video.media_embedding import MediaError, read_audio
from tfrec_video.media_embedding.decode import decode_wav

CATALOG = catalog_schema(image_dim=4, audio_dim=3)
HEADER = "video_id,title,duration_s,image_embedding"
AUDIO = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "audio"
RATE = 16000


# -- CSV: the line an editor shows ---------------------------------------------------------------------------


def _catalog_csv(path, bad_cells, newline="\n"):
    """A catalog CSV whose third record (0-based row 2) holds `bad_cells`; it starts on line 6.

    Line 1 is the header; record 0 spans lines 2-3 (a quoted title holds a newline);
    line 4 is blank; record 1 is line 5; record 2 is line 6; record 3 is line 7.
    """
    lines = [HEADER, 'v0,"two', 'lines",1.0,0 1 2 3', "", "v1,t,1.0,0 1 2 3", bad_cells, "v3,t,1.0,0 1 2 3"]
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    return str(path)


def _check_line(error, path, line, feature):
    message = str(error)
    assert error.file == path and error.line == line and error.row is None, message
    assert f"{os.path.basename(path)}, line {line}" in message, message
    if feature is not None:
        assert error.feature == feature and repr(feature) in message, message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), message


def _read_errors(path, schema=CATALOG):
    """The errors of both readers, which must agree."""
    errors = []
    for read in (read_table, read_table_numpy):
        with pytest.raises(DataValidationError) as info:
            read(path, schema)
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1])
    return errors[0]


@pytest.mark.bad_input
@pytest.mark.parametrize("cells, feature, words", [
    ("v2,t,abc,0 1 2 3", "duration_s", "not a valid float32"),        # unparsable scalar
    ("v2,t,1.0,0 x 2 3", "image_embedding", "not a valid float32"),   # unparsable vector value
    ("v2,t,1.0,1 2 3", "image_embedding", "expected 4 values"),       # shared count check
    ("v2,t,nan,0 1 2 3", "duration_s", "NaN"),                        # shared finite check
    ("v2,t,1.0,0 1 inf 3", "image_embedding", "infinite"),
    ("v2,t,-1.0,0 1 2 3", "duration_s", ">= 0"),                      # the schema's range rule
    ("v2,t,1.0", None, "3 cells"),                                    # wrong cell count
])
def test_csv_errors_name_the_line_the_record_starts_on(tmp_path, cells, feature, words):
    path = _catalog_csv(tmp_path / "cat.csv", cells)
    error = _read_errors(path)
    _check_line(error, path, 6, feature)
    assert words in str(error)


@pytest.mark.bad_input
def test_csv_crlf_and_a_later_batch_still_name_the_right_line(tmp_path):
    # 5000 records: more than one read batch (4096), a multi-line record early, CRLF line ends.
    records = [f"v{i},t,1.0,0 1 2 3" for i in range(5000)]
    records[10] = 'v10,"a\r\nb\r\nc",1.0,0 1 2 3'   # lines 12-14
    records[4500] = "v4500,t,oops,0 1 2 3"           # record 4500: line 4500 + 2 + 2 extra lines
    path = tmp_path / "cat.csv"
    path.write_bytes(("\r\n".join([HEADER] + records) + "\r\n").encode("utf-8"))
    _check_line(_read_errors(str(path)), str(path), 4504, "duration_s")


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["fourth_line", "beyond_the_first_buffer", "inside_a_quoted_cell", "cut_at_the_end"])
def test_csv_not_utf8_names_the_line_of_the_bad_byte(tmp_path, case):
    good = [HEADER] + [f"v{i},t,1.0,0 1 2 3" for i in range(3)]
    if case == "fourth_line":  # The example: a Latin-1 'é' on line 4 was reported at row 0.
        data, line = ("\n".join(good[:3] + ["v2,caf\u00e9,1.0,0 1 2 3"]) + "\n").encode("latin-1"), 4
    elif case == "beyond_the_first_buffer":  # ~1.3 MB of good CRLF text first: past every read buffer.
        many = [HEADER] + [f"v{i},a fine title {i},1.0,0 1 2 3" for i in range(40000)]
        data = ("\r\n".join(many) + "\r\n").encode("utf-8") + "vz,caf\u00e9,1.0,0 1 2 3\r\n".encode("latin-1")
        line = 40002
    elif case == "inside_a_quoted_cell":  # The record starts on line 5; the bad byte is on line 6.
        data = ("\n".join(good) + '\nv9,"first line\nsecond caf\u00e9",1.0,0 1 2 3\n').encode("latin-1")
        line = 6
    else:  # A multi-byte character cut off by the end of the file, on line 5.
        data = ("\n".join(good) + "\nv9,t,1.0,0 1 2 3").encode("utf-8") + "é".encode("utf-8")[:1]
        line = 5
    path = tmp_path / "cat.csv"
    path.write_bytes(data)
    error = _read_errors(str(path))
    _check_line(error, str(path), line, None)
    assert "not UTF-8" in str(error) and "byte 0x" in str(error)


@pytest.mark.bad_input
def test_csv_unclosed_quote_names_the_line_the_record_starts_on(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text(HEADER + '\nv0,t,1.0,0 1 2 3\nv1,"no end,1.0,0 1 2 3\nv2,t,1.0,0 1 2 3\n', encoding="utf-8")
    error = _read_errors(str(path))
    _check_line(error, str(path), 3, None)
    assert "malformed CSV" in str(error) and "stopped at line 4" in str(error)


@pytest.mark.bad_input
@pytest.mark.parametrize("latin1", [False, True])
def test_cli_names_the_csv_line(tmp_path, capsys, latin1):
    catalog = _catalog_csv(tmp_path / "cat.csv", "v2,t,abc,0 1 2 3")
    if latin1:
        (tmp_path / "cat.csv").write_bytes((HEADER + "\nv0,t,1.0,0 1 2 3\n\nv1,caf\u00e9,1.0,0 1 2 3\n").encode("latin-1"))
    (tmp_path / "train.csv").write_text("user_id,video_id,clicked\nu0,v0,1\n", encoding="utf-8")
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  catalog: cat.csv\n  train: train.csv\noutput_dir: runs\nexport: {enabled: false}\n")
    assert main(["train", "--config", str(config), "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    expected = f"{catalog}, line 4: the file is not UTF-8" if latin1 else f"{catalog}, line 6: feature 'duration_s'"
    assert expected in err and "Traceback" not in err, err


def test_csv_reads_back_a_bytes_cell_larger_than_the_csv_module_limit(tmp_path):
    # 200 kB of bytes are ~267 kB of base64: over the csv module's default 128 KiB cell limit.
    blob = bytes(range(256)) * 800
    path = write_table({"video_id": ["a"], "title": ["t"], "audio": [blob]}, str(tmp_path / "cat.csv"), CATALOG)
    assert read_table_numpy(path, CATALOG)["audio"][0] == blob


@pytest.mark.bad_input
def test_parquet_and_tfrecord_name_the_first_row_as_row_0(tmp_path):
    columns = {"video_id": pa.array(["a", "b"]), "title": pa.array(["t", "t"]),
               "duration_s": pa.array([float("nan"), 1.0], pa.float32())}
    parquet = str(tmp_path / "cat.parquet")
    pq.write_table(pa.table(columns), parquet)
    example = {"video_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"])),
               "title": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"t"])),
               "duration_s": tf.train.Feature(float_list=tf.train.FloatList(value=[float("nan")]))}
    tfrecord = str(tmp_path / "cat.tfrecord")
    with tf.io.TFRecordWriter(tfrecord) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature=example)).SerializeToString())
    for path in (parquet, tfrecord):
        error = _read_errors(path)
        assert error.row == 0 and error.line is None and f"{os.path.basename(path)}, row 0: " in str(error)


# -- WAV: every common sample encoding ------------------------------------------------------------------------

_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
# encoding -> (format tag, bytes a sample, largest error of decoding its quantised sine)
ENCODINGS = {"u8": (1, 1, 1 / 128), "s16": (1, 2, 1 / 32768), "s24": (1, 3, 2 ** -23), "s32": (1, 4, 1e-7),
             "f32": (3, 4, 1e-7), "f64": (3, 8, 1e-7)}


def _samples_bytes(x, encoding):
    tag, width, _ = ENCODINGS[encoding]
    if tag == 3:
        return x.astype("<f4" if width == 4 else "<f8").tobytes()
    full = float(1 << (8 * width - 1))
    ints = np.clip(np.round(x * full), -full, full - 1).astype("<i8")
    if width == 1:  # 8-bit WAV is unsigned, silence at 128.
        return (ints + 128).astype(np.uint8).tobytes()
    return ints.view(np.uint8).reshape(-1, 8)[:, :width].tobytes()  # little-endian, the low `width` bytes


def _wav(x, rate, encoding, extensible=False, tag=None, riff=b"RIFF", data_chunk=True):
    """A WAV file's bytes: `x` float `[n]` or `[n, channels]`, with a `LIST` chunk of odd size before the data."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    own_tag, width, _ = ENCODINGS[encoding]
    tag = own_tag if tag is None else tag
    block = width * x.shape[1]
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, x.shape[1], rate, rate * block, block, 8 * width)
    if extensible:
        fmt += struct.pack("<HHI", 22, 8 * width, 0) + struct.pack("<H", tag) + _GUID_TAIL
    elif tag != 1:
        fmt += struct.pack("<H", 0)
    data = _samples_bytes(x.reshape(-1), encoding)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"
    if data_chunk:
        chunks += b"data" + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)
    return riff + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def _sine(rate=RATE, seconds=0.5, freq=440.0):
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("extensible", [False, True], ids=["plain", "extensible"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_wav_encodings_decode_to_the_same_waveform(tmp_path, encoding, extensible, channels):
    sine = _sine()
    x = sine if channels == 1 else np.stack([sine, 0.5 * sine], axis=1)
    path = tmp_path / f"{encoding}.wav"
    path.write_bytes(_wav(x, RATE, encoding, extensible))
    waveform = read_audio(str(path), RATE)
    mono = sine if channels == 1 else 0.75 * sine   # channels are averaged
    assert waveform.dtype == np.float32 and waveform.shape == mono.shape
    assert np.abs(waveform - mono).max() <= ENCODINGS[encoding][2] * 1.01 + 1e-7
    # The decoder itself keeps the channels.
    rate, samples = decode_wav(str(path), path.read_bytes())
    assert rate == RATE and samples.shape == (len(sine), channels)


def test_an_8_bit_wav_at_another_rate_is_resampled(tmp_path):
    path = tmp_path / "u8.wav"
    path.write_bytes(_wav(np.stack([_sine(44100, 1.0)] * 2, 1), 44100, "u8"))
    waveform = read_audio(str(path), RATE)
    assert abs(len(waveform) - RATE) <= 2 and 0.45 < np.abs(waveform).max() < 0.55
    assert np.argmax(np.abs(np.fft.rfft(waveform))) * RATE / len(waveform) == pytest.approx(440, abs=2)


@pytest.mark.bad_input
@pytest.mark.parametrize("kwargs, words", [
    ({"tag": 2}, "Microsoft ADPCM"),
    ({"tag": 6}, "A-law"),
    ({"tag": 7}, "mu-law"),
    ({"tag": 2, "extensible": True}, "Microsoft ADPCM"),
    ({"tag": 0x1234}, "format 0x1234"),
    ({"riff": b"RIFX"}, "unsupported WAV container 'RIFX'"),
    ({"data_chunk": False}, "no 'data' chunk"),
])
def test_unsupported_or_broken_wavs_name_the_file_and_the_encoding(tmp_path, kwargs, words):
    path = tmp_path / "odd.wav"
    path.write_bytes(_wav(_sine(), RATE, "s16", **kwargs))
    with pytest.raises(MediaError) as info:
        read_audio(str(path), RATE)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert words in str(info.value), str(info.value)


@pytest.mark.skipif(not (AUDIO / "speech_10k_mono.wav").exists(), reason="../shared/pretrained is not here")
@pytest.mark.parametrize("name", ["speech_10k_mono.wav", "synth_effect_44k_stereo.wav"])
def test_real_recordings_decode_alike_in_every_encoding(tmp_path, name):
    original = str(AUDIO / name)
    reference = read_audio(original, RATE)
    decoded = tf.audio.decode_wav(tf.io.read_file(original))
    x, rate = decoded.audio.numpy().astype(np.float64), int(decoded.sample_rate)
    for encoding in ENCODINGS:
        path = tmp_path / f"{encoding}.wav"
        path.write_bytes(_wav(x, rate, encoding, extensible=encoding != "s16"))
        waveform = read_audio(str(path), RATE)
        assert waveform.shape == reference.shape, encoding
        # 8-bit rounding adds up to 1/256 a sample (resampling may add its filter's gain); the rest are exact.
        assert np.abs(waveform - reference).max() < (0.01 if encoding == "u8" else 1e-4), encoding


# -- the embed command --------------------------------------------------------------------------------------


def _band_energies(waveforms):
    """[batch, 16000] -> [batch, 16]: log mean DFT magnitude in 16 bands up to 8 kHz."""
    magnitude = tf.abs(tf.signal.rfft(waveforms))[:, :8000]
    return tf.math.log1p(tf.reduce_mean(tf.reshape(magnitude, [-1, 16, 500]), -1))


@pytest.mark.bad_input
def test_embed_cli_embeds_every_wav_encoding_alike_and_names_an_a_law_file(tmp_path, capsys, caplog):
    module = tf.Module()
    module.__call__ = tf.function(_band_energies, input_signature=[tf.TensorSpec([None, RATE], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "audio_model"))
    sine = _sine(seconds=1.5)
    rows = []
    for encoding in ("s16", "u8", "s24", "f32"):
        (tmp_path / f"{encoding}.wav").write_bytes(_wav(sine, RATE, encoding))
        rows.append(f"{encoding},,{encoding}.wav")
    (tmp_path / "alaw.wav").write_bytes(_wav(sine, RATE, "u8", tag=6))
    rows.append("alaw,,alaw.wav")
    (tmp_path / "media.csv").write_text("video_id,thumbnail_path,audio_path\n" + "\n".join(rows) + "\n")
    out = tmp_path / "emb.parquet"
    with caplog.at_level(logging.WARNING, logger="tfrec_video.embed"):
        code = main(["embed", "--catalog", str(tmp_path / "media.csv"), "--audio-model", str(tmp_path / "audio_model"),
                     "--out", str(out), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "4 rows written" in printed and "audio missing 0, failed 1" in printed, printed
    assert str(tmp_path / "alaw.wav") in caplog.text and "A-law" in caplog.text
    from tfrec_video.data.media_embeddings import embeddings_schema

    table = read_table_numpy(str(out), embeddings_schema(None, 16))
    vectors = dict(zip(table["video_id"], table["audio_embedding"]))
    for encoding in ("u8", "s24", "f32"):
        cosine = vectors[encoding] @ vectors["s16"] / np.linalg.norm(vectors[encoding]) / np.linalg.norm(vectors["s16"])
        assert cosine > 0.999, encoding  # 8-bit rounding adds a little broadband noise, nothing more
    np.testing.assert_allclose(vectors["s24"], vectors["s16"], atol=1e-3)
    np.testing.assert_allclose(vectors["f32"], vectors["s16"], atol=1e-3)
