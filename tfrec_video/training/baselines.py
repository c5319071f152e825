"""The trained baselines of a report, each fitted and scored the way our model is.

`click_mlp_baseline` trains the standalone click MLP (`tfrec_video.models.ClickMLP`)
on the training impressions with its own early stopping on the validation split,
and scores the test impressions: `report.json`'s `ranking.mlp_baseline_auc` and
`ranking.mlp_baseline_logloss`. The ranking stage must beat it by 0.01 AUC to earn
its complexity. (The ID-only retrieval baseline is `models.id_only.fit_id_only_baseline`.)

Example:

>>> metrics = click_mlp_baseline(catalog, "data/train", "data/valid", "data/test", schema,
...                              model.vocabularies)                              # doctest: +SKIP
>>> sorted(metrics)                                                                # doctest: +SKIP
['mlp_baseline_auc', 'mlp_baseline_epoch', 'mlp_baseline_logloss']
"""

from typing import Dict, Mapping

import numpy as np

from tfrec_video.data.pipeline import impressions_dataset
from tfrec_video.data.schema import TableSchema
from tfrec_video.evaluation.metrics import auc, logloss
from tfrec_video.features.vocabulary import Vocabularies
from tfrec_video.models.click_mlp import fit_click_mlp_baseline


def click_mlp_baseline(catalog: Mapping[str, np.ndarray], train_paths, validation_paths, test_paths,
                       schema: TableSchema, vocabularies: Vocabularies, seed: int = 0) -> Dict[str, float]:
    """Fits the click MLP on `train_paths` (early stopping on `validation_paths`) and scores `test_paths`.

    Returns:
      `{"mlp_baseline_auc", "mlp_baseline_logloss", "mlp_baseline_epoch"}` (the epoch 1-based).
    """
    def rows(paths):
        return impressions_dataset(paths, catalog, schema, batch_size=4096)

    fit = fit_click_mlp_baseline(rows(train_paths).unbatch(), rows(validation_paths).unbatch(), vocabularies,
                                 seed=seed)
    labels, probabilities = [], []
    for batch in rows(test_paths):
        probabilities.append(np.asarray(fit.model.predict_click_probability(batch)).reshape(-1))
        labels.append(batch["clicked"].numpy().reshape(-1))
    labels, probabilities = np.concatenate(labels), np.concatenate(probabilities)
    return {"mlp_baseline_auc": auc(labels, probabilities), "mlp_baseline_logloss": logloss(labels, probabilities),
            "mlp_baseline_epoch": int(fit.best_epoch)}
