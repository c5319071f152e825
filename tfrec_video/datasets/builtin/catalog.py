"""The catalog of the built-in dataset: noisy topic embeddings and catalog rows.

`_projection` draws the fixed topic-to-embedding matrices, `_embed` the noisy
image and audio embeddings, and `_catalog_blocks` yields the catalog columns
block by block.
"""

import math
from typing import Tuple

import numpy as np

from tfrec_video.datasets.builtin.config import (
    _PART_EMBEDDINGS,
    _PART_PROJECTION,
    _PART_TITLES,
    _VIDEO_BLOCK,
    BuiltinConfig,
    _rng,
)
from tfrec_video.datasets.builtin.latents import _Latents
from tfrec_video.datasets.builtin.titles import _TitleMaker


def _projection(cfg: BuiltinConfig) -> Tuple[np.ndarray, np.ndarray]:
    """W_img [image_dim, K], W_aud [audio_dim, K]: each signal dimension of a unit
    topic vector has unit variance (entries N(0, 1))."""
    rng = _rng(cfg.seed, _PART_PROJECTION)
    w_img = rng.standard_normal((cfg.image_dim, cfg.n_topics)).astype(np.float32)
    w_aud = rng.standard_normal((cfg.audio_dim, cfg.n_topics)).astype(np.float32)
    return w_img, w_aud


def _embed(unit: np.ndarray, w: np.ndarray, noise_std: float, rng: np.random.Generator) -> np.ndarray:
    signal = unit.astype(np.float64) @ w.astype(np.float64).T
    noise = rng.standard_normal(signal.shape)
    return ((signal + noise_std * noise) / math.sqrt(1.0 + noise_std ** 2)).astype(np.float32)


def _catalog_blocks(cfg: BuiltinConfig, lat: _Latents, w_img: np.ndarray, w_aud: np.ndarray):
    """Yields catalog column dicts, `_VIDEO_BLOCK` videos at a time."""
    titles = _TitleMaker(cfg)
    categories = np.array(cfg.categories, dtype=object)
    for b, v0 in enumerate(range(0, cfg.n_videos, _VIDEO_BLOCK)):
        v1 = min(v0 + _VIDEO_BLOCK, cfg.n_videos)
        rng = _rng(cfg.seed, _PART_EMBEDDINGS, b)
        unit = lat.video_unit[v0:v1]
        image = _embed(unit, w_img, cfg.image_noise_std, rng)
        audio = _embed(unit, w_aud, cfg.audio_noise_std, rng)
        block = {
            "video_id": lat.video_ids[v0:v1],
            "title": np.array(titles.make(lat.video_theta[v0:v1], lat.language[v0:v1],
                                          _rng(cfg.seed, _PART_TITLES, b)), dtype=object),
            "category": categories[lat.category[v0:v1]],
            "duration_s": lat.duration[v0:v1],
        }
        # The embeddings are drawn either way, so a titles-only catalog has the same titles.
        if cfg.media_embeddings:
            block.update(image_embedding=image, audio_embedding=audio)
        yield block
