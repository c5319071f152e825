"""The defaults against the plain baselines on a built-in regime, under leave-one-out.

Trains `ModelConfig()` (or with `--set field=value` overrides) on a built-in regime
(`sparse` by default: `BuiltinConfig.sparse()`, a median of 6 clicks per user, titles
only, 30% of the catalog cold), the way quickstart does (up to 12 epochs, each head at
its best validation epoch), and the two plain two-towers every report holds
(`id_only`: user id against video id; `history_mean`: the mean of the watched videos'
id embeddings against the video id). Then `evaluate(..., leave_one_out=True)` and one
JSON line with:

* `loo`: the `leave_one_out` section (each test user's last click against the whole
  catalog, their history left out): `hr@K` / `ndcg@K` of the served list,
  `retrieval_*`, `id_only_*`, `history_mean_*`, `popularity_*`, `cold_*`;
* the impression protocol's headline numbers (AUC, Recall@100, cold-start
  Recall@100, `serving.hr@10`);
* `model_defaults`: how the `"auto"` fields were decided (`models.data_rules`),
  and `data_shape`, what `adapt` recorded;
* `train_s`, `baselines_s`, `evaluate_s`;
* `ratio`: the served list's leave-one-out HR@10 over the better plain two-tower's
  (`target` 1.0, `direction` higher: the model must beat both).

About 15 minutes on 2 cores for the sparse regime; `--quick` runs the tiny one for 2 epochs.

    python benchmarks/sparse_regime.py [--regime sparse|default|tiny] [--set logq_weight=0.5]
        [--train-set batch_size=512] [--epochs 12]
"""

import argparse
import json
import time

import yaml

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table
from tfrec_video.datasets import BuiltinConfig, ensure_builtin
from tfrec_video.evaluation import evaluate
from tfrec_video.models.config import ModelConfig
from tfrec_video.models.history_mean import fit_history_mean_baseline
from tfrec_video.models.id_only import fit_id_only_baseline
from tfrec_video.training.fit import TrainingConfig, click_counts, fit_model


def field_values(items):
    """`FIELD=VALUE` strings (`--set`) as a dict, each value parsed as YAML; also used by `title_encoders.py`."""
    pairs = {}
    for item in items:
        field, _, value = item.partition("=")
        pairs[field] = yaml.safe_load(value)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=("sparse", "default", "tiny"), default="sparse")
    parser.add_argument("--data-dir", default=None, help="the built-in dataset cache directory")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a ModelConfig override, the value parsed as YAML (repeatable)")
    parser.add_argument("--train-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a TrainingConfig override, e.g. batch_size=512 (repeatable)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--quick", action="store_true", help="the tiny regime, 2 epochs (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.regime, args.epochs = "tiny", 2

    overrides, training_overrides = field_values(args.set), field_values(args.train_set)
    dataset = BuiltinConfig.named(args.regime)
    directory = ensure_builtin(args.data_dir, dataset, progress=False)
    splits = builtin_splits(directory)
    catalog = load_catalog(splits["catalog"], catalog_schema(dataset.image_dim, dataset.audio_dim))
    schema = impressions_schema(dataset.history_length)

    start = time.time()
    model, history = fit_model(catalog, splits["train"], schema, ModelConfig(**overrides),
                               TrainingConfig(**{"epochs": args.epochs, **training_overrides}), validation_paths=splits["validation"], verbose=0)
    train_s = time.time() - start
    start = time.time()
    baselines = {"id_only": fit_id_only_baseline(splits["train"], schema, validate=False),
                 "history_mean": fit_history_mean_baseline(splits["train"], schema, splits["validation"],
                                                           validate=False)}
    baselines_s = time.time() - start
    start = time.time()
    test = impressions_dataset(splits["test"], catalog, schema, batch_size=4096).unbatch()
    report = evaluate(model, catalog, test, model.vocabularies.video_ids,
                      click_counts(read_table(splits["train"], schema, validate=False)), baselines=baselines,
                      leave_one_out=True)
    loo = report["leave_one_out"]
    best_plain = max(loo["history_mean_hr@10"], loo["id_only_hr@10"])
    print(json.dumps({
        "ratio": loo["hr@10"] / best_plain if best_plain else None, "target": 1.0, "direction": "higher",
        "regime": args.regime, "overrides": overrides, "training_overrides": training_overrides, "epochs": args.epochs,
        # The best epoch's whole-catalog validation recall, at the K head selection used (its log key).
        "validation_recall": {key: round(max(values), 4) for key, values in history.history.items()
                              if key.startswith("val_recall_at_")},
        "loo": loo,
        "auc": report["ranking"]["auc"], "recall@100": report["retrieval"]["recall@100"],
        "cold_recall@100": report["cold_start"]["recall@100"], "serving_hr@10": report["serving"]["hr@10"],
        "retrieval_hr@10": report["retrieval"]["hr@10"], "selection": history.selection,
        "history_mean_epoch": baselines["history_mean"].best_epoch,
        "model_defaults": model.data_rules, "data_shape": model.vocabularies.data_shape,
        "train_s": round(train_s), "baselines_s": round(baselines_s), "evaluate_s": round(time.time() - start),
    }))


if __name__ == "__main__":
    main()
