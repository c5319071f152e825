"""What a watch head and diversity are worth on the built-in data: clicks, watch time and topics of the served list.

The built-in generator plants a watch truth next to its click truth
(`tfrec_video.datasets.builtin.truth`): a click's expected watched fraction
(`GroundTruth.watch_mean`) rises with the user's affinity to the video and its
hidden quality and falls with its length. So the true expected watch *time* of
showing video `v` to user `u` is

    click_prob(u, v, context) * watch_mean(u, v) * duration_s(v)

and every served list can be scored under the true model, not only against the
one click a test row happens to hold.

Trained on the same data, split and seed (`TrainingConfig(epochs=12)` with the
validation split, i.e. `HeadSelection`, calibration and the list blend, as
`ranking_ablation.py`'s last row):

* `click-only`: `ModelConfig()` (the package defaults);
* `watch (<gates>)`: `ModelConfig(ranking_objectives=("click", "watch"), ranking_gates=<gates>)`
  (`--gates`, default mmoe; `--all-gates` adds a row for each of mmoe, shared and ple).

For each model, on the test impressions:

* click AUC of `click_probability` against `clicked`, next to the oracle's (the true click
  probability against the same labels);
* the watch head on the clicked test rows: the AUC of `expected_watch_fraction` for the
  label `watch_fraction >= median`, the oracle's AUC (the true watch mean) on the same label,
  and the Pearson correlation of the prediction with the true watch mean.

Then the served top 10 for a sample of test users (`--users`, default 2,000 distinct
users, each with the context of its first test row: user_id, history, hour, device),
computed in-process as the export computes it: `encode_catalog` (the embeddings kept in
the parts, as the export's index), `encode_queries`, a whole-catalog matmul,
`top_k_excluding` with the user's history left out (k=100), then `serve_candidates(n=10)`.
Per list, under the TRUE model, averaged over users:

* expected clicks: the sum of the 10 true click probabilities;
* expected watch time (seconds): the sum of click_prob * watch_mean * duration_s;
* expected watched fraction: the sum of click_prob * watch_mean (videos' worth watched);
* distinct topics: the number of distinct true dominant topics among the 10;
* intra-list similarity: the mean pairwise cosine of the 10 videos' true topic vectors.

Rows of the served-list table: the click-only model; the watch model with its default
score weights (`watch_score_weight` 1: ordered by expected watch time per impression);
the watch model with score weights (1, 0) (its click term alone: what the shared experts
cost or give the click order); and a heuristic a team gets *without* a watch head: the
click-only model's candidates re-ordered by its click probability x `duration_s`. The
heuristic knows each video's length but not how much of it a user watches: in the generator
long videos are watched for a smaller fraction, and a video's hidden quality and the user's
affinity to it move the fraction too; that is what the watch head can add. But expected
watch time as defined here still grows with duration (the watched fraction falls only as
about duration ** -0.5), so serving long videos always "wins" it: one heuristic point that
buys watch time with a large loss of clicks is no verdict either way. Hence the trade-off
curves, expected clicks against watch time, of the watch model over its watch weight w
(`score_weights=(1, w)`, w in 0-4) and of the heuristic over a duration power a (click
probability x duration_s ** a, a in 0-2; and the click-only model's own served score, its
list blend, + a log duration_s, the same form as the watch model's score), the heuristic's
most watch time at no fewer expected clicks than the watch model serves, and, for each
heuristic point, the watch model's watch time at the same expected clicks (interpolated
along its curve over w). `watch_time_vs_same_form_heuristic`
is that gain against the click-only model's served score + log duration_s (a = 1): what the
watch head adds over knowing the duration alone.

Diversity: for the watch model and the click-only model, `serve_candidates(diversity=d)`
(maximal marginal relevance over the candidates' retrieval embeddings,
`tfrec_video.models.diversify`) for d = 0, 0.1, ..., 1.0: expected clicks, distinct
topics, intra-list similarity and watch time. The operating point is the d with the most
distinct topics among those that keep at least 97 % of d=0's expected clicks, refined in steps
of 0.02 between the coarse grid's operating point and the next d (so that the budget, not the
grid, decides how far d goes).

Targets (Done-when):

* the watch model's expected watch time >= +10 % over the click-only model's;
* its click AUC at most 0.005 below the click-only model's;
* diversity: +30 % distinct topics at <= 3 % fewer expected clicks.

Prints the tables, writes `objectives.png` (expected clicks against distinct topics and
against intra-list similarity, one line per swept model, a point per d; and against watch
time, the two trade-off curves) and
`objectives.json` (every number) to `--out`, and ends with one JSON line of the key
numbers. The full run trains two models of 12 epochs (about 10 minutes on 2 cores, most of it
training; `--all-gates` two more); `--quick` trains on `BuiltinConfig.tiny()` for 2 epochs, a smoke
run of about a minute whose numbers mean nothing.

    python benchmarks/objectives.py [--quick] [--gates mmoe|shared|ple] [--all-gates] [--epochs 12]
                                    [--users 2000] [--seed 0] [--data-dir DIR] [--out benchmarks]
"""

import argparse
import json
import math
import os
import time

import numpy as np

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf  # noqa: E402

from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog  # noqa: E402
from tfrec_video.data.schema import as_strings, catalog_schema, impressions_schema  # noqa: E402
from tfrec_video.datasets import BuiltinConfig, GroundTruth, ensure_builtin  # noqa: E402
from tfrec_video.evaluation.candidates import catalog_index, catalog_rows, top_k_excluding  # noqa: E402
from tfrec_video.evaluation.metrics import auc  # noqa: E402
from tfrec_video.models import ModelConfig  # noqa: E402
from tfrec_video.training import TrainingConfig, fit_model  # noqa: E402

GATES = ("mmoe", "shared", "ple")
DIVERSITY = tuple(round(0.1 * i, 1) for i in range(11))
REFINE = (0.02, 0.04, 0.06, 0.08)  # steps past the coarse operating point, toward the next coarse d
# The clicks-against-watch-time trade-off: the watch model's watch weight, the heuristic's duration power.
WATCH_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0)
DURATION_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
K, N = 100, 10
WATCH_TIME_TARGET = 0.10      # relative gain of expected watch time
AUC_COST_TARGET = 0.005       # most click AUC the watch head may cost
TOPIC_GAIN_TARGET = 0.30      # relative gain of distinct topics ...
CLICK_LOSS_BUDGET = 0.03      # ... at most this relative loss of expected clicks
CHUNK = 512                   # users per served-list batch


# -- test impressions: AUCs --------------------------------------------------------------------------------------------

def _pearson(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def test_scores(model, splits, catalog, schema, truth, query_names):
    """Click and watch metrics of `model` on the test impressions, and the test rows' query columns
    (numpy, in file order) for choosing the users."""
    forward = tf.function(lambda f: model(f, training=False))
    names = sorted(set(query_names) | {"user_id", "history", "hour", "device"})
    probs, watch, labels, fractions, columns = [], [], [], [], {name: [] for name in names}
    for batch in impressions_dataset(splits["test"], catalog, schema, batch_size=4096):
        out = forward(batch)
        probs.append(out["click_probability"].numpy().reshape(-1))
        if "expected_watch_fraction" in out:
            watch.append(out["expected_watch_fraction"].numpy().reshape(-1))
        labels.append(batch["clicked"].numpy().reshape(-1).astype(np.int64))
        fractions.append(batch["watch_fraction"].numpy().reshape(-1))
        for name in names:
            columns[name].append(batch[name].numpy())
    probs, labels, fractions = np.concatenate(probs), np.concatenate(labels), np.concatenate(fractions)
    true_p = np.asarray(truth.test_click_prob(), np.float64)
    if len(true_p) != len(labels) or not np.array_equal(np.asarray(truth.test_clicked()).astype(np.int64), labels):
        raise ValueError("the ground truth's test rows do not line up with the test impressions read")
    scores = {"click_auc": auc(labels, probs), "oracle_click_auc": auc(labels, true_p),
              "test_impressions": int(len(labels)), "test_clicks": int(labels.sum())}
    clicked = labels == 1
    true_w = np.asarray(truth.test_watch_mean(), np.float64)[clicked]
    label = (fractions[clicked] >= np.median(fractions[clicked])).astype(np.int64)
    scores["oracle_watch_auc"] = auc(label, true_w)
    if watch:
        predicted = np.concatenate(watch)[clicked]
        scores.update(watch_auc=auc(label, predicted), watch_pearson=_pearson(predicted, true_w),
                      watch_mean_predicted=float(predicted.mean()), watch_mean_true=float(true_w.mean()))
    return scores, {name: np.concatenate(values) for name, values in columns.items()}


def pick_users(columns, limit, seed):
    """Rows of the first test impression of up to `limit` distinct users (a seeded sample when there are more)."""
    _, first = np.unique(as_strings(columns["user_id"]), return_index=True)
    first = np.sort(first)
    if len(first) > limit:
        first = np.sort(np.random.default_rng(seed).choice(first, limit, replace=False))
    return first


# -- served lists ------------------------------------------------------------------------------------------------------

class Served:
    """A model's candidates for the sampled users, computed once, and the lists served from them."""

    def __init__(self, model, catalog, queries, exclude):
        self.model = model
        # As the export: the retrieval index is also the parts' `embedding`.
        self.parts = model.encode_catalog(catalog)
        embeddings = self.parts["embedding"]
        self.log_duration = tf.math.log(tf.maximum(tf.constant(np.asarray(catalog["duration_s"], np.float32)), 1.0))
        k = min(K, int(embeddings.shape[0]))
        self.chunks = []
        size = len(exclude)
        for start in range(0, size, CHUNK):
            features = {name: tf.constant(values[start:start + CHUNK]) for name, values in queries.items()
                        if name in model.query_feature_names}
            query = model.encode_queries(features, training=False)
            scores, rows = top_k_excluding(tf.matmul(query["embedding"], embeddings, transpose_b=True), k,
                                           tf.constant(exclude[start:start + CHUNK]))
            self.chunks.append((query, scores, rows))

    def lists(self, diversity=None, score_weights=None):
        """`[users, n]` catalog rows of the served lists."""
        out = []
        for query, scores, rows in self.chunks:
            d = None if diversity is None else tf.fill(tf.shape(rows)[:1], float(diversity))
            served = self.model.serve_candidates(query, self.parts, scores, rows, min(N, int(rows.shape[1])),
                                                 score_weights=score_weights, diversity=d)
            out.append(served["rows"].numpy())
        return np.concatenate(out)

    def by_click_times_duration(self, power=1.0, blend=False):
        """The candidates re-ordered by the model's click probability x duration_s ** power (no watch head needed);
        `blend`: by its served score (the list blend) + power * log(duration_s) instead."""
        out = []
        for query, scores, rows in self.chunks:
            logits = self.model.rank_candidates(query, self.parts, rows)
            base = self.model.list_order_scores(scores, self.parts, rows, logits) if blend \
                else tf.math.log_sigmoid(logits)
            order = tf.math.top_k(base + power * tf.gather(self.log_duration, rows),
                                  k=min(N, int(rows.shape[1]))).indices
            out.append(tf.gather(rows, order, batch_dims=1).numpy())
        return np.concatenate(out)


class TrueJudge:
    """Scores served lists (catalog rows) under the planted truth, for the sampled users in their context."""

    def __init__(self, truth, catalog, users, hours, devices):
        self.column = truth.video_index(as_strings(catalog["video_id"]))  # catalog row -> truth column
        self.click = truth.click_prob(users, None, hour=hours, device=devices)  # [users, truth videos]
        self.watch = truth.watch_mean(users, None)
        self.duration = np.asarray(catalog["duration_s"], np.float64)
        self.topic = np.asarray(truth.dominant_topic)
        unit = np.asarray(truth.video_unit, np.float64)
        self.unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)

    def __call__(self, rows):
        rows = np.asarray(rows)
        cols = self.column[rows]
        users = np.arange(len(rows))[:, None]
        p, w = self.click[users, cols], self.watch[users, cols]
        n = rows.shape[1]
        vectors = self.unit[cols]                                    # [users, n, K]
        cosine = np.einsum("uik,ujk->uij", vectors, vectors)
        pairs = np.triu_indices(n, 1)
        return {
            "clicks": float((p.sum(axis=1)).mean()),
            "watch_s": float((p * w * self.duration[rows]).sum(axis=1).mean()),
            "watched_fraction": float((p * w).sum(axis=1).mean()),
            "topics": float(np.mean([len(np.unique(t)) for t in self.topic[cols]])),
            "ils": float(cosine[:, pairs[0], pairs[1]].mean()) if n > 1 else float("nan"),
            "duration_s": float(self.duration[rows].mean()),
            "distinct_videos_shown": int(len(np.unique(rows))),
        }


def sweep(served, judge):
    """The diversity sweep of one model: one row per d, plus the operating point within the click budget.

    The grid is d = 0, 0.1, ..., 1, refined in steps of 0.02 between the coarse grid's operating point and the
    next coarse d, so that the click budget, not the grid, decides how far d goes."""
    rows = [dict(diversity=d, **judge(served.lists(diversity=d))) for d in DIVERSITY]
    base = rows[0]

    def within(r):
        return r["clicks"] >= (1 - CLICK_LOSS_BUDGET) * base["clicks"]

    def pick(points):
        return max([r for r in points if within(r)], key=lambda r: (r["topics"], -r["diversity"]))

    coarse = pick(rows)
    if coarse["diversity"] < DIVERSITY[-1]:
        rows += [dict(diversity=round(coarse["diversity"] + step, 2), refined=True,
                      **judge(served.lists(diversity=coarse["diversity"] + step))) for step in REFINE]
        rows.sort(key=lambda r: r["diversity"])
    best = pick(rows)
    return {"points": rows, "best": {
        "diversity": best["diversity"], "topics": best["topics"], "clicks": best["clicks"],
        "topic_gain": best["topics"] / base["topics"] - 1, "click_change": best["clicks"] / base["clicks"] - 1,
        "coarse_diversity": coarse["diversity"], "coarse_topic_gain": coarse["topics"] / base["topics"] - 1,
        "ils_change": best["ils"] - base["ils"], "reaches_target": bool(best["topics"] / base["topics"] - 1
                                                                          >= TOPIC_GAIN_TARGET)}}


def watch_at_clicks(curve, clicks):
    """The watch time of the trade-off `curve` (points in knob order) at `clicks` expected clicks: the most of
    its segments' linear interpolations that reach that click level (None when none does)."""
    found = [p["watch_s"] + (q["watch_s"] - p["watch_s"]) * (clicks - p["clicks"]) / (q["clicks"] - p["clicks"])
             if q["clicks"] != p["clicks"] else max(p["watch_s"], q["watch_s"])
             for p, q in zip(curve, curve[1:])
             if min(p["clicks"], q["clicks"]) <= clicks <= max(p["clicks"], q["clicks"])]
    return max(found) if found else None


# -- output ------------------------------------------------------------------------------------------------------------

def _plot(sweeps, extra_points, tradeoff, path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, key, label in ((axes[0], "topics", "distinct true topics in the top 10"),
                           (axes[1], "ils", "intra-list similarity (mean pairwise cosine of true topics)")):
        for (name, result), style in zip(sweeps.items(), ("o-", "s--", "^-.", "v:")):
            points = result["points"]
            line, = ax.plot([p[key] for p in points], [p["clicks"] for p in points], style,
                            label=f"{name}, diversity 0-1")
            for p in (points[0], points[-1]):
                ax.annotate(f"{p['diversity']:g}", (p[key], p["clicks"]), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
            best = result["best"]
            ax.plot([next(p[key] for p in points if p["diversity"] == best["diversity"])], [best["clicks"]], "*",
                    color=line.get_color(), markeredgecolor="k", markersize=14)
        for name, point in extra_points.items():
            ax.plot([point[key]], [point["clicks"]], "x", markersize=9, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("expected clicks in the top 10 (true model)")
        ax.grid(alpha=0.3)
    axes[0].set_title("clicks against topics (*: most topics within -3 % clicks)")
    axes[1].set_title("clicks against intra-list similarity")
    axes[0].legend(fontsize=8)
    ax = axes[2]
    for (name, points), style in zip(tradeoff.items(), ("o-", "s--", "^:")):
        knob = "w" if "weights" in name else "a"
        ax.plot([p["watch_s"] for p in points], [p["clicks"] for p in points], style, label=name)
        for p in points:
            ax.annotate(f"{knob}={p[knob]:g}", (p["watch_s"], p["clicks"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
    for name, point in extra_points.items():
        if "weights" not in name and "duration" not in name:
            ax.plot([point["watch_s"]], [point["clicks"]], "x", markersize=9, label=name)
    primary, result = next(iter(sweeps.items()))
    ax.plot([result["points"][0]["watch_s"]], [result["points"][0]["clicks"]], "k*", markersize=12,
            label=f"{primary} (default weights)")
    ax.set_xlabel("expected watch seconds per top 10 (true model)")
    ax.set_ylabel("expected clicks in the top 10 (true model)")
    ax.set_title("clicks against watch time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _f(value, digits=4):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="BuiltinConfig.tiny(), 2 epochs, every test user: a smoke run")
    parser.add_argument("--gates", choices=GATES, default="mmoe", help="the watch model's ranking_gates")
    parser.add_argument("--all-gates", action="store_true", help="a watch model row for each of mmoe, shared, ple")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default 12; --quick 2)")
    parser.add_argument("--users", type=int, default=2000, help="test users whose served lists are scored")
    parser.add_argument("--seed", type=int, default=0, help="model, training and user-sample seed")
    parser.add_argument("--data-dir", default=None, help="the built-in dataset cache directory")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        help="folder for objectives.png and objectives.json")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 12)
    dataset = BuiltinConfig.tiny() if args.quick else BuiltinConfig()
    root = ensure_builtin(args.data_dir, dataset, progress=False)
    splits = builtin_splits(root)
    schema = impressions_schema(dataset.history_length)
    catalog = load_catalog(splits["catalog"], catalog_schema(dataset.image_dim, dataset.audio_dim))
    truth = GroundTruth.load(root)
    os.makedirs(args.out, exist_ok=True)

    gates = GATES if args.all_gates else (args.gates,)
    specs = [("click-only", ModelConfig(seed=args.seed))]
    specs += [(f"watch ({g})", ModelConfig(ranking_objectives=("click", "watch"), ranking_gates=g, seed=args.seed))
              for g in gates]
    primary = f"watch ({args.gates})"
    training = TrainingConfig(epochs=epochs, seed=args.seed)

    models, rows, fit_s = {}, {}, {}
    query_columns = judge = exclude = None
    index_of = catalog_index(catalog["video_id"])
    for name, config in specs:
        start = time.time()
        model, _ = fit_model(catalog, splits["train"], schema, config, training,
                             validation_paths=splits.get("validation"), verbose=0)
        fit_s[name] = round(time.time() - start, 1)
        scores, columns = test_scores(model, splits, catalog, schema, truth, model.query_feature_names)
        if query_columns is None:
            chosen = pick_users(columns, args.users, args.seed)
            query_columns = {key: values[chosen] for key, values in columns.items()}
            exclude = catalog_rows(index_of, query_columns["history"])
            judge = TrueJudge(truth, catalog, as_strings(query_columns["user_id"]),
                              np.asarray(query_columns["hour"]).reshape(-1).astype(np.int64),
                              as_strings(query_columns["device"]))
        models[name] = Served(model, catalog, query_columns, exclude)
        rows[name] = {"test": scores, "fit_s": fit_s[name]}
        print(json.dumps({"model": name, "fit_s": fit_s[name], **scores}), flush=True)

    lists = {"click-only": judge(models["click-only"].lists()),
             "click-only, click prob x duration": judge(models["click-only"].by_click_times_duration())}
    for name, _ in specs[1:]:
        lists[name] = judge(models[name].lists())
        lists[f"{name}, weights (1, 0)"] = judge(models[name].lists(score_weights=(1.0, 0.0)))
    tradeoff = {
        f"{primary}, score weights (1, w)": [dict(w=w, **judge(models[primary].lists(score_weights=(1.0, w))))
                                            for w in WATCH_WEIGHTS],
        "click-only, click prob x duration ** a": [
            dict(a=a, **judge(models["click-only"].by_click_times_duration(a))) for a in DURATION_POWERS],
        "click-only, served score + a log duration": [
            dict(a=a, **judge(models["click-only"].by_click_times_duration(a, blend=True))) for a in DURATION_POWERS]}
    sweeps = {name: sweep(models[name], judge) for name in (primary, "click-only")}
    # MMR at diversity 0 must serve the plain order.
    same_at_zero = {name: bool(np.array_equal(models[name].lists(diversity=0.0), models[name].lists()))
                    for name in sweeps}

    click, watch = rows["click-only"]["test"], rows[primary]["test"]
    versus = {
        "watch_time_change": lists[primary]["watch_s"] / lists["click-only"]["watch_s"] - 1,
        "clicks_change": lists[primary]["clicks"] / lists["click-only"]["clicks"] - 1,
        "watched_fraction_change": lists[primary]["watched_fraction"] / lists["click-only"]["watched_fraction"] - 1,
        "click_auc_diff": watch["click_auc"] - click["click_auc"],
        "heuristic_watch_time_change": (lists["click-only, click prob x duration"]["watch_s"]
                                        / lists["click-only"]["watch_s"] - 1),
        "heuristic_clicks_change": (lists["click-only, click prob x duration"]["clicks"]
                                    / lists["click-only"]["clicks"] - 1),
    }
    # The heuristic at no fewer expected clicks than the watch model: the most watch time it reaches there.
    matched = [p for p in tradeoff["click-only, click prob x duration ** a"]
               if p["clicks"] >= lists[primary]["clicks"]]
    if matched:
        best_heuristic = max(matched, key=lambda p: p["watch_s"])
        versus["heuristic_at_watch_model_clicks"] = {
            "power": best_heuristic["a"], "clicks": best_heuristic["clicks"], "watch_s": best_heuristic["watch_s"],
            "watch_model_watch_time_vs_it": lists[primary]["watch_s"] / best_heuristic["watch_s"] - 1}
    # Each heuristic point against the watch model's curve at the same expected clicks.
    curve = tradeoff[f"{primary}, score weights (1, w)"]
    versus["at_same_clicks"] = {}
    for name, points in tradeoff.items():
        if name == f"{primary}, score weights (1, w)":
            continue
        versus["at_same_clicks"][name] = []
        for p in points:
            at = watch_at_clicks(curve, p["clicks"])
            versus["at_same_clicks"][name].append({
                "a": p["a"], "clicks": p["clicks"], "heuristic_watch_s": p["watch_s"], "watch_model_watch_s": at,
                "watch_time_change": None if at is None else at / p["watch_s"] - 1})
    same_form = next(p for p in versus["at_same_clicks"]["click-only, served score + a log duration"] if p["a"] == 1.0)
    versus["watch_time_vs_same_form_heuristic"] = same_form["watch_time_change"]
    versus["watch_time_target_met"] = bool(versus["watch_time_change"] >= WATCH_TIME_TARGET)
    versus["click_auc_target_met"] = bool(versus["click_auc_diff"] >= -AUC_COST_TARGET)

    print(f"\n{len(query_columns['user_id'])} test users, top {N} of {K} candidates (history left out); "
          f"{epochs} epochs; {'tiny' if args.quick else 'default'} built-in data")
    print("\n| model | click AUC | oracle click AUC | watch AUC (clicked, >= median) | oracle watch AUC | "
          "watch Pearson vs truth | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        t = row["test"]
        print(f"| {name} | {_f(t['click_auc'])} | {_f(t['oracle_click_auc'])} | {_f(t.get('watch_auc'))} | "
              f"{_f(t['oracle_watch_auc'])} | {_f(t.get('watch_pearson'))} | {row['fit_s']} |")
    print("\n| served top 10 (true model) | expected clicks | expected watch s | expected watched fraction | "
          "distinct topics | intra-list similarity | mean duration s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, m in lists.items():
        print(f"| {name} | {m['clicks']:.4f} | {m['watch_s']:.1f} | {m['watched_fraction']:.4f} | {m['topics']:.2f} | "
              f"{m['ils']:.4f} | {m['duration_s']:.0f} |")
    print(f"\n{primary} against click-only: watch time {versus['watch_time_change']:+.1%} (target >= "
          f"+{WATCH_TIME_TARGET:.0%}: {'met' if versus['watch_time_target_met'] else 'MISSED'}), expected clicks "
          f"{versus['clicks_change']:+.1%}, click AUC {versus['click_auc_diff']:+.4f} (target >= -{AUC_COST_TARGET}: "
          f"{'met' if versus['click_auc_target_met'] else 'MISSED'}); the click x duration heuristic: watch time "
          f"{versus['heuristic_watch_time_change']:+.1%}, clicks {versus['heuristic_clicks_change']:+.1%}")
    if "heuristic_at_watch_model_clicks" in versus:
        h = versus["heuristic_at_watch_model_clicks"]
        print(f"at no fewer expected clicks than {primary} ({lists[primary]['clicks']:.4f}), "
              f"click prob x duration ** a reaches at most {h['watch_s']:.1f} s (a = {h['power']:g}, "
              f"{h['clicks']:.4f} clicks): the watch model serves {h['watch_model_watch_time_vs_it']:+.1%} "
              "watch time against it")
    print(f"\neach heuristic point against {primary}'s curve over w at the same expected clicks (interpolated)")
    print("| heuristic | a | expected clicks | heuristic watch s | watch model watch s | watch model vs heuristic |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, points in versus["at_same_clicks"].items():
        for p in points:
            change = p["watch_time_change"]
            print(f"| {name} | {p['a']:g} | {p['clicks']:.4f} | {p['heuristic_watch_s']:.1f} | "
                  f"{_f(p['watch_model_watch_s'], 1)} | {'' if change is None else f'{change:+.1%}'} |")
    for name, points in tradeoff.items():
        knob = "w" if "weights" in name else "a"
        print(f"\nclicks against watch time, {name}")
        print(f"| {knob} | expected clicks | expected watch s | expected watched fraction | distinct topics |")
        print("|---:|---:|---:|---:|---:|")
        for p in points:
            print(f"| {p[knob]:g} | {p['clicks']:.4f} | {p['watch_s']:.1f} | {p['watched_fraction']:.4f} | "
                  f"{p['topics']:.2f} |")
    for name, result in sweeps.items():
        print(f"\ndiversity sweep, {name} (MMR at 0 == plain order: {same_at_zero[name]})")
        print("| diversity | expected clicks | clicks vs 0 | distinct topics | topics vs 0 | intra-list similarity | "
              "expected watch s |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        base = result["points"][0]
        for p in result["points"]:
            print(f"| {p['diversity']:.2f}{'*' if p.get('refined') else ''} | {p['clicks']:.4f} | "
                  f"{p['clicks'] / base['clicks'] - 1:+.1%} | {p['topics']:.2f} | "
                  f"{p['topics'] / base['topics'] - 1:+.1%} | {p['ils']:.4f} | {p['watch_s']:.1f} |")
        b = result["best"]
        print(f"(*: refined grid) most topics within -{CLICK_LOSS_BUDGET:.0%} clicks: diversity {b['diversity']:.2f}, "
              f"topics {b['topic_gain']:+.1%}, clicks {b['click_change']:+.1%} "
              f"(target +{TOPIC_GAIN_TARGET:.0%} topics: {'met' if b['reaches_target'] else 'MISSED'})")

    plot = os.path.join(args.out, "objectives.png")
    extra = {f"{name} (not swept)": lists[name] for name in lists if name not in sweeps}
    _plot(sweeps, extra, tradeoff, plot)
    result = {
        "dataset": "tiny" if args.quick else "default", "epochs": epochs, "seed": args.seed, "users": int(
            len(query_columns["user_id"])), "k": K, "n": N, "primary": primary, "models": rows, "lists": lists,
        "versus_click_only": versus, "tradeoff": tradeoff, "diversity": sweeps,
        "mmr_at_zero_is_plain_order": same_at_zero,
        "targets": {"watch_time_change": WATCH_TIME_TARGET, "click_auc_cost": AUC_COST_TARGET,
                    "topic_gain": TOPIC_GAIN_TARGET, "click_loss_budget": CLICK_LOSS_BUDGET},
        "plot": plot}
    path = os.path.join(args.out, "objectives.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    best = sweeps[primary]["best"]
    print(json.dumps({
        "watch_time_change": round(versus["watch_time_change"], 4), "watch_time_target": WATCH_TIME_TARGET,
        "watch_time_target_met": versus["watch_time_target_met"],
        "clicks_change": round(versus["clicks_change"], 4),
        "click_auc_diff": round(versus["click_auc_diff"], 4), "click_auc_cost_target": AUC_COST_TARGET,
        "click_auc_target_met": versus["click_auc_target_met"],
        "click_auc": {name: round(r["test"]["click_auc"], 4) for name, r in rows.items()},
        "oracle_click_auc": round(click["oracle_click_auc"], 4),
        "watch_auc": round(watch["watch_auc"], 4), "oracle_watch_auc": round(watch["oracle_watch_auc"], 4),
        "watch_pearson": round(watch["watch_pearson"], 4),
        "heuristic_watch_time_change": round(versus["heuristic_watch_time_change"], 4),
        "watch_time_vs_same_form_heuristic": None if versus["watch_time_vs_same_form_heuristic"] is None
        else round(versus["watch_time_vs_same_form_heuristic"], 4),
        "diversity": best["diversity"], "topic_gain": round(best["topic_gain"], 4),
        "diversity_click_change": round(best["click_change"], 4), "topic_target_met": best["reaches_target"],
        "json": path, "plot": plot}))
    return result


if __name__ == "__main__":
    main()
