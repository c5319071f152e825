"""What each part of the ranking stage is worth on the built-in data: AUC, log-loss, ECE and the served list.

Each row adds one thing to the row above, on the same dataset, split and seed:

1. `joint`: the model as at 6546d04: one joint `model.fit` of 3 epochs on the training
   split, `user_id_dropout` 0.3, a ranking head without dropout, L2, target attention,
   count features or calibration, and the served list ordered by click probability.
   (One difference: the retrieval score is a ranking-head input in every row.)
2. `+ per-head selection`: up to 12 epochs with `HeadSelection` on the validation split.
3. `+ user-id dropout`: `user_id_dropout` 0.9 (the default): users are placed by their
   history, not memorised by id.
4. `+ regularisation`: the ranking head's dropout and L2 (`ModelConfig` defaults).
5. `+ target attention`: the candidate attends over the watched videos.
6. `+ count features`: the user's and video's smoothed click rates and impression counts.
7. `+ calibration`: Platt scaling fitted on validation.
8. `+ list blend`: the served order fitted on validation clicks (`ListBlend`), i.e. the
   package defaults.

For every row: test AUC, log-loss and ECE of the click probability, Recall@100,
and the hit rate at 10 of retrieval's own top 10 (`retrieval.hr@10`) and of the
served list (`serving.hr@10`), all from `tfrec_video.evaluation.evaluate`, plus the
seconds `fit_model` took. Also the standalone click MLP (`ClickMLP`), with its own
early stopping on validation.

    python benchmarks/ranking_ablation.py [--data-dir DIR] [--quick] [--oracle-videos]

`--quick` runs rows 1 and 8 only. `--oracle-videos` runs row 8 only, with every video's
`image_embedding` replaced by its *true* latents from the generator (topic vector,
popularity, duration; `oracle_video_features`). Against the plain row 8 it measures how
much of the gap to `benchmarks/auc_ceiling.py`'s references is on the video side
(topics that must be learned from noisy titles and media) and how much on the user side
and in the head. The last line printed is JSON: `ratio` is
serving.hr@10 / retrieval.hr@10 of the last row (target >= 1.05).
"""

import argparse
import json
import time

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
from tfrec_video.data.pipeline import builtin_splits, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.data.tables import read_table
from tfrec_video.datasets import BuiltinConfig, GroundTruth, ensure_builtin
from tfrec_video.evaluation import evaluate
from tfrec_video.evaluation.metrics import auc, logloss
from tfrec_video.models import ModelConfig, fit_click_mlp_baseline
from tfrec_video.training import TrainingConfig, click_counts, fit_model

OFF = dict(ranking_dropout=0.0, ranking_l2=0.0, ranking_target_attention=False, ranking_count_features=False,
           ranking_calibration=False, list_blend=False)
OLD_USER_ID_DROPOUT = 0.3  # the default at 6546d04
ROWS = (
    ("joint", dict(OFF, user_id_dropout=OLD_USER_ID_DROPOUT),
     dict(epochs=3, select_heads=False, calibrate=False, blend_list=False), False),
    ("+ per-head selection", dict(OFF, user_id_dropout=OLD_USER_ID_DROPOUT),
     dict(epochs=12, calibrate=False, blend_list=False), True),
    ("+ user-id dropout", OFF, dict(epochs=12, calibrate=False, blend_list=False), True),
    ("+ regularisation", dict(OFF, ranking_dropout=ModelConfig().ranking_dropout, ranking_l2=ModelConfig().ranking_l2),
     dict(epochs=12, calibrate=False, blend_list=False), True),
    ("+ target attention", dict(OFF, ranking_dropout=ModelConfig().ranking_dropout,
                                ranking_l2=ModelConfig().ranking_l2, ranking_target_attention=True),
     dict(epochs=12, calibrate=False, blend_list=False), True),
    ("+ count features", dict(ranking_calibration=False, list_blend=False), dict(epochs=12, calibrate=False,
                                                                                blend_list=False), True),
    ("+ calibration", dict(list_blend=False), dict(epochs=12, blend_list=False), True),
    ("+ list blend", {}, dict(epochs=12), True),
)


def oracle_video_features(catalog, truth, dim):
    """The catalog with `image_embedding` holding each video's true latents, zero-padded to `dim`.

    The latents are what the generator's click model uses for a video: the unit
    topic vector, the popularity z-score and the duration z-score. Each is scaled
    to unit variance per dimension so that PCA-whitening keeps them all.
    """
    import numpy as np

    index = truth.video_index([v.decode() if isinstance(v, bytes) else str(v) for v in catalog["video_id"]])
    latents = np.concatenate([np.asarray(truth.video_unit)[index], np.asarray(truth.zpop)[index][:, None],
                              np.asarray(truth.zdur)[index][:, None]], axis=1)
    latents = (latents - latents.mean(axis=0)) / (latents.std(axis=0) + 1e-6)
    out = np.zeros((len(index), dim), np.float32)
    out[:, :latents.shape[1]] = latents
    return dict(catalog, image_embedding=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="the dataset cache directory")
    parser.add_argument("--quick", action="store_true", help="rows 1 and 8 only")
    parser.add_argument("--oracle-videos", action="store_true",
                        help="row 8 only, with the videos' true latents as their image_embedding")
    args = parser.parse_args(argv)
    config = BuiltinConfig()
    root = ensure_builtin(args.data_dir, config, progress=False)
    splits = builtin_splits(root)
    schema = impressions_schema(config.history_length)
    catalog = load_catalog(splits["catalog"], catalog_schema(config.image_dim, config.audio_dim))
    counts = click_counts(read_table(splits["train"], schema, validate=False))
    truth = GroundTruth.load(root)
    rows = [ROWS[0], ROWS[-1]] if args.quick else ROWS
    if args.oracle_videos:
        catalog = oracle_video_features(catalog, truth, config.image_dim)
        rows = [("defaults + true video latents",) + ROWS[-1][1:]]
    results = []
    for name, model_options, training_options, validate in rows:
        start = time.time()
        model, _ = fit_model(catalog, splits["train"], schema, ModelConfig(**model_options),
                             TrainingConfig(**training_options),
                             validation_paths=splits["validation"] if validate else None, verbose=0)
        seconds = time.time() - start
        test = impressions_dataset(splits["test"], catalog, schema, batch_size=4096).unbatch()
        report = evaluate(model, catalog, test, train_video_ids=model.vocabularies.video_ids,
                          train_click_counts=counts, truth=truth)
        results.append({"row": name, "auc": report["ranking"]["auc"], "logloss": report["ranking"]["logloss"],
                        "ece": report["ranking"]["ece"], "recall@100": report["retrieval"]["recall@100"],
                        "retrieval_hr@10": report["retrieval"]["hr@10"], "serving_hr@10": report["serving"]["hr@10"],
                        "fit_s": round(seconds, 1)})
        print(json.dumps(results[-1]), flush=True)
    if args.oracle_videos:
        return  # the click MLP sees ids only: its figure is the plain run's

    start = time.time()
    vocabulary = model.vocabularies
    train = impressions_dataset(splits["train"], catalog, schema, batch_size=4096).unbatch()
    validation = impressions_dataset(splits["validation"], catalog, schema, batch_size=4096).unbatch()
    mlp = fit_click_mlp_baseline(train, validation, vocabulary)
    labels, probabilities = [], []
    for batch in impressions_dataset(splits["test"], catalog, schema, batch_size=4096):
        probabilities.extend(mlp.model.predict_click_probability(batch).numpy().tolist())
        labels.extend(batch["clicked"].numpy().tolist())
    baseline = {"row": "click MLP baseline", "auc": auc(labels, probabilities), "logloss": logloss(labels, probabilities),
                "best_epoch": mlp.best_epoch, "fit_s": round(time.time() - start, 1)}
    print(json.dumps(baseline), flush=True)

    print("\n| row | AUC | log-loss | ECE | Recall@100 | retrieval HR@10 | served HR@10 | fit s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['row']} | {r['auc']:.4f} | {r['logloss']:.4f} | {r['ece']:.4f} | {r['recall@100']:.4f} | "
              f"{r['retrieval_hr@10']:.4f} | {r['serving_hr@10']:.4f} | {r['fit_s']} |")
    print(f"| {baseline['row']} | {baseline['auc']:.4f} | {baseline['logloss']:.4f} | | | | | {baseline['fit_s']} |")
    last = results[-1]
    print(json.dumps({"rows": results, "baseline": baseline, "ratio": last["serving_hr@10"] / last["retrieval_hr@10"],
                      "target": 1.05, "direction": "higher"}))


if __name__ == "__main__":
    main()
