"""The impressions of the built-in dataset: `_impression_block`.

Who is shown what, when and on which device; whether they click (drawn from
the true click probability of `truth`); and their click history.
"""

from typing import Dict

import numpy as np

from tfrec_video.datasets.builtin import truth as truth_lib
from tfrec_video.datasets.builtin.config import _DAY, _PART_IMPRESSIONS, _USER_BLOCK, BuiltinConfig, _rng
from tfrec_video.datasets.builtin.latents import _Latents
from tfrec_video.datasets.builtin.topics import DEVICES


def _impression_block(cfg: BuiltinConfig, lat: _Latents, block: int) -> Dict[str, np.ndarray]:
    """All impressions of users `[block * _USER_BLOCK, ...)`, as numpy columns.

    Returns a dict with `user` / `video` (indices), `hour`, `device` (index),
    `clicked`, `timestamp`, `prob` (true click probability), `history`
    ([n, history_length] video indices, -1 padded) and `history_len`; rows are
    shuffled within the block.
    """
    rng = _rng(cfg.seed, _PART_IMPRESSIONS, block)
    u0 = block * _USER_BLOCK
    u1 = min(u0 + _USER_BLOCK, cfg.n_users)
    users = np.arange(u0, u1)
    counts = np.maximum(1, rng.poisson(cfg.impressions_per_user * lat.activity[u0:u1]))
    user = np.repeat(users, counts)
    n = user.size

    # When: a random day of the window, an hour near the user's peak hour.
    day = rng.integers(0, cfg.window_days, n)
    hour = np.mod(lat.peak_hour[user] + np.round(rng.normal(0.0, 2.0, n)).astype(np.int64), 24)
    t = cfg.start_timestamp + day * _DAY + hour * 3600 + rng.integers(0, 3600, n)
    order = np.lexsort((t, user))
    user, t = user[order], t[order]
    # Make each user's timestamps strictly increasing (bump ties by a second), so
    # "earlier" is unambiguous for histories: running max of (t - i), per user.
    i = np.arange(n, dtype=np.int64)
    offset = (user - u0).astype(np.int64) << 40
    t = np.maximum.accumulate(offset + t - i) - offset + i
    hour = (t // 3600) % 24

    loyal = rng.random(n) < cfg.device_loyalty
    device = np.where(loyal, lat.pref_device[user], rng.integers(0, len(DEVICES), n))

    # What: the exposure mix of popularity and the user's topics.
    from_popularity = rng.random(n) < cfg.exposure_popularity_fraction
    cum = np.cumsum(lat.user_theta[user].astype(np.float64), axis=1)
    z = np.minimum((rng.random(n)[:, None] * cum[:, -1:] > cum).sum(axis=1), cfg.n_topics - 1)
    r_pop, r_topic = rng.random(n), rng.random(n)
    video_topic, ok = lat.sample_topic(z, t, r_topic)
    video = np.where(from_popularity | ~ok, lat.sample_popular(t, r_pop), video_topic)

    # A user sees a video at most once: keep the first impression of each pair.
    _, first = np.unique((user - u0).astype(np.int64) * cfg.n_videos + video, return_index=True)
    keep = np.sort(first)
    user, t, hour, device, video = user[keep], t[keep], hour[keep], device[keep], video[keep]
    n = user.size

    logit = truth_lib.pair_logits(lat.user_unit[user], lat.user_bias[user], lat.video_unit[video],
                                  lat.zpop[video], lat.zdur[video], device, hour, cfg.click_params())
    prob = truth_lib.sigmoid(logit)
    clicked = (rng.random(n) < prob).astype(np.int64)

    # History: this user's clicks strictly before each row, newest first.
    before = np.cumsum(clicked) - clicked                  # clicks in the block before each row
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    group_start = np.repeat(before[starts], np.diff(np.r_[starts, n]))
    n_prev = before - group_start                          # the user's own earlier clicks
    clicked_videos = video[clicked == 1]
    L = cfg.history_length
    hist_len = np.minimum(n_prev, L)
    idx = (before - 1)[:, None] - np.arange(L)[None, :]
    valid = np.arange(L)[None, :] < hist_len[:, None]
    history = np.where(valid, clicked_videos[np.clip(idx, 0, max(clicked_videos.size - 1, 0))]
                       if clicked_videos.size else -1, -1).astype(np.int32)

    perm = rng.permutation(n)
    return {"user": user[perm], "video": video[perm], "hour": hour[perm], "device": device[perm],
            "clicked": clicked[perm], "timestamp": t[perm], "prob": prob[perm].astype(np.float32),
            "history": history[perm], "history_len": hist_len[perm]}
