"""`tfrec-video generate-data`: write the built-in synthetic dataset to a directory."""

import argparse
import os
import sys
import time
from typing import Optional

from tfrec_video.cli.run_dir import check_output_dir
from tfrec_video.datasets import FORMATS, BuiltinConfig, generate
from tfrec_video.errors import ConfigError


def add_cli(subparsers) -> argparse.ArgumentParser:
    """Registers the `generate-data` sub-command on an argparse `subparsers` object.

    The sub-command's handler is stored as the `func` default: call
    `args.func(args)` after parsing; it returns an exit status.

    Example:

    >>> parser = argparse.ArgumentParser(prog="tfrec-video")
    >>> add_cli(parser.add_subparsers(dest="command")) is not None
    True
    >>> args = parser.parse_args(["generate-data", "--out", "/tmp/d", "--tiny"])
    >>> args.tiny, args.sparse, args.format, args.days
    (True, False, 'parquet', None)
    """
    p = subparsers.add_parser(
        "generate-data",
        help="generate the built-in synthetic dataset (planted truth)",
        description="Generate the built-in synthetic video-recommendation dataset: catalog, "
                    "train/test impressions, raw media and the planted ground truth.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must be empty unless --overwrite)")
    p.add_argument("--format", choices=sorted(FORMATS), default="parquet", help="file format (default: parquet)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    p.add_argument("--n-videos", type=int, default=None, help="catalog size")
    p.add_argument("--n-users", type=int, default=None, help="number of users")
    p.add_argument("--impressions-per-user", type=float, default=None, help="mean impressions per user")
    p.add_argument("--language-shift", type=float, default=None, metavar="SHARE",
                   help="title languages shift with time (BuiltinConfig.language_shift): SHARE, in [0.5, 1], of a "
                        "topic's training-period titles are in its training language (English or Chinese) and "
                        "of its cold videos' titles in the other one (default: off)")
    p.add_argument("--days", type=int, default=None, metavar="N",
                   help="the daily service (BuiltinConfig.days): videos published and users arriving every day, "
                        "drifting exposure, a day column and one impressions table a day under days/; the last N "
                        "days of the window are the benchmark days (default: off)")
    p.add_argument("--tiny", action="store_true", help="the tiny test config (150 videos, 120 users)")
    p.add_argument("--sparse", action="store_true",
                   help="the sparse regime (BuiltinConfig.sparse(): 24,000 users with a median of 6 clicks, titles "
                        "only, 30%% of the videos cold)")
    p.add_argument("--daily", action="store_true",
                   help="the daily-retraining benchmark (BuiltinConfig.daily(): 12 days, the last 6 the benchmark "
                        "days, 3000 videos and users)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_generate_cli)
    return p


def run_generate_cli(args) -> int:
    """Handler of `tfrec-video generate-data`; prints a summary and returns 0."""
    overrides = {k: v for k, v in (("seed", args.seed), ("n_videos", args.n_videos), ("n_users", args.n_users),
                                    ("impressions_per_user", args.impressions_per_user),
                                    ("language_shift", args.language_shift),
                                    ("days", getattr(args, "days", None))) if v is not None}
    presets = [name for name in ("tiny", "sparse", "daily") if getattr(args, name, False)]
    try:
        if len(presets) > 1:
            named = " and ".join("--" + name for name in presets)
            raise ConfigError(f"give one of --tiny, --sparse and --daily, not {named}.")
        check_output_dir(args.out, "--out")
        make = getattr(BuiltinConfig, presets[0]) if presets else BuiltinConfig
        cfg = make(**overrides)
    except ConfigError as e:
        print(f"tfrec-video generate-data: {e}", file=sys.stderr)
        return 2
    start = time.time()
    try:
        m = generate(args.out, cfg, format=args.format, progress=not args.no_progress,
                     overwrite=getattr(args, "overwrite", False))
    except FileExistsError as e:
        print(f"tfrec-video generate-data: {e}", file=sys.stderr)
        return 2
    print(summary(m, os.path.abspath(args.out), time.time() - start))
    return 0


def summary(manifest: dict, root: str, seconds: Optional[float] = None) -> str:
    """A one-paragraph description of a generated dataset."""
    c, ctr = manifest["counts"], manifest["ctr"]
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    # Datasets without a validation split (validation_fraction=0, or older ones) have no validation keys.
    n_val = c.get("validation_impressions", 0)
    splits = ("train", "validation", "test") if n_val else ("train", "test")
    n_files = sum(len(manifest["files"].get(split, [])) for split in splits)
    media = (f" {c['media_videos']} videos have raw media (thumbnails + WAV) listed in media/media.csv."
             if c["media_videos"] else "")
    if n_val:
        counts = (f"{c['train_impressions']} train, {n_val} validation and {c['test_impressions']} test "
                  f"impressions")
        rates = f"{ctr['train']:.1%} train, {ctr['validation']:.1%} validation, {ctr['test']:.1%} test"
        dirs = "train/, validation/ and test/"
    else:
        counts = f"{c['train_impressions']} train and {c['test_impressions']} test impressions"
        rates = f"{ctr['train']:.1%} train, {ctr['test']:.1%} test"
        dirs = "train/ and test/"
    days = manifest.get("days")
    if days:
        # The daily service: what the benchmark days hold that a model trained up to the day before has not seen.
        per_day, bench = days["per_day"], days["benchmark_days"]
        n = sum(per_day["impressions"][d] for d in bench)
        fresh = sum(per_day["fresh_video_impressions"][d] for d in bench) / max(n, 1)
        new = sum(per_day["new_user_impressions"][d] for d in bench) / max(n, 1)
        media += (f" Daily service: {days['window_days']} days, one impressions table a day under days/, benchmark "
                  f"days {bench[0]}-{bench[-1]}; on those {fresh:.0%} of the impressions are of videos published "
                  f"that day or the day before and {new:.0%} are of users first seen that day.")
    return (
        f"Generated the built-in dataset ({manifest['format']}, seed {manifest['config']['seed']}) in {root}{took}: "
        f"{c['videos']} videos ({c['cold_start_videos']} cold-start, published only in the test period, "
        f"{c['cold_start_videos_in_test']} of them shown), {c['users']} users, "
        f"{counts} in {n_files} files (CTR {rates}; oracle test AUC "
        f"{manifest['oracle']['test_auc']:.3f}).{media} Catalog: catalog/, impressions: {dirs}, "
        f"ground truth for evaluation only: truth/, manifest: dataset.json."
    )
