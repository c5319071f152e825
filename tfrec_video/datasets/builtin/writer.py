"""Writing the built-in dataset: shard writers, raw media, the truth and the manifest.

`_generate_into(root, cfg, fmt, progress)` writes one complete dataset folder
(catalog, train/validation/test impressions, with `days` also one impressions
table a day under `days/`, media, `truth/` and `dataset.json` last);
`generate` in `api` wraps it with the temporary-folder-then-rename dance.
"""

import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.datasets.builtin import media as media_lib
from tfrec_video.datasets.builtin import truth as truth_lib
from tfrec_video.datasets.builtin.catalog import _catalog_blocks, _projection
from tfrec_video.datasets.builtin.config import (
    DATASET_VERSION,
    _DAY,
    FORMATS,
    _PART_MEDIA,
    _USER_BLOCK,
    BuiltinConfig,
    _rng,
)
from tfrec_video.datasets.builtin.impressions import _day_counts, _impression_block
from tfrec_video.datasets.builtin.latents import _DAILY_BACKLOG_SHARE, _DAILY_EVERGREEN, _Latents
from tfrec_video.datasets.builtin.topics import DEVICES, LANGUAGES
from tfrec_video.errors import ConfigError


class _ShardWriter:
    """Buffers column chunks and writes `rows_per_shard`-row files as they fill.

    Extra arrays (`aux`: the true click probability and the label) are written
    next to each shard as `.npy` files under `truth/`, aligned row by row.
    """

    def __init__(self, root: str, subdir: str, ext: str, schema, rows_per_shard: int, write_table,
                 aux_dirs: Optional[Dict[str, str]] = None, finish=None):
        self.root, self.subdir, self.ext, self.schema = root, subdir, ext, schema
        # finish(table) -> table: last conversions just before writing (keeps the buffer compact).
        self.finish = finish
        self.rows_per_shard = rows_per_shard
        self.write_table = write_table
        self.aux_dirs = aux_dirs or {}
        self.chunks: List[Dict[str, np.ndarray]] = []
        self.n_buffered = 0
        self.files: List[str] = []
        self.aux_files: Dict[str, List[str]] = {k: [] for k in self.aux_dirs}
        self.rows = 0

    def add(self, columns: Dict[str, np.ndarray]):
        n = len(next(iter(columns.values())))
        if n == 0:
            return
        self.chunks.append(columns)
        self.n_buffered += n
        while self.n_buffered >= self.rows_per_shard:
            self._flush(self.rows_per_shard)

    def close(self):
        if self.n_buffered:
            self._flush(self.n_buffered)

    def _flush(self, n: int):
        merged = {k: np.concatenate([c[k] for c in self.chunks]) for k in self.chunks[0]}
        head = {k: v[:n] for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        self.n_buffered -= n
        self.chunks = [rest] if self.n_buffered else []
        name = f"part-{len(self.files):05d}"
        rel = f"{self.subdir}/{name}.{self.ext}"
        table = {k: v for k, v in head.items() if k not in self.aux_dirs}
        if self.finish is not None:
            table = self.finish(table)
        self.write_table(table, os.path.join(self.root, rel), self.schema)
        self.files.append(rel)
        for key, aux_dir in self.aux_dirs.items():
            aux_rel = f"{aux_dir}/{name}.npy"
            _save_npy(os.path.join(self.root, aux_rel), head[key])
            self.aux_files[key].append(aux_rel)
        self.rows += n


def _save_npy(path: str, array: np.ndarray):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def _progress(progress: bool, total: int, desc: str, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not progress, leave=False, dynamic_ncols=True)


def _write_media(root: str, cfg: BuiltinConfig, lat: _Latents) -> Tuple[List[str], int]:
    """Writes thumbnails, WAV clips and media.csv; returns (files, count)."""
    import csv
    import io

    if cfg.n_media_videos == 0:
        return [], 0
    chosen = np.sort(_rng(cfg.seed, _PART_MEDIA).choice(cfg.n_videos, size=cfg.n_media_videos, replace=False))
    media_dir = os.path.join(root, "media")
    os.makedirs(os.path.join(media_dir, "thumbnails"), exist_ok=True)
    os.makedirs(os.path.join(media_dir, "audio"), exist_ok=True)
    rows, files = [], []
    for k, v in enumerate(chosen):
        rng = _rng(cfg.seed, _PART_MEDIA, 1 + int(v))
        vid = lat.video_ids[v]
        theta = lat.video_theta[v].astype(np.float64)
        fmt = "jpg" if k % 3 == 2 else "png"   # mostly PNG, some JPEG: readers must handle both
        thumb_rel = f"thumbnails/{vid}.{fmt}"
        audio_rel = f"audio/{vid}.wav"
        with open(os.path.join(media_dir, thumb_rel), "wb") as f:
            f.write(media_lib.encode_image(media_lib.render_thumbnail(theta, rng, cfg.media_pixel_noise_std), fmt))
        with open(os.path.join(media_dir, audio_rel), "wb") as f:
            f.write(media_lib.encode_wav(media_lib.render_audio(theta, rng, cfg.media_audio_noise_std)))
        rows.append((vid, thumb_rel, audio_rel))
        files += ["media/" + thumb_rel, "media/" + audio_rel]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video_id", "thumbnail_path", "audio_path"])
    writer.writerows(rows)
    with open(os.path.join(media_dir, "media.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
    return files, len(rows)


def _write_truth_latents(root: str, cfg: BuiltinConfig, lat: _Latents, w_img, w_aud) -> Tuple[List[str], List[str]]:
    videos = {
        "video_id": lat.video_ids.astype(str),
        "theta": lat.video_theta,
        "theta_unit": lat.video_unit,
        "dominant_topic": lat.dominant,
        "popularity": lat.popularity,
        "zpop": lat.zpop,
        "zdur": lat.zdur,
        "quality": lat.quality,
        "duration_s": lat.duration,
        "publish_time": lat.publish_time,
        "is_cold_start": lat.is_cold,
        "language": lat.language,
        "category_index": lat.category.astype(np.int64),
    }
    users = {
        "user_id": lat.user_ids.astype(str),
        "theta": lat.user_theta,
        "theta_unit": lat.user_unit,
        "user_bias": lat.user_bias,
        "activity": lat.activity.astype(np.float32),
        "preferred_device": lat.pref_device,
        "peak_hour": lat.peak_hour,
    }
    if cfg.days:
        users["first_active_day"] = lat.first_day
    tdir = os.path.join(root, truth_lib.TRUTH_DIR)
    for name, arr in videos.items():
        _save_npy(os.path.join(tdir, "videos", name + ".npy"), arr)
    for name, arr in users.items():
        _save_npy(os.path.join(tdir, "users", name + ".npy"), arr)
    _save_npy(os.path.join(tdir, "projections", "W_image.npy"), w_img)
    _save_npy(os.path.join(tdir, "projections", "W_audio.npy"), w_aud)
    return list(videos), list(users)


def _time_section(cfg: BuiltinConfig) -> dict:
    """The `time` entry of the manifest and truth.json: window start and end, the
    first second of the test period (`split`) and, when there is a validation
    split, of the validation period (`validation`)."""
    time = {"start": cfg.start_timestamp, "split": cfg.split_timestamp, "end": cfg.end_timestamp}
    if cfg.validation_fraction > 0:
        time["validation"] = cfg.validation_timestamp
    return time


def _day_dir(cfg: BuiltinConfig, day: int) -> str:
    """The folder of day `day`'s impressions table, relative to the dataset (`days/003`)."""
    return f"days/{day:0{max(3, len(str(cfg.window_days - 1)))}d}"


def _days_sections(root: str, cfg: BuiltinConfig, lat: _Latents, day_writers, counts, video_first_day
                   ) -> Tuple[dict, dict]:
    """The `days` entries of the manifest and of truth.json (the daily service only).

    The manifest's: the window, the benchmark days, and per day (lists
    indexed by day) the counts of `_day_counts`, `videos_published`,
    `users_arriving`, `videos_first_shown` (shown that day and never before)
    and `oracle_auc` (the true click probability's AUC on the day's
    impressions; None when the day has one class only). The truth's: the
    files of each day's true click probabilities and labels, and the daily
    schedule's parameters, with `topic_multiplier` ([window_days, K], saved
    under truth/days/).
    """
    W, tdir = cfg.window_days, truth_lib.TRUTH_DIR
    oracle = []
    for w in day_writers:
        prob, clicked = ([np.load(os.path.join(root, f), allow_pickle=False) for f in w.aux_files[key]]
                         for key in ("_prob", "_clicked"))
        value = truth_lib.auc(np.concatenate(clicked), np.concatenate(prob)) if prob else float("nan")
        oracle.append(None if np.isnan(value) else value)
    pub_day = (lat.publish_time - cfg.start_timestamp) // _DAY
    manifest = {
        "window_days": W, "days": cfg.days, "benchmark_days": list(cfg.benchmark_days),
        "day_seconds": _DAY, "start": cfg.start_timestamp,
        "per_day": {
            **{k: v.tolist() for k, v in counts.items()},
            "videos_published": np.bincount(pub_day[pub_day >= 0], minlength=W).tolist(),
            "users_arriving": np.bincount(lat.first_day, minlength=W).tolist(),
            "videos_first_shown": np.bincount(video_first_day[video_first_day < W], minlength=W).tolist(),
            "oracle_auc": oracle,
        },
    }
    multiplier = f"{tdir}/days/topic_multiplier.npy"
    _save_npy(os.path.join(root, multiplier), lat.topic_multiplier)
    truth = {
        "click_prob_files": [w.aux_files["_prob"] for w in day_writers],
        "clicked_files": [w.aux_files["_clicked"] for w in day_writers],
        "topic_multiplier": multiplier, "topic_drift": cfg.topic_drift,
        "freshness_half_life_days": cfg.freshness_half_life_days, "evergreen_weight": _DAILY_EVERGREEN,
        "backlog_share": _DAILY_BACKLOG_SHARE, "new_user_fraction": cfg.new_user_fraction,
    }
    return manifest, truth


def _generate_into(root: str, cfg: BuiltinConfig, fmt: str, progress: bool) -> dict:
    from tfrec_video.data import write_table

    ext = FORMATS[fmt]
    cat_schema = catalog_schema(cfg.image_dim, cfg.audio_dim)
    imp_schema = impressions_schema(cfg.history_length)
    # The day tables' schema: the splits have no `day` column, so that they stay the impressions of
    # every other dataset (readable with the default schema by every tool).
    day_schema = impressions_schema(cfg.history_length, day=True)
    os.makedirs(root, exist_ok=True)

    lat = _Latents(cfg)
    w_img, w_aud = _projection(cfg)

    # Catalog.
    catalog = _ShardWriter(root, "catalog", ext, cat_schema, cfg.catalog_rows_per_shard, write_table)
    with _progress(progress, cfg.n_videos, "built-in catalog", "video") as bar:
        for block in _catalog_blocks(cfg, lat, w_img, w_aud):
            catalog.add(block)
            bar.update(len(block["video_id"]))
        catalog.close()

    # Impressions, 1024 users at a time. The time split only labels rows: what
    # is drawn never depends on it, so a validation split moves rows from train
    # to validation and leaves the test split byte-identical.
    split_t, val_t = cfg.split_timestamp, cfg.validation_timestamp
    splits = ("train", "validation", "test") if cfg.validation_fraction > 0 else ("train", "test")
    vid_str = lat.video_ids.astype(str)          # fixed-width unicode: fast fancy indexing
    uid_str = lat.user_ids.astype(str)
    devices = np.array(DEVICES)
    tdir = truth_lib.TRUTH_DIR

    def finish(table):
        # History is buffered as video indices (compact) and written as ragged
        # lists of ids: the fastest input of write_table for list columns.
        hist, lens = table.pop("history"), table.pop("_history_len")
        ids = vid_str[np.maximum(hist, 0)]
        table["history"] = [row[:k] for row, k in zip(ids, lens.tolist())]
        return table

    # Validation files are as much smaller as the split is: it then has about as many files as the
    # training split, which a multi-worker run splits between its workers too.
    rows_per_shard = {split: cfg.impressions_rows_per_shard for split in splits}
    rows_per_shard["validation"] = max(1, round(cfg.impressions_rows_per_shard * cfg.validation_fraction))

    def writer(subdir, rows_per_file, schema=imp_schema):
        return _ShardWriter(root, subdir, ext, schema, rows_per_file, write_table,
                            aux_dirs={"_prob": f"{tdir}/click_prob/{subdir}", "_clicked": f"{tdir}/clicked/{subdir}",
                                      "_watch_mean": f"{tdir}/watch_mean/{subdir}"},
                            finish=finish)

    writers = {split: writer(split, rows_per_shard[split]) for split in splits}
    # With days, every row is also written to its day's table, with its day (and its truth next to it).
    W = cfg.window_days
    day_writers = ([writer(_day_dir(cfg, d), cfg.impressions_rows_per_shard, day_schema) for d in range(W)]
                   if cfg.days else [])
    day_counts, video_first_day = {}, np.full(cfg.n_videos, W, dtype=np.int64)
    clicks = {split: 0 for split in splits}
    videos_seen = {split: np.zeros(cfg.n_videos, bool) for split in splits}
    n_blocks = (cfg.n_users + _USER_BLOCK - 1) // _USER_BLOCK
    with _progress(progress, cfg.n_users, "built-in impressions", "user") as bar:
        for b in range(n_blocks):
            rows = _impression_block(cfg, lat, b)
            t = rows["timestamp"]
            masks = {"train": t < val_t, "validation": (t >= val_t) & (t < split_t), "test": t >= split_t}
            columns = {
                "user_id": uid_str[rows["user"]],
                "history": rows["history"],
                "_history_len": rows["history_len"],
                "hour": rows["hour"],
                "device": devices[rows["device"]],
                "video_id": vid_str[rows["video"]],
                "clicked": rows["clicked"],
                "timestamp": rows["timestamp"],
                "watch_fraction": rows["watch_fraction"],
                "watch_seconds": rows["watch_seconds"],
                "_prob": rows["prob"],
                "_watch_mean": rows["watch_mean"],
                "_clicked": rows["clicked"].astype(np.int8),
            }
            if cfg.days:
                for key, value in _day_counts(cfg, lat, rows, b).items():
                    day_counts[key] = day_counts.get(key, 0) + value
                np.minimum.at(video_first_day, rows["video"], rows["day"])
                for d in np.unique(rows["day"]):
                    on_day = rows["day"] == d
                    day_writers[d].add({**{k: v[on_day] for k, v in columns.items()}, "day": rows["day"][on_day]})
            for split in splits:
                mask = masks[split]
                clicks[split] += int(rows["clicked"][mask].sum())
                videos_seen[split][rows["video"][mask]] = True
                writers[split].add({k: v[mask] for k, v in columns.items()})
            bar.update(min(_USER_BLOCK, cfg.n_users - b * _USER_BLOCK))
        for w in list(writers.values()) + day_writers:
            w.close()
    for split, w in writers.items():
        if w.rows == 0:
            raise ConfigError(
                f"BuiltinConfig produced no {split} impressions; raise n_users or impressions_per_user "
                f"(or move test_fraction and validation_fraction away from 0/1; validation_fraction=0 "
                f"writes no validation split)."
            )

    media_files, n_media = _write_media(root, cfg, lat)
    video_arrays, user_arrays = _write_truth_latents(root, cfg, lat, w_img, w_aud)

    # Oracle AUC on the test split (labels and probabilities are in truth/).
    aux = writers["test"].aux_files
    test_prob = np.concatenate([np.load(os.path.join(root, f), allow_pickle=False) for f in aux["_prob"]])
    test_clicked = np.concatenate([np.load(os.path.join(root, f), allow_pickle=False) for f in aux["_clicked"]])
    oracle = truth_lib.auc(test_clicked, test_prob)
    del test_prob, test_clicked

    truth_json = {
        "version": DATASET_VERSION,
        "formula": ("logit = click_bias + click_scale * cos(theta_u, theta_v) + user_bias_u "
                    "+ popularity_click_weight * zpop_v + context_effect * (device_duration_coef[device] * zdur_v "
                    "+ hour_coef[hour]); p = sigmoid(logit); zdur_v = (log(duration_s) - duration_log_center) "
                    "/ duration_log_scale; image_embedding = (W_image @ theta_unit_v + image_noise_std * N(0, I)) "
                    "/ sqrt(1 + image_noise_std^2), audio likewise"),
        "click": cfg.click_params(),
        "watch_formula": ("watch_mean = sigmoid(watch_bias + watch_affinity_scale * cos(theta_u, theta_v) "
                          "+ watch_quality_scale * quality_v - watch_duration_scale * zdur_v); a click's "
                          "watch_fraction ~ Beta(watch_mean * c, (1 - watch_mean) * c), c = watch_concentration; "
                          "0 without a click; watch_seconds = watch_fraction * duration_s"),
        "watch": {**cfg.watch_params(), "watch_concentration": float(cfg.watch_concentration)},
        "device_duration_coef": dict(truth_lib.DEVICE_DURATION_COEF),
        "hour_coef": truth_lib.HOUR_COEF.tolist(),
        "duration_log_center": truth_lib.DURATION_LOG_CENTER,
        "duration_log_scale": truth_lib.DURATION_LOG_SCALE,
        "devices": list(DEVICES),
        "topics": [t.name for t in cfg.topics],
        "topic_categories": [t.category for t in cfg.topics],
        "categories": list(cfg.categories),
        "languages": list(LANGUAGES),
        "popularity_sigma": cfg.popularity_sigma,
        "popularity_exponent": cfg.popularity_exponent,
        "image_noise_std": cfg.image_noise_std,
        "audio_noise_std": cfg.audio_noise_std,
        "time": _time_section(cfg),
        "video_arrays": video_arrays,
        "user_arrays": user_arrays,
        "projections": {"image": f"{tdir}/projections/W_image.npy", "audio": f"{tdir}/projections/W_audio.npy"},
        "click_prob_files": {s: w.aux_files["_prob"] for s, w in writers.items()},
        "clicked_files": {s: w.aux_files["_clicked"] for s, w in writers.items()},
        "watch_mean_files": {s: w.aux_files["_watch_mean"] for s, w in writers.items()},
    }
    days_manifest = None
    if cfg.days:
        # Only with days, like the language shift below: every other config's truth stays byte-identical.
        days_manifest, truth_json["days"] = _days_sections(root, cfg, lat, day_writers, day_counts, video_first_day)
    if lat.topic_language is not None:
        # Only with a shift, so that the truth of every other config stays byte-identical.
        truth_json["language_shift"] = {
            "share": float(cfg.language_shift),
            "topic_training_language": [LANGUAGES[int(k)] for k in lat.topic_language],
        }
    _write_json(os.path.join(root, tdir, "truth.json"), truth_json)

    n_rows = {split: w.rows for split, w in writers.items()}
    cold = lat.is_cold
    manifest = {
        "name": "tfrec_video built-in dataset",
        "version": DATASET_VERSION,
        "format": fmt,
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "schema": {
            "image_dim": cfg.image_dim,
            "audio_dim": cfg.audio_dim,
            "history_length": cfg.history_length,
            "catalog": cat_schema.to_dict(),
            "impressions": imp_schema.to_dict(),
        },
        "counts": {
            "videos": cfg.n_videos,
            "cold_start_videos": int(cold.sum()),
            "cold_start_videos_in_test": int((cold & videos_seen["test"]).sum()),
            "users": cfg.n_users,
            **{f"{split}_impressions": n_rows[split] for split in splits},
            **{f"{split}_clicks": clicks[split] for split in splits},
            "media_videos": n_media,
            "topics": cfg.n_topics,
            "categories": len(cfg.categories),
        },
        "ctr": {
            **{split: clicks[split] / n_rows[split] for split in splits},
            "overall": sum(clicks.values()) / sum(n_rows.values()),
        },
        "oracle": {"test_auc": oracle},
        "time": _time_section(cfg),
        "files": {
            "catalog": catalog.files,
            **{split: w.files for split, w in writers.items()},
            "media_csv": "media/media.csv" if n_media else None,
            "media": media_files,
            "truth": tdir,
        },
    }
    if days_manifest is not None:
        manifest["days"] = days_manifest
        manifest["schema"]["days"] = day_schema.to_dict()
        manifest["files"]["days"] = [w.files for w in day_writers]   # a list of files a day
    # Last: its presence marks the dataset complete.
    _write_json(os.path.join(root, "dataset.json"), manifest)
    return manifest
