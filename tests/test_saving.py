"""`save_model`/`load_model` round trip and `tfrec-video export` from a saved model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf

from tfrec_video.data import write_table
from tfrec_video.data.schema import catalog_schema
from tfrec_video.errors import ConfigError
from tfrec_video.models import load_model, save_model
from toy import small_model, toy_data


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=1)
    root = tmp_path_factory.mktemp("saving")
    return model, catalog, impressions, save_model(model, str(root / "models" / "video_rec")), root


def test_load_model_restores_the_same_predictions(saved):
    model, _, impressions, path, _ = saved
    batch = {k: v[:8] for k, v in impressions.items()}
    restored = load_model(path)
    np.testing.assert_allclose(restored(batch)["click_probability"].numpy(),
                               model(batch)["click_probability"].numpy(), atol=1e-6)
    # The in-graph catalog table came back with the weights: history resolves to content.
    assert restored.catalog_table.lookup(tf.constant(["v3"])).numpy()[0] > 0
    with open(os.path.join(path, "model.json"), encoding="utf-8") as f:
        assert json.load(f)["class"] == "VideoRecModel"


def test_save_replaces_atomically_and_load_rejects_bad_dirs(saved, tmp_path):
    model, _, _, _, _ = saved
    target = tmp_path / "m"
    save_model(model, str(target))
    save_model(model, str(target))  # overwrite
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no temporary or old directories left
    with pytest.raises(ConfigError, match="no model.json"):
        load_model(str(tmp_path))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{\"format\": \"pickle\"}", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected format"):
        load_model(str(tmp_path / "bad"))


def test_export_command_writes_a_servable_version(saved):
    _, catalog, impressions, path, root = saved
    write_table(catalog, root / "catalog" / "part-0.parquet", catalog_schema(8, 4).select(list(catalog)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "tfrec_video.cli", "export", "--model", path, "--catalog",
               str(root / "catalog"), "--export-dir", str(root / "saved_models"), "-k", "10", "-n", "4"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = root / "saved_models" / "video_rec" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    import tensorflow_text  # noqa: F401
    loaded = tf.saved_model.load(str(version_dir))
    out = loaded.signatures["serving_default"](**{n: tf.constant(impressions[n][:2]) for n in
                                                  ("user_id", "history", "hour", "device")})
    assert out["video_ids"].shape == (2, 4)
    # --keep-seen: version 2 may retrieve the watched videos, version 1 never does.
    kept = subprocess.run(command + ["--keep-seen"], capture_output=True, text=True, env=env, timeout=600)
    assert kept.returncode == 0, kept.stderr[-3000:]
    keep = tf.saved_model.load(str(root / "saved_models" / "video_rec" / "2"))
    request = {n: tf.constant(impressions[n][:2]) for n in ("user_id", "hour", "device")}
    empty = tf.fill(tf.shape(impressions["history"][:2]), "")
    watched = loaded.signatures["retrieve"](**request, history=empty)["video_ids"][:, :impressions["history"].shape[1]]
    lists = {name: model.signatures["retrieve"](**request, history=watched)["video_ids"].numpy()
             for name, model in (("excluded", loaded), ("kept", keep))}
    seen = [set(row) for row in watched.numpy()]
    assert not any(s & set(row) for s, row in zip(seen, lists["excluded"]))
    assert any(s & set(row) for s, row in zip(seen, lists["kept"]))
    bad = subprocess.run(command[:-4] + ["-k", "3", "-n", "4"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "-n" in bad.stderr and "Traceback" not in bad.stderr
