"""`RetrievalRecall`'s validation clicks: all of them, or a uniform sample drawn once."""

import numpy as np
import pytest

from tfrec_video.data import write_table  # before TensorFlow: tf.keras must be Keras 2
from tfrec_video.data.schema import impressions_schema
from tfrec_video.errors import ConfigError
from tfrec_video.training import TrainingConfig
from tfrec_video.training.callbacks import RetrievalRecall

from toy import small_model, toy_data


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    """Toy impressions in two files, sorted by user (as logs often are), and their catalog."""
    catalog, impressions = toy_data(n_rows=2000, seed=1)
    order = np.argsort(impressions["user_id"].astype(str), kind="stable")
    rows = {k: v[order] for k, v in impressions.items()}
    root = tmp_path_factory.mktemp("validation")
    schema = impressions_schema(5)
    columns = [name for name in schema.names if name in rows]
    for part, sl in enumerate((slice(0, 1000), slice(1000, 2000))):
        write_table({k: rows[k][sl] for k in columns}, str(root / f"part-{part}.parquet"), schema)
    return catalog, rows, str(root), schema


def test_without_a_cap_every_click_in_the_catalog_is_scored(validation):
    catalog, rows, root, schema = validation
    clicks = RetrievalRecall(root, catalog, schema, max_clicks=None).sampled_clicks()
    clicked = rows["clicked"] > 0
    assert len(clicks["target"]) == clicked.sum()
    np.testing.assert_array_equal(clicks["video_id"].astype(str), rows["video_id"][clicked].astype(str))
    ids = catalog["video_id"].astype(str)
    np.testing.assert_array_equal(ids[clicks["target"]], clicks["video_id"].astype(str))


def test_the_cap_takes_a_uniform_sample_not_the_first_clicks(validation):
    catalog, rows, root, schema = validation
    clicked_users = rows["user_id"][rows["clicked"] > 0].astype(str)
    cap = len(clicked_users) // 4
    recall = RetrievalRecall(root, catalog, schema, max_clicks=cap, seed=3)
    sample = recall.sampled_clicks()
    users = sample["user_id"].astype(str)
    assert len(users) == cap
    # The files are sorted by user: the first quarter of the clicks holds a quarter of the users;
    # a uniform sample reaches about all of them, the last one included.
    assert len(set(users)) > 0.8 * len(set(clicked_users)) > len(set(clicked_users[:cap])) + 5
    assert clicked_users[-1] in set(users)
    assert recall.sampled_clicks() is sample  # drawn once, the same clicks every epoch
    again = RetrievalRecall(root, catalog, schema, max_clicks=cap, seed=3).sampled_clicks()
    np.testing.assert_array_equal(again["user_id"], sample["user_id"])
    other = RetrievalRecall(root, catalog, schema, max_clicks=cap, seed=4).sampled_clicks()
    assert not np.array_equal(other["user_id"], sample["user_id"])


def test_recall_on_the_sample_is_a_fraction_and_moves_with_k(validation):
    catalog, rows, root, schema = validation
    model = small_model(catalog, rows)
    values = []
    for k in (1, 60):
        recall = RetrievalRecall(root, catalog, schema, k=k, max_clicks=50)
        recall.set_model(model)
        values.append(recall.recall())
    assert 0.0 <= values[0] < values[1] == 1.0  # 60 videos: every click is in the top 60


def test_exclude_seen_ranks_each_click_among_the_videos_outside_its_history(validation):
    import tensorflow as tf
    from tfrec_video.evaluation import embed_catalog

    catalog, rows, root, schema = validation
    model = small_model(catalog, rows)
    recall = RetrievalRecall(root, catalog, schema, k=5, max_clicks=None, exclude_seen=True)
    recall.set_model(model)
    clicks = recall.sampled_clicks()
    # By hand: scores against every video, the click's watched videos pushed out, a watched target a miss.
    queries = model.embed_queries({n: tf.constant(clicks[n]) for n in model.query_feature_names}, training=False)
    scores = queries.numpy() @ embed_catalog(model, catalog).T
    ids = catalog["video_id"].astype(str)
    watched = (ids[None, :, None] == clicks["history"].astype(str)[:, None, :]).any(axis=2)
    target = clicks["target"]
    true = scores[np.arange(len(target)), target]
    ranks = (np.where(watched, -np.inf, scores) >= true[:, None]).sum(axis=1) - 1
    hits = (ranks < 5) & ~watched[np.arange(len(target)), target]
    assert watched[np.arange(len(target)), target].any()  # some clicks re-watch a video of their history
    assert recall.recall() == pytest.approx(hits.mean(), abs=1e-12)
    # Every video is in the top 60 of 60, unless the rule left it out.
    every = RetrievalRecall(root, catalog, schema, k=60, max_clicks=None, exclude_seen=True)
    every.set_model(model)
    kept = RetrievalRecall(root, catalog, schema, k=60, max_clicks=None)
    kept.set_model(model)
    assert kept.recall() == 1.0 > every.recall() == pytest.approx(1 - watched[np.arange(len(target)), target].mean())


def test_bad_caps_are_named():
    with pytest.raises(ValueError, match="max_clicks must be a positive integer or None"):
        RetrievalRecall("x", {"video_id": np.array(["a"], object)}, impressions_schema(5), max_clicks=0)
    with pytest.raises(ConfigError, match="TrainingConfig.recall_max_clicks must be a positive integer or null"):
        TrainingConfig(recall_max_clicks=-1)
    assert TrainingConfig(recall_max_clicks=None).recall_max_clicks is None


def test_training_config_passes_the_exclusion_rule_to_the_recall_fit_model_adds(validation, monkeypatch):
    from tfrec_video.training import fit as fit_module

    catalog, rows, root, schema = validation
    made = []

    class Recording(RetrievalRecall):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("exclude_seen"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(fit_module, "RetrievalRecall", Recording)
    model = small_model(catalog, rows)
    for flag in (False, True):
        config = TrainingConfig(recall_exclude_seen=flag, calibrate=False)
        fit_module._with_selection([], config, model, catalog, schema, root, validation=_Validation(), content=None,
                                   verbose=0)
    assert made == [False, True]


class _Validation:
    data, steps = None, None
