"""`HeadSelection`: each head from its own best validation epoch, on data where the two heads peak apart.

The data: users of four topics, videos of four topics with topical titles, clicks
far likelier on the user's topic. The ranking head (wide, no dropout or L2) fits
it fast and its validation log-loss turns up after a few epochs, while retrieval's
Recall@10 keeps moving: the two monitors are best at different epochs.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfrec_video.data import write_table
from tfrec_video.data.schema import impressions_schema
from tfrec_video.errors import ConfigError
from tfrec_video.evaluation import CatalogRanker, logloss
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.serving import ExportedModel, export_saved_model
from tfrec_video.training import RetrievalRecall
from tfrec_video.training.calibration import ClickCalibration
from tfrec_video.training.head_selection import HeadSelection
from toy import SMALL

HISTORY = 5
WORDS = [["cat", "kitten", "pet"], ["goal", "match", "ball"], ["recipe", "cook", "pasta"],
         ["guitar", "song", "band"]]


def _data(seed=0, n_users=400, n_videos=150, per_user=40):
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 4, n_videos)
    titles = [" ".join(rng.choice(WORDS[t], 2)) + " " + rng.choice(["a", "b", "c", "d"]) for t in topic]
    catalog = {"video_id": np.array([f"v{i}" for i in range(n_videos)], object), "title": np.array(titles, object)}
    user_topic = rng.integers(0, 4, n_users)
    rows = []
    for u in range(n_users):
        videos = rng.choice(n_videos, per_user, replace=False)
        logit = -2.0 + 3.0 * (topic[videos] == user_topic[u]) + rng.normal(0, 0.5, per_user)
        clicked = (rng.random(per_user) < 1 / (1 + np.exp(-logit))).astype(np.int64)
        watched = []
        for v, c in zip(videos, clicked):
            rows.append((f"u{u}", (watched[::-1] + [""] * HISTORY)[:HISTORY], f"v{v}", c))
            if c:
                watched.append(f"v{v}")
    rng.shuffle(rows)
    impressions = {"user_id": np.array([r[0] for r in rows], object),
                   "history": np.array([r[1] for r in rows], object),
                   "video_id": np.array([r[2] for r in rows], object), "clicked": np.array([r[3] for r in rows])}
    return catalog, impressions


def _joined(catalog, impressions):
    index = {v: i for i, v in enumerate(catalog["video_id"])}
    return {**impressions, "title": catalog["title"][[index[v] for v in impressions["video_id"]]]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One training run with `HeadSelection` and calibration, and its per-epoch validation logs."""
    catalog, impressions = _data()
    cut = int(0.8 * len(impressions["clicked"]))
    train = {k: v[:cut] for k, v in impressions.items()}
    validation = {k: v[cut:] for k, v in impressions.items()}
    schema = impressions_schema(HISTORY).select(list(validation))
    path = write_table(validation, str(tmp_path_factory.mktemp("heads") / "validation.parquet"), schema)
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig(**{**SMALL, "title_vocabulary_size": 60, "ranking_dropout": 0.0, "ranking_l2": 0.0,
                            "ranking_hidden_units": (64, 64)})
    model = VideoRecModel(config, adapt(catalog, train, title_vocabulary_size=60), catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(5e-3))
    data = tf.data.Dataset.from_tensor_slices(_joined(catalog, train)).shuffle(20_000, seed=0).batch(128)
    val = tf.data.Dataset.from_tensor_slices(_joined(catalog, validation)).batch(1024)
    recall = RetrievalRecall(path, catalog, schema, k=10)
    heads = HeadSelection("val_recall_at_10", "val_logloss", patience=2, validation_data=val)
    calibration = ClickCalibration(val)
    history = model.fit(data, validation_data=val, epochs=14, callbacks=[recall, heads, calibration], verbose=0)
    # What is exported: the SavedModel, loaded back, scores the validation data.
    exported = ExportedModel(export_saved_model(model, catalog, str(tmp_path_factory.mktemp("export")), k=20, n=5))
    labels, probabilities = [], []
    for batch in val:
        probabilities.append(exported(batch)["click_probability"].numpy())
        labels.append(batch["clicked"].numpy())
    ranker = CatalogRanker(exported.embed_videos({name: tf.constant(v) for name, v in catalog.items()}).numpy())
    clicked = validation["clicked"] > 0
    queries = exported.embed_queries({name: tf.constant(validation[name][clicked])
                                      for name in ("user_id", "history")}).numpy()
    index = {v: i for i, v in enumerate(catalog["video_id"])}
    ranks = ranker(queries, np.array([index[v] for v in validation["video_id"][clicked]]))
    final = {"logloss": logloss(np.concatenate(labels), np.concatenate(probabilities)),
             "recall": float((ranks < 10).mean())}
    return history.history, heads, calibration, final, model


@pytest.mark.slow
def test_the_two_heads_peak_at_different_epochs_here(run):
    logs, heads, _, _, _ = run
    joint = heads.selected["retrieval_epoch"] + heads.patience  # the epochs of the joint phase
    recall, logloss = logs["val_recall_at_10"][:joint], logs["val_logloss"][:joint]
    assert int(np.argmax(recall)) != int(np.argmin(logloss)), (recall, logloss)


@pytest.mark.slow
def test_the_export_holds_each_head_within_0_005_of_its_best_epoch(run):
    logs, heads, _, final, _ = run
    assert final["recall"] >= max(logs["val_recall_at_10"]) - 0.005, (final, logs["val_recall_at_10"])
    assert final["logloss"] <= min(logs["val_logloss"]) + 0.005, (final, logs["val_logloss"])


@pytest.mark.slow
def test_the_selection_names_each_heads_epoch(run):
    logs, heads, calibration, _, model = run
    selected = heads.selected
    recall = logs["val_recall_at_10"]
    # 1-based, as in the Keras log; retrieval from its best joint epoch.
    assert selected["retrieval_epoch"] == int(np.argmax(recall)) + 1
    assert selected["retrieval"] == pytest.approx(max(recall))
    assert selected["ranking_phase"] in ("joint", "ranking") and 1 <= selected["ranking_epoch"] <= len(recall)
    # The ranking phase trained only the head, at a tenth of the rate; training ended with both heads on.
    assert len(recall) > selected["retrieval_epoch"] + heads.patience - 1
    assert model.trained_heads == "both"
    assert float(tf.keras.backend.get_value(model.optimizer.learning_rate)) == pytest.approx(5e-3)
    # Calibration ran on the selected weights and did not make validation log-loss worse.
    result = calibration.result
    assert result["logloss_after"] <= result["logloss_before"] + 1e-9 and result["scale"] > 0


def test_head_selection_refuses_missing_monitors_and_single_head_models():
    catalog, impressions = _data(n_users=20, per_user=10)
    model = VideoRecModel(ModelConfig(**{**SMALL, "title_vocabulary_size": 60, "ranking_weight": 0.0}),
                          adapt(catalog, impressions, title_vocabulary_size=60), catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    data = tf.data.Dataset.from_tensor_slices(_joined(catalog, impressions)).batch(64)
    with pytest.raises(ConfigError, match="retrieval_weight and ranking_weight"):
        model.fit(data, epochs=1, callbacks=[HeadSelection()], verbose=0)
    with pytest.raises(ConfigError, match="validation metric"):
        HeadSelection(ranking_monitor="logloss")
    with pytest.raises(ConfigError, match="patience"):
        HeadSelection(patience=0)


def test_head_selection_needs_its_monitors_in_the_logs():
    catalog, impressions = _data(n_users=20, per_user=10)
    model = VideoRecModel(ModelConfig(**{**SMALL, "title_vocabulary_size": 60}),
                          adapt(catalog, impressions, title_vocabulary_size=60), catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(1e-3))
    data = tf.data.Dataset.from_tensor_slices(_joined(catalog, impressions)).batch(64)
    with pytest.raises(ConfigError, match="val_recall_at_100.*RetrievalRecall"):
        model.fit(data, validation_data=data, epochs=1, callbacks=[HeadSelection()], verbose=0)


def _split(catalog, impressions, tmp_path):
    """80/20 train/validation: the two as columns, the validation file (for `RetrievalRecall`), its schema
    and path, and the two as batched datasets."""
    cut = int(0.8 * len(impressions["clicked"]))
    train = {k: v[:cut] for k, v in impressions.items()}
    validation = {k: v[cut:] for k, v in impressions.items()}
    schema = impressions_schema(HISTORY).select(list(validation))
    path = write_table(validation, str(tmp_path / "validation.parquet"), schema)
    data = tf.data.Dataset.from_tensor_slices(_joined(catalog, train)).batch(128)
    val = tf.data.Dataset.from_tensor_slices(_joined(catalog, validation)).batch(1024)
    return train, validation, schema, path, data, val


class _Crash(tf.keras.callbacks.Callback):
    """Stands for a kill: raises at the end of epoch `at` (1-based), after the callbacks before it ran."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt("killed")


class _Phase(tf.keras.callbacks.Callback):
    """Records the phase and the learning rate each epoch begins with."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        rate = float(tf.keras.backend.get_value(self.model.optimizer.learning_rate))
        self.seen.append((epoch + 1, self.model.trained_heads, rate))


@pytest.mark.slow
def test_a_resumed_run_goes_on_in_its_phase(tmp_path):
    """Killed in the ranking phase and resumed by BackupAndRestore: the ranking phase goes on, at the
    ranking rate (not scaled twice), and the retrieval epoch chosen before the kill is kept."""
    catalog, impressions = _data(n_users=150, per_user=30)
    train, validation, schema, path, data, val = _split(catalog, impressions, tmp_path)

    def fit(callbacks):
        tf.keras.utils.set_random_seed(0)
        model = VideoRecModel(ModelConfig(**{**SMALL, "title_vocabulary_size": 60}),
                              adapt(catalog, train, title_vocabulary_size=60), catalog=catalog)
        model.compile(tf.keras.optimizers.Adam(5e-3))
        recall = RetrievalRecall(path, catalog, schema, k=10)
        heads = HeadSelection("val_recall_at_10", "val_logloss", patience=1, validation_data=val,
                              state_dir=str(tmp_path / "backup" / "head_selection"))
        phase = _Phase()
        backup = tf.keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        try:
            model.fit(data, validation_data=val, epochs=8, verbose=0,
                      callbacks=[recall, heads, phase, backup, *callbacks])
        except KeyboardInterrupt:
            pass
        return heads, phase

    heads, phase = fit([_Crash(at=4)])
    state = dict(heads.state)
    assert state["phase"] == "ranking", state  # this data switches phase by epoch 4
    assert (tmp_path / "backup" / "head_selection" / "head_selection.json").exists()
    heads, phase = fit([])
    first_epoch, phase_at_start, rate = phase.seen[0]
    assert first_epoch == 5 and phase_at_start == "ranking"
    assert rate == pytest.approx(5e-4)  # 5e-3 x 0.1, once
    assert heads.selected["retrieval_epoch"] == state["retrieval_epoch"]
    assert not (tmp_path / "backup" / "head_selection" / "head_selection.json").exists()


def _with_watch(catalog, impressions, seed=1):
    """`impressions` with a `watch_fraction` for each click: high for odd-numbered videos (their "quality",
    which titles do not show), higher on the user's topic (as clicks are)."""
    rng = np.random.default_rng(seed)
    video = np.array([int(v[1:]) for v in impressions["video_id"]])
    mean = np.where(video % 2 == 1, 0.7, 0.25)
    fraction = rng.beta(mean * 6, (1 - mean) * 6)
    return dict(impressions, watch_fraction=np.where(impressions["clicked"] > 0, fraction, 0.0).astype(np.float32))


@pytest.mark.slow
def test_the_watch_head_is_selected_on_its_own_after_the_click_head(tmp_path):
    """A watch model: joint, then the ranking head alone, then the watch head alone. The watch phase moves
    only the watch head's weights (the click head's logits are those of its selected epoch), and the
    watch head ends on its best watch-phase epoch."""
    catalog, impressions = _data(n_users=200, per_user=30)
    impressions = _with_watch(catalog, impressions)
    train, validation, schema, path, data, val = _split(catalog, impressions, tmp_path)
    tf.keras.utils.set_random_seed(0)
    config = ModelConfig(**{**SMALL, "title_vocabulary_size": 60, "ranking_objectives": ("click", "watch"),
                            "ranking_experts": 2})
    model = VideoRecModel(config, adapt(catalog, train, title_vocabulary_size=60), catalog=catalog)
    model.compile(tf.keras.optimizers.Adam(5e-3))
    heads = HeadSelection("val_recall_at_10", "val_logloss", patience=1, validation_data=val)
    phase, snapshots = _Phase(), {}

    class _ClickLogits(tf.keras.callbacks.Callback):
        """The click logits of a fixed validation batch at the start of each watch-phase epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            if self.model.trained_heads == "watch":
                snapshots[epoch + 1] = self.model.rank_logits(next(iter(val)), training=False).numpy()

    history = model.fit(data, validation_data=val, epochs=16, verbose=0,
                        callbacks=[RetrievalRecall(path, catalog, schema, k=10), heads, phase, _ClickLogits()])
    phases = [heads_ for _, heads_, _ in phase.seen]
    assert "watch" in phases, phase.seen
    first_watch = phases.index("watch")
    assert "ranking" in phases[:first_watch] and set(phases[first_watch:]) == {"watch"}, phases
    # The click head is frozen through the watch phase, and is the one exported.
    logits = list(snapshots.values())
    for other in logits[1:]:
        np.testing.assert_allclose(other, logits[0], atol=1e-6)
    np.testing.assert_allclose(model.rank_logits(next(iter(val)), training=False).numpy(), logits[0], atol=1e-6)
    # The watch head: the best watch-phase epoch (or its start), and what the model now validates at.
    selected = heads.selected
    watch_losses = history.history["val_watch_loss"]
    assert selected["watch_monitor"] == "val_watch_loss" and selected["watch_epoch"] is not None
    in_phase = watch_losses[first_watch:]
    assert selected["watch"] <= min(in_phase) + 1e-9, (selected, in_phase)
    final = model.evaluate(val, verbose=0, return_dict=True)
    assert final["watch_loss"] == pytest.approx(selected["watch"], abs=1e-4)
    assert final["logloss"] == pytest.approx(selected["ranking"], abs=1e-4)
    assert model.trained_heads == "both"
