"""The same seed gives the same model and the same metrics; another seed gives others."""

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow)

from tfrec_video.data import write_table
from tfrec_video.data.pipeline import impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.evaluation import evaluate
from tfrec_video.models import ModelConfig
from tfrec_video.training import TrainingConfig, fit_model
from toy import SMALL, toy_data


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    catalog, impressions = toy_data(n_rows=1600)
    write_table(catalog, str(root / "catalog.parquet"), catalog_schema(8, 4))
    rows = {k: impressions[k] for k in ("user_id", "history", "hour", "device", "video_id", "clicked")}
    for split, part in (("train", slice(0, 1200)), ("test", slice(1200, None))):
        write_table({k: v[part] for k, v in rows.items()}, str(root / f"{split}.tfrecord"), impressions_schema(5))
    return root


def _train_and_evaluate(root, seed):
    catalog = load_catalog(str(root / "catalog.parquet"), catalog_schema(8, 4))
    model, history = fit_model(catalog, str(root / "train.tfrecord"), impressions_schema(5),
                               ModelConfig(**SMALL, seed=seed),
                               TrainingConfig(batch_size=128, epochs=2, shuffle_buffer=500, seed=seed), verbose=0)
    test = impressions_dataset(str(root / "test.tfrecord"), catalog, impressions_schema(5), batch_size=512).unbatch()
    report = evaluate(model, catalog, test, train_video_ids=model.vocabularies.video_ids)
    return history.history, report, [w.numpy() for w in model.trainable_weights]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_metrics(files):
    history_a, report_a, weights_a = _train_and_evaluate(files, seed=3)
    history_b, report_b, weights_b = _train_and_evaluate(files, seed=3)
    assert history_a == history_b
    for section in ("retrieval", "ranking", "cold_start", "warm_start"):
        assert report_a[section] == report_b[section], section
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))
    _, report_c, weights_c = _train_and_evaluate(files, seed=4)
    assert not all(np.array_equal(a, c) for a, c in zip(weights_a, weights_c))
