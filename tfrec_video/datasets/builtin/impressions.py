"""The impressions of the built-in dataset: `_impression_block`.

Who is shown what, when and on which device; whether they click (drawn from
the true click probability of `truth`); and their click history. With `days`
(the daily service) a user's impressions fall on their active days only, the
topic a user is shown drifts with the day, and each row gets its `day`;
`_day_counts` tallies what the manifest reports about each day.
"""

from typing import Dict

import numpy as np

from tfrec_video.datasets.builtin import truth as truth_lib
from tfrec_video.datasets.builtin.config import (_DAY, _PART_IMPRESSIONS, _PART_WATCH, _USER_BLOCK, BuiltinConfig,
                                                 _rng)
from tfrec_video.datasets.builtin.latents import _Latents
from tfrec_video.datasets.builtin.topics import DEVICES


def _impression_block(cfg: BuiltinConfig, lat: _Latents, block: int) -> Dict[str, np.ndarray]:
    """All impressions of users `[block * _USER_BLOCK, ...)`, as numpy columns.

    Returns a dict with `user` / `video` (indices), `hour`, `device` (index),
    `clicked`, `timestamp`, `prob` (true click probability), `watch_fraction` /
    `watch_seconds` (drawn for clicks, 0 otherwise), `watch_mean` (a click's true
    expected watch fraction), `history`
    ([n, history_length] video indices, -1 padded), `history_len` and, with
    `days`, `day` (the day of the window); rows are shuffled within the block.
    """
    rng = _rng(cfg.seed, _PART_IMPRESSIONS, block)
    u0 = block * _USER_BLOCK
    u1 = min(u0 + _USER_BLOCK, cfg.n_users)
    users = np.arange(u0, u1)
    W = cfg.window_days
    rate = cfg.impressions_per_user * lat.activity[u0:u1]
    if cfg.days:
        # A user who arrives later has fewer days, not a denser schedule: the same rate per active day.
        rate = rate * (W - lat.first_day[u0:u1]) / W
    counts = np.maximum(1, rng.poisson(rate))
    user = np.repeat(users, counts)
    n = user.size

    # When: a random day of the window (of the user's active days, with days), an hour near the
    # user's peak hour.
    if cfg.days:
        first = lat.first_day[user]
        day = first + rng.integers(0, W - first)
    else:
        day = rng.integers(0, W, n)
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
    prefs = lat.user_theta[user].astype(np.float64)
    if cfg.days:
        prefs = prefs * lat.topic_multiplier[lat.day_of(t)]   # the day's topic fashion
    cum = np.cumsum(prefs, axis=1)
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

    # Watch time of a click: drawn from its own stream (block 0 is the videos' quality), one draw a row, so
    # nothing above changes and a row's draw does not depend on the others' clicks.
    wrng = _rng(cfg.seed, _PART_WATCH, 1 + block)
    watch_mean = truth_lib.sigmoid(truth_lib.watch_logits(lat.user_unit[user], lat.video_unit[video],
                                                          lat.quality[video], lat.zdur[video], cfg.watch_params()))
    c = cfg.watch_concentration
    drawn = wrng.beta(np.maximum(watch_mean * c, 1e-3), np.maximum((1.0 - watch_mean) * c, 1e-3))
    watch_fraction = np.where(clicked == 1, drawn, 0.0).astype(np.float32)

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
    out = {"user": user[perm], "video": video[perm], "hour": hour[perm], "device": device[perm],
           "clicked": clicked[perm], "timestamp": t[perm], "prob": prob[perm].astype(np.float32),
           "history": history[perm], "history_len": hist_len[perm], "watch_fraction": watch_fraction[perm],
           "watch_seconds": (watch_fraction * lat.duration[video]).astype(np.float32)[perm],
           "watch_mean": watch_mean[perm].astype(np.float32)}
    if cfg.days:
        out["day"] = lat.day_of(out["timestamp"])
    return out


def _day_counts(cfg: BuiltinConfig, lat: _Latents, rows: Dict[str, np.ndarray], block: int) -> Dict[str, np.ndarray]:
    """What block `block`'s rows (`_impression_block`, with days) add to each day's statistics.

    Returns [window_days] int64 counts: `impressions`, `clicks`; those of videos
    published that day (`same_day_video_impressions`) or that day or the day
    before (`fresh_video_impressions`, `fresh_video_clicks`: cold or nearly
    cold for a model trained up to the day before); `new_users` (users whose
    first impression is that day: a block holds all of a user's rows) and
    their impressions that day (`new_user_impressions`).
    """
    W = cfg.window_days
    day, video, clicked = rows["day"], rows["video"], rows["clicked"]
    age = day - (lat.publish_time[video] - cfg.start_timestamp) // _DAY    # days since publication
    user = rows["user"] - block * _USER_BLOCK
    first = np.full(_USER_BLOCK, W, dtype=np.int64)      # each user's first day with an impression
    np.minimum.at(first, user, day)
    new_user = day == first[user]

    def per_day(mask):
        return np.bincount(day[mask], minlength=W).astype(np.int64)

    return {"impressions": per_day(slice(None)), "clicks": per_day(clicked == 1),
            "same_day_video_impressions": per_day(age == 0), "fresh_video_impressions": per_day(age <= 1),
            "fresh_video_clicks": per_day((age <= 1) & (clicked == 1)),
            "new_users": np.bincount(first[first < W], minlength=W).astype(np.int64),
            "new_user_impressions": per_day(new_user)}
