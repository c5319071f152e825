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
* `no_user`: no user information at all;
* `fitted_dot_*`, `fitted_per_topic_*`: the last two profiles' information (the profile
  against the video's true topics, the user's propensity, popularity, context) with the
  weights learned by a logistic regression on the validation split instead of taken from
  the generator. `dot` keeps the generator's form (one weight for the profile · topics dot
  product): it shows what learning a handful of weights costs. `per_topic` learns one weight a
  topic (the profile ⊙ topics product), the freedom a learned model has, which must find from
  data that every topic counts the same.

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


def _features(terms, video_unit, parts, form):
    """A logistic regression's inputs: each profile against the video's true topics, and the known terms.

    `form="dot"`: the profile's dot product with the topics, one column (the generator's form: one
    scale for every topic). `"per_topic"`: their element-wise product, one column a topic.
    """
    topics = video_unit[terms["videos"]]

    def against_topics(profile):
        product = profile * topics
        return product.sum(axis=1, keepdims=True) if form == "dot" else product

    columns = [against_topics(terms[part]) if terms[part].ndim == 2 else terms[part][:, None] for part in parts]
    known = [terms["zpop"][:, None], terms["context"][:, None], np.ones((len(topics), 1))]
    return np.concatenate(columns + known, axis=1)


def _fit_logistic(x, y, l2=1e-3, steps=30):
    """L2-penalised logistic regression by Newton's method (a few dozen columns: exact and fast)."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) / len(y) + l2 * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x / len(y) + l2 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


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
    train_users = truth.user_index(as_strings(train["user_id"]))
    train_videos = truth.video_index(as_strings(train["video_id"]))
    n_users = len(truth.user_ids)
    shown = np.zeros((n_users, video_unit.shape[1]))
    np.add.at(shown, train_users, video_unit[train_videos])
    impressions = np.bincount(train_users, minlength=n_users)
    clicks = np.bincount(train_users[np.asarray(train["clicked"]).astype(bool)], minlength=n_users)
    ctr = clicks.sum() / max(impressions.sum(), 1)
    shrunk = (clicks + 10 * ctr) / (impressions + 10)
    bias = np.log(shrunk / (1 - shrunk)) - np.log(ctr / (1 - ctr))

    def split_terms(table):
        """The known parts of each impression's true logit, and its user's profiles (none uses its own click)."""
        users = truth.user_index(as_strings(table["user_id"]))
        videos = truth.video_index(as_strings(table["video_id"]))
        hour = _hour_index(table["hour"] if "hour" in table else None)
        device = device_index(as_strings(table["device"]) if "device" in table else None)
        context = context_term(np.asarray(truth.zdur)[videos], device, hour, params["context_effect"])
        history = np.zeros((len(users), video_unit.shape[1]))
        for row, ids in enumerate(table["history"]):
            ids = [i for i in as_strings(ids) if i]
            if ids:
                history[row] = video_unit[truth.video_index(ids)].sum(axis=0)
        return {"users": users, "videos": videos, "hour": hour, "device": device,
                "clicked": np.asarray(table["clicked"]).astype(int), "zpop": np.asarray(truth.zpop)[videos],
                "context": context, "history": _unit(history), "shown": _unit(shown)[users], "bias": bias[users]}

    terms = split_terms(test)
    test_users, test_videos, clicked = terms["users"], terms["videos"], terms["clicked"]
    hour, device, history = terms["hour"], terms["device"], terms["history"]
    base = params["click_bias"] + params["popularity_click_weight"] * terms["zpop"] + terms["context"]

    def score(user_vectors, user_bias=0.0):
        return base + params["click_scale"] * np.sum(user_vectors * video_unit[test_videos], axis=1) + user_bias

    results = {
        "oracle": auc(clicked, score(truth.user_unit[test_users], truth.user_bias[test_users])),
        "oracle_without_user_bias": auc(clicked, score(truth.user_unit[test_users])),
        "history_profile": auc(clicked, score(history)),
        "history_plus_train_profile": auc(clicked, score(_unit(history + 0.3 * terms["shown"]), terms["bias"])),
        "no_user": auc(clicked, base),
    }
    # The same information with the weights *learned*: a logistic regression on the validation
    # impressions, whose profiles come from the history and the training split only.
    validation = split_terms(read_table_numpy(splits["validation"], schema, validate=False))
    for name, parts in (("history_profile", ("history",)),
                        ("history_plus_train_profile", ("history", "shown", "bias"))):
        for form in ("dot", "per_topic"):
            weights = _fit_logistic(_features(validation, video_unit, parts, form), validation["clicked"])
            results[f"fitted_{form}_{name}"] = auc(clicked, _features(terms, video_unit, parts, form) @ weights)
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

    estimated = _unit(history + 0.3 * terms["shown"])
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
