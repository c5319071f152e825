"""Daily retraining on the built-in daily service: full retrain against warm start, day by day.

The data is `BuiltinConfig.daily()` (`tfrec-video generate-data --daily`): a service whose
videos are published and whose users arrive every day, with popularity that drifts
(`tfrec_video.datasets.builtin`, "Daily service"). For each benchmark day `d` after the
first, two regimes train a model on the data before `d` and are scored on day `d`:

* **full retrain**: `fit_model` from scratch on every day so far (`0 .. d-1`);
* **warm start**: `fit_model(..., warm_start_from=yesterday's model)` on day `d-1` alone
  (`tfrec_video.training.warm_start`), with the default `WarmStartConfig` (the ranking head
  at half the learning rate; `--ranking-learning-rate` changes it).

On the first benchmark day both start from the same model trained from scratch on the days
before it. One day's test clicks are few (about 900) and a full retrain's own scores move
by up to 0.019 AUC and 14% Recall@100 from one seed to the next, so both regimes run with
`--seeds` seeds (5 by default) and the figures are the means; the table also gives the
full retrain's spread over seeds. Each day's scores are the model's on day `d`'s impressions (`evaluate`, the
impression protocol): AUC, Recall@100 over the whole catalog and Recall@100 on the clicks of
videos no training day had shown (cold start: the videos published that day or unseen
before); and each regime's training seconds (`fit_model`, adapt and weight copy included).

Prints a table and one JSON line, and writes `incremental.png` (the three scores and the
training seconds against the day). `ratio` is the warm start's training seconds over the
full retrain's on the last day (target <= 1/3); `quality` holds, per day, the AUC
difference and the relative Recall@100 difference (issue 19: within 0.01 and 5%).

About 17 minutes on 2 cores (5 seeds); `--quick` runs a 5-day service of 600 users and videos, one seed.

    python benchmarks/incremental.py [--quick] [--seeds 5] [--epochs 3] [--ranking-learning-rate 0.5]
                                     [--out benchmarks/incremental.png]
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table
from tfrec_video.datasets import BuiltinConfig, ensure_builtin
from tfrec_video.datasets.builtin import benchmark_days, day_files
from tfrec_video.evaluation import evaluate
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.saving import save_model
from tfrec_video.training.fit import TrainingConfig, click_counts, fit_model
from tfrec_video.training.warm_start import WarmStartConfig


def _score(model, catalog, schema, train_files, test_files):
    """AUC, Recall@100 and cold-start Recall@100 of `model` on `test_files` (cold: unseen in `train_files`)."""
    counts = click_counts(read_table(train_files, schema, validate=False))
    shown = set()
    for batch in read_table(train_files, schema, validate=False).batch(65536).as_numpy_iterator():
        shown.update(v.decode() for v in np.unique(batch["video_id"]))
    test = impressions_dataset(test_files, catalog, schema, batch_size=4096).unbatch()
    report = evaluate(model, catalog, test, sorted(shown), counts, served_k=None, ks=(100,))
    return {"auc": report["ranking"]["auc"], "recall@100": report["retrieval"]["recall@100"],
            "cold_recall@100": report["cold_start"]["recall@100"]}


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    days = [r["day"] for r in rows]  # `_mean`'s rows
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, key, title in zip(axes, ("auc", "recall@100", "cold_recall@100", "train_s"),
                              ("next-day AUC", "next-day Recall@100", "cold-start Recall@100", "training seconds")):
        for regime, style in (("full", "o-"), ("warm", "s--")):
            ax.plot(days, [r[regime][key] for r in rows], style, label=f"{regime} {'retrain' if regime == 'full' else 'start'}")
        ax.set_title(title)
        ax.set_xlabel("day")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _chain(catalog, schema, directory, days, seed, epochs, work, warm_start):
    """Both regimes over `days` with one seed: a row per day (see module docstring)."""
    config, training = ModelConfig(seed=seed), TrainingConfig(epochs=epochs, batch_size=1024, seed=seed)
    rows, previous = [], None
    for d in days:
        seen, test = day_files(directory, 0, d - 1), day_files(directory, d)
        row = {"day": d, "seed": seed}
        start = time.time()
        full, _ = fit_model(catalog, seen, schema, config, training, verbose=0)
        row["full"] = {"train_s": round(time.time() - start, 1), **_score(full, catalog, schema, seen, test)}
        if previous is None:
            warm, row["warm"] = full, dict(row["full"])
        else:
            start = time.time()
            warm, history = fit_model(catalog, day_files(directory, d - 1), schema, config, training, verbose=0,
                                      warm_start_from=previous, warm_start=warm_start)
            row["warm"] = {"train_s": round(time.time() - start, 1), **_score(warm, catalog, schema, seen, test)}
            row["merged"] = {k: history.warm_start[k] for k in ("users", "videos", "new_videos_from_content")}
        previous = save_model(warm, os.path.join(work, f"warm_{seed}_{d:03d}"))
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _mean(runs):
    """Per day and regime, the mean over seeds of each figure, and the full retrain's min-max spread."""
    rows = []
    for same_day in zip(*runs):
        row = {"day": same_day[0]["day"]}
        for regime in ("full", "warm"):
            row[regime] = {k: float(np.mean([r[regime][k] for r in same_day])) for k in same_day[0][regime]}
        row["full_spread"] = {k: float(np.ptp([r["full"][k] for r in same_day])) for k in same_day[0]["full"]}
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 5-day service of 600 users and videos, one seed")
    parser.add_argument("--epochs", type=int, default=3)
    # Five: the full retrain's own Recall@100 spreads by 6-14 % over seeds, so a mean of three cannot tell a 5 %
    # gap from noise (three seeds put day 10 at -5.0 %, five at -2.2 %).
    parser.add_argument("--seeds", type=int, default=5, help="seeds each regime runs with; the figures are means")
    parser.add_argument("--ranking-learning-rate", type=float, default=WarmStartConfig.ranking_learning_rate,
                        help="the warm start's ranking-head rate, a fraction of the learning rate "
                             "(WarmStartConfig.ranking_learning_rate)")
    parser.add_argument("--data-dir", default=None, help="the built-in dataset cache directory")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "incremental.png"))
    args = parser.parse_args()
    dataset = (BuiltinConfig.daily(days=5, window_days=8, n_users=600, n_videos=600) if args.quick
               else BuiltinConfig.daily())
    seeds = range(1 if args.quick else args.seeds)
    directory = ensure_builtin(args.data_dir, dataset, progress=False)
    catalog = load_catalog(builtin_splits(directory)["catalog"], catalog_schema(dataset.image_dim, dataset.audio_dim))
    schema = impressions_schema(dataset.history_length, day=True)
    days = benchmark_days(directory)
    work = tempfile.mkdtemp(prefix="incremental-")
    warm_start = WarmStartConfig(ranking_learning_rate=args.ranking_learning_rate)
    rows = _mean([_chain(catalog, schema, directory, days, seed, args.epochs, work, warm_start) for seed in seeds])

    print(f"\nmeans over {len(seeds)} seed(s); spread: the full retrain's max - min over seeds")
    print(f"{'day':>4} | {'AUC full':>8} {'warm':>6} {'spread':>6} | {'R@100 full':>10} {'warm':>6} {'spread':>6} | "
          f"{'cold R@100 full':>15} {'warm':>6} | {'train s full':>12} {'warm':>6}")
    for r in rows:
        f, w, sp = r["full"], r["warm"], r["full_spread"]
        print(f"{r['day']:>4} | {f['auc']:8.4f} {w['auc']:6.4f} {sp['auc']:6.4f} | {f['recall@100']:10.4f} "
              f"{w['recall@100']:6.4f} {sp['recall@100']:6.4f} | {f['cold_recall@100']:15.4f} "
              f"{w['cold_recall@100']:6.4f} | {f['train_s']:12.1f} {w['train_s']:6.1f}")
    _plot(rows, args.out)
    warm_days = rows[1:]
    # Unrounded: the targets are judged on the figures themselves (-0.05004 misses 5%, though it prints -0.05).
    diffs = [(r["day"], r["warm"]["auc"] - r["full"]["auc"],
              r["warm"]["recall@100"] / r["full"]["recall@100"] - 1 if r["full"]["recall@100"] else None)
             for r in warm_days]
    quality = [{"day": d, "auc_diff": round(a, 4), "recall_rel_diff": None if rr is None else round(rr, 5)}
               for d, a, rr in diffs]
    last = rows[-1]
    print(json.dumps({
        "ratio": round(last["warm"]["train_s"] / last["full"]["train_s"], 3), "target": round(1 / 3, 3),
        "direction": "lower", "quality": quality,
        "auc_within_0.01": all(a >= -0.01 for _, a, _ in diffs),
        "recall_within_5%": all(rr is not None and rr >= -0.05 for _, _, rr in diffs),
        "warm_days": len(warm_days), "seeds": len(seeds), "epochs": args.epochs, "warm_start": warm_start.to_dict(),
        "dataset": "quick" if args.quick else "daily", "plot": args.out, "rows": rows}))


if __name__ == "__main__":
    main()
