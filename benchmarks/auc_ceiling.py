"""How much of the oracle AUC a model can reach when it must learn users from their clicks.

The oracle AUC of the built-in dataset scores each test impression with the
*true* click probability, which uses every user's latent topic preferences
exactly. A recommender only sees a user through a handful of clicks. This script
measures the ceiling that leaves, by scoring test impressions with the true
click logit in which only the user's preferences are replaced by what their
clicks reveal, while everything about the *videos* stays exact (true topics,
popularity, duration) and so does the context:

* `oracle`: the true click probability (what `report.json` calls `oracle_auc`);
* `oracle_without_user_bias`: the same without the per-user click propensity;
* `history_profile`: the user's preferences estimated as the mean topic vector of
  the videos in the impression's `history` (the clicks the model is given);
* `history_plus_train_profile`: that, plus the topics of all the user's training
  impressions (exposure follows preferences in part), plus a shrunk estimate of
  the user's click propensity from their training click-through rate;
* `no_user`: no user information at all.

It also gives the same two user profiles' Recall@100 over the whole catalog for
the test clicks (`report.json`'s `oracle_recall@100` is the first).

Any model that, like ours, knows users from their clicks is bounded by roughly
the `history_plus_train_profile` figure, and that bound still assumes the
video topics are known exactly, which a model has to learn from noisy content.

    python benchmarks/auc_ceiling.py [--data-dir DIR]

The last line printed is JSON.
"""

import argparse
import json

import numpy as np

import tfrec_video  # noqa: F401
from tfrec_video.data.pipeline import builtin_splits
from tfrec_video.data.schema import as_strings, impressions_schema
from tfrec_video.data.tables import read_table_numpy
from tfrec_video.datasets import BuiltinConfig, GroundTruth, ensure_builtin, load_manifest
from tfrec_video.datasets.builtin.truth import _hour_index, context_term, device_index
from tfrec_video.evaluation.metrics import auc


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="a built-in dataset directory (default: the cached default)")
    args = parser.parse_args(argv)
    root = args.data_dir or ensure_builtin(config=BuiltinConfig(), progress=False)
    config = load_manifest(root)["config"]
    truth = GroundTruth.load(root)
    splits = builtin_splits(root)
    schema = impressions_schema(config["history_length"])
    train = read_table_numpy(splits["train"], schema, validate=False)
    test = read_table_numpy(splits["test"], schema, validate=False)
    params = truth.params["click"]

    video_unit = np.asarray(truth.video_unit, np.float64)
    test_users = truth.user_index(as_strings(test["user_id"]))
    test_videos = truth.video_index(as_strings(test["video_id"]))
    train_users = truth.user_index(as_strings(train["user_id"]))
    train_videos = truth.video_index(as_strings(train["video_id"]))
    clicked = np.asarray(test["clicked"]).astype(int)

    hour = _hour_index(test["hour"] if "hour" in test else None)
    device = device_index(as_strings(test["device"]) if "device" in test else None)
    base = (params["click_bias"] + params["popularity_click_weight"] * np.asarray(truth.zpop)[test_videos]
            + context_term(np.asarray(truth.zdur)[test_videos], device, hour, params["context_effect"]))

    def score(user_vectors, user_bias=0.0):
        return base + params["click_scale"] * np.sum(user_vectors * video_unit[test_videos], axis=1) + user_bias

    history = np.zeros((len(test_users), video_unit.shape[1]))
    for row, ids in enumerate(test["history"]):
        ids = [i for i in as_strings(ids) if i]
        if ids:
            history[row] = video_unit[truth.video_index(ids)].sum(axis=0)
    n_users = len(truth.user_ids)
    shown = np.zeros((n_users, video_unit.shape[1]))
    np.add.at(shown, train_users, video_unit[train_videos])
    impressions = np.bincount(train_users, minlength=n_users)
    clicks = np.bincount(train_users[np.asarray(train["clicked"]).astype(bool)], minlength=n_users)
    ctr = clicks.sum() / max(impressions.sum(), 1)
    shrunk = (clicks + 10 * ctr) / (impressions + 10)
    bias = np.log(shrunk / (1 - shrunk)) - np.log(ctr / (1 - ctr))

    results = {
        "oracle": auc(clicked, score(truth.user_unit[test_users], truth.user_bias[test_users])),
        "oracle_without_user_bias": auc(clicked, score(truth.user_unit[test_users])),
        "history_profile": auc(clicked, score(_unit(history))),
        "history_plus_train_profile": auc(clicked, score(_unit(_unit(history) + 0.3 * _unit(shown)[test_users]),
                                                         bias[test_users])),
        "no_user": auc(clicked, base),
    }
    # The same question for retrieval: Recall@100 over the whole catalog for the test clicks, ranking
    # by the true click logit with the user's preferences exact (the oracle) or estimated as above.
    rows = np.flatnonzero(clicked)
    zpop, zdur = np.asarray(truth.zpop), np.asarray(truth.zdur)
    dev = device if np.ndim(device) == 0 else device[rows][:, None]
    hr = hour if np.ndim(hour) == 0 else hour[rows][:, None]
    video_part = params["popularity_click_weight"] * zpop[None, :] + context_term(zdur[None, :], dev, hr,
                                                                                  params["context_effect"])

    def recall(user_vectors, k=100):
        logits = params["click_scale"] * user_vectors @ video_unit.T + video_part
        target = logits[np.arange(len(rows)), test_videos[rows]]
        return float(np.mean((logits > target[:, None]).sum(axis=1) < k))

    estimated = _unit(_unit(history) + 0.3 * _unit(shown)[test_users])
    recall_results = {"oracle": recall(truth.user_unit[test_users][rows]),
                      "history_plus_train_profile": recall(estimated[rows])}
    for name, value in recall_results.items():
        print(f"recall@100 {name:<19}{value:.4f}")
    mean_history = float(np.mean([sum(1 for i in as_strings(h) if i) for h in test["history"]]))
    for name, value in results.items():
        print(f"{name:<30}{value:.4f}")
    print(f"mean clicks in a test impression's history: {mean_history:.1f}")
    print(json.dumps({"auc": {k: round(v, 4) for k, v in results.items()},
                      "recall@100": {k: round(v, 4) for k, v in recall_results.items()}, "mean_history_length": round(mean_history, 2),
                      "dataset": root}))


if __name__ == "__main__":
    main()
