"""`tfrec-video embed --text-model`: titles into a `title_embedding` column, joined into the catalog and trained on.

The text encoder is the tiny one of `text_model_fixture` (same interface as the converted
multilingual-e5-small), so the tests run in seconds. `tfrec-video train` on the built-in
data with a `title_embedding` column and `title_encoder: both` is in `test_e5_titles.py`,
whose vectors come from the real encoder.
"""

import json
import os

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.cli import main
from tfrec_video.data import read_table_numpy, write_table
from tfrec_video.data.media_embeddings import STATE_FILE, attach_embeddings, embeddings_schema
from tfrec_video.data.pipeline import impressions_dataset
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.media_embedding import run_embed
from tfrec_video.models import load_model, save_model
from text_model_fixture import reference_vectors, save_broken_text_model, save_text_model, titles_table
from toy import small_model

DIM = 8  # the width of the `text_model` fixture (conftest)


def _read(out, dim=DIM):
    return read_table_numpy(str(out), embeddings_schema(title_embedding_dim=dim))


def test_embed_titles_from_a_catalog_table_join_and_train(tmp_path, text_model, toy_catalog_and_impressions, capsys):
    catalog, impressions = toy_catalog_and_impressions
    out = tmp_path / "title_emb.parquet"
    code = main(["embed", "--text-model", text_model, "--titles", titles_table(tmp_path, catalog), "--out", str(out),
                 "--shard-size", "25", "--batch-size", "7", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "60 rows written (3 shards written" in printed and "titles missing 0, failed 0" in printed
    table = _read(out)
    assert table["video_id"].tolist() == catalog["video_id"].tolist()
    # Each vector is the text model's own vector of the video's title.
    np.testing.assert_allclose(table["title_embedding"], reference_vectors(text_model, catalog["title"]), atol=1e-6)
    state = json.loads((out / STATE_FILE).read_text())
    assert state["identity"]["text_model"] == os.path.abspath(text_model)
    assert len(state["identity"]["titles_sha256"]) == 64 and state["widths"]["title_embedding"] == DIM

    # The join (widths from the run's state) and a model that trains on the vectors, PCA-whitened.
    shuffled = {name: values[::-1] for name, values in catalog.items() if name in ("video_id", "title")}
    joined = attach_embeddings(shuffled, str(out))
    np.testing.assert_array_equal(joined["title_embedding"], table["title_embedding"][::-1])
    impressions = dict(impressions, title_embedding=joined["title_embedding"][::-1][
        [int(v[1:]) for v in impressions["video_id"]]])
    model = small_model(joined, impressions, epochs=1, media_components=4)
    tower = model.candidate_tower
    assert "title_embedding" in model.video_feature_names and model.vocabularies.title_embedding_dim == DIM
    assert tower.title_embedding_pca.num_components == 4 and tower.title_embedding_projection is not None
    assert np.isfinite(model.history.history["loss"]).all()
    # The vectors reach the embedding: other title vectors, other video embeddings.
    features = {name: tf.constant(joined[name][:3]) for name in model.video_feature_names}
    moved = dict(features, title_embedding=tf.constant(joined["title_embedding"][3:6]))
    assert not np.allclose(model.embed_videos(features).numpy(), model.embed_videos(moved).numpy())
    # The model saves and loads, and the input pipeline joins the column into impressions by video_id.
    loaded = load_model(save_model(model, str(tmp_path / "saved")))
    batch = {name: tf.constant(values[:32]) for name, values in impressions.items()}
    np.testing.assert_allclose(loaded(batch)["video_embedding"].numpy(), model(batch)["video_embedding"].numpy(),
                               atol=1e-5)
    columns = ("user_id", "history", "video_id", "clicked")
    path = write_table({k: impressions[k] for k in columns}, str(tmp_path / "train.parquet"), impressions_schema(5))
    first = next(iter(impressions_dataset(path, joined, impressions_schema(5), batch_size=16)))
    np.testing.assert_array_equal(first["title_embedding"].numpy(), impressions["title_embedding"][:16])
    # A catalog file can carry the column itself, in the package's schema.
    write_table(joined, str(tmp_path / "joined.parquet"), catalog_schema(title_embedding_dim=DIM))


def test_titles_from_the_media_csv_resume_and_refuse_other_titles_or_models(tmp_path, text_model):
    csv = tmp_path / "media.csv"
    csv.write_text('video_id,title\nv1,How to make ramen\nv2,在家做拉面的方法\nv3,""\nv4,"goal, goal, goal"\n',
                   encoding="utf-8")
    out = tmp_path / "emb.tfrecord"
    first = run_embed(str(csv), str(out), text_model=text_model, shard_size=2, progress=False)
    assert (first.written, first.shards_written, first.title_dim) == (4, 2, DIM)
    table = _read(out)
    titles = ["How to make ramen", "在家做拉面的方法", "", "goal, goal, goal"]
    np.testing.assert_allclose(table["title_embedding"], reference_vectors(text_model, titles), atol=1e-6)
    assert not table["title_embedding"][2].any()  # the empty title: the model's vector of "" (zero here)
    again = run_embed(str(csv), str(out), text_model=text_model, shard_size=2, progress=False)
    assert (again.shards_skipped, again.shards_written, again.written) == (2, 0, 4)

    csv.write_text(csv.read_text(encoding="utf-8").replace("ramen", "udon"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"holds shards of another embedding run \(.*titles_sha256"):
        run_embed(str(csv), str(out), text_model=text_model, shard_size=2, progress=False)
    other = save_text_model(tmp_path / "other_text", dim=DIM, seed=1)
    with pytest.raises(ConfigError, match=r"another embedding run \(.*text_model"):
        run_embed(str(csv), str(out), text_model=other, shard_size=2, progress=False)


def test_media_and_titles_in_one_run_a_video_without_a_title_is_left_out_or_zero_filled(tmp_path, text_model, toy_catalog_and_impressions):
    catalog, _ = toy_catalog_and_impressions
    from test_embedding_step import _image_features, _media_csv, _save_encoder, _solid_png

    image_model = _save_encoder(tmp_path / "image", _image_features, tf.TensorSpec([None, 32, 32, 3], tf.float32))
    rows = [(f"v{i}", str(_solid_png(tmp_path / f"v{i}.png", (40 * i, 90, 200))), "") for i in range(4)]
    csv = _media_csv(tmp_path, rows)
    titles = titles_table(tmp_path, {k: v[1:] for k, v in catalog.items()})  # has no row for v0
    left = run_embed(csv, str(tmp_path / "a.parquet"), image_model=image_model, text_model=text_model, titles=titles,
                     progress=False)
    assert (left.missing_title, left.written, left.left_out) == (1, 3, 1)
    filled = run_embed(csv, str(tmp_path / "b.parquet"), image_model=image_model, text_model=text_model,
                       titles=titles, zero_fill=True, progress=False)
    assert (filled.missing_title, filled.written, filled.zero_filled) == (1, 4, 1)
    table = read_table_numpy(str(tmp_path / "b.parquet"), embeddings_schema(13, None, DIM))
    assert table["video_id"].tolist() == ["v0", "v1", "v2", "v3"]
    assert not table["title_embedding"][0].any() and table["image_embedding"][0].any()
    np.testing.assert_allclose(table["title_embedding"][1:], reference_vectors(text_model, catalog["title"][1:4]),
                               atol=1e-6)


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.bad_input
def test_bad_text_models_and_title_sources_exit_2_with_the_reason(tmp_path, text_model, toy_catalog_and_impressions, capsys):
    catalog, _ = toy_catalog_and_impressions
    titles = titles_table(tmp_path, catalog)
    rank1 = save_broken_text_model(tmp_path / "rank1", "rank1")
    no_title = tmp_path / "media.csv"
    no_title.write_text("video_id,thumbnail_path,audio_path\nv1,,\n")
    out = str(tmp_path / "emb.parquet")
    cases = [
        (["--text-model", str(tmp_path / "nope"), "--titles", titles],
         f"--text-model: the text model '{tmp_path / 'nope'}' is not a directory (expected a TF Hub-style SavedModel"),
        (["--text-model", rank1, "--titles", titles],
         "returns float32 [batch] for a string [batch] (expected a TF Hub-style SavedModel"),
        (["--text-model", text_model], "give --catalog CSV (the media CSV"),
        (["--text-model", text_model, "--catalog", str(no_title)],
         f"{no_title}: the header lacks the columns ['title']"),
        (["--text-model", text_model, "--titles", str(no_title)],
         f"{no_title}: feature 'title': the table has no title column"),
        (["--text-model", text_model, "--titles", str(tmp_path / "missing.parquet")], "missing.parquet"),
    ]
    for extra, message in cases:
        assert main(["embed", "--out", out, "--quiet", *extra]) == 2, extra
        err = capsys.readouterr().err
        assert message in err, (extra, err)
    assert not os.path.exists(out)


@pytest.mark.bad_input
def test_a_titles_table_with_a_duplicate_or_empty_id_is_named_by_file_and_line(tmp_path, text_model):
    table = tmp_path / "titles.csv"
    table.write_text("video_id,title\nv1,cat\nv2,dog\nv1,cat again\n")
    with pytest.raises(DataValidationError, match=r"titles.csv, line 4: feature 'video_id': .*'v1'"):
        run_embed(None, str(tmp_path / "e.parquet"), text_model=text_model, titles=str(table), progress=False)
    table.write_text("video_id,title\nv1,cat\n,dog\n")
    with pytest.raises(DataValidationError, match=r"titles.csv, line 3: feature 'video_id'"):
        run_embed(None, str(tmp_path / "e.parquet"), text_model=text_model, titles=str(table), progress=False)
    assert not (tmp_path / "e.parquet").exists()
