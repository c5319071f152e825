"""`tfrec-video refresh-catalog` (issue 19): the next version of an export, serving a new catalog with the same
weights, from the export alone, encoding only the added and changed videos.

One small model is trained once; the module exports it with its own catalog (the export shares the model's
catalog table), refreshes that export to a new catalog (videos added, one per topic, removed, retitled and
reordered), and exports the new catalog in full beside it, the reference the refresh must match.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

from tfrec_video.cli.main import main
from tfrec_video.data.schema import catalog_schema
from tfrec_video.data.tables import write_table
from tfrec_video.errors import ConfigError, DataValidationError
from tfrec_video.serving import refresh as refresh_lib
from tfrec_video.serving.export import export_saved_model
from tfrec_video.serving.refresh import REFRESH_FILE, refresh_catalog
from tfrec_video.serving.warmup import WARMUP_FILE, read_warmup_requests
from toy import TOPIC_WORDS, small_model, toy_data

# The fuzz test's k and n, so that its checks apply to the refreshed export as they are.
K, N = 8, 4
REMOVED = ["v3", "v10", "v41"]
CHANGED = ["v5", "v22"]
ADDED = ["fresh-0", "fresh-1", "fresh-2"]  # one video per topic of toy_data
QUERY = ("user_id", "history", "hour", "device")


def _topics(catalog):
    return np.array([int(c[1:]) for c in catalog["category"]])


def _new_catalog(catalog):
    """The catalog of the next day: REMOVED gone, CHANGED retitled (to another topic's words), ADDED
    (clean examples of each topic: its words, its category, the mean image of its videos), order reversed."""
    keep = ~np.isin(catalog["video_id"], REMOVED)
    new = {name: np.asarray(values)[keep][::-1].copy() for name, values in catalog.items()}
    for video in CHANGED:
        new["title"][list(new["video_id"]).index(video)] = "piano guitar song"
    topic = _topics(catalog)
    added = {"video_id": np.array(ADDED, object),
             "title": np.array([" ".join(words) for words in TOPIC_WORDS], object),
             "category": np.array(["c0", "c1", "c2"], object),
             "duration_s": np.full(3, 300.0, np.float32),
             "image_embedding": np.stack([catalog["image_embedding"][topic == t].mean(0) for t in range(3)]),
             "audio_embedding": np.zeros((3, catalog["audio_embedding"].shape[1]), np.float32)}
    # The first added video first, the others last: kept rows move, and the refresh must follow them.
    return {name: np.concatenate([added[name][:1], new[name], added[name][1:]]).astype(new[name].dtype)
            for name in new}


def _digest(directory):
    """A hash of every file under `directory` (names and bytes)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(directory)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            h.update(os.path.relpath(path, directory).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    catalog, impressions = toy_data()
    model = small_model(catalog, impressions, epochs=3)
    root = tmp_path_factory.mktemp("refresh")
    model_dir = str(root / "saved_models" / "video_rec")
    first = export_saved_model(model, catalog, str(root / "saved_models"), name="video_rec", k=K, n=N)
    first_digest = _digest(first)
    new = _new_catalog(catalog)
    encoded = []  # the ids each call of the export's encoding function received
    original = refresh_lib._encode_batch

    def counting(function, features):
        encoded.extend(v.decode() for v in features["video_id"].numpy())
        return original(function, features)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(refresh_lib, "_encode_batch", counting)
        refreshed = refresh_catalog(model_dir, new)
    full = export_saved_model(model, new, str(root / "full"), name="video_rec", k=K, n=N)
    return types.SimpleNamespace(
        model=model, catalog=catalog, impressions=impressions, new=new, model_dir=model_dir, first=first,
        first_digest=first_digest, refreshed=refreshed, full=full, encoded=encoded, root=root,
        loaded={path: tf.saved_model.load(path) for path in (first, refreshed, full)})


def _copy_of_first(setup, directory):
    """A model directory holding a copy of the module's first version (an export, without exporting again)."""
    model_dir = os.path.join(directory, "video_rec")
    shutil.copytree(setup.first, os.path.join(model_dir, "1"))
    return model_dir


def _request(rows_or_history, impressions=None):
    """A request of the impressions' rows, or of unknown users with the given histories."""
    if impressions is not None:
        return {name: tf.constant(impressions[name][rows_or_history]) for name in QUERY}
    history = np.asarray(rows_or_history, object)
    batch = len(history)
    return {"user_id": tf.constant(["never-seen-user"] * batch), "history": tf.constant(history),
            "hour": tf.constant([20] * batch, tf.int64), "device": tf.constant(["tv"] * batch)}


def _ids(output):
    return [[v.decode() for v in row] for row in output["video_ids"].numpy()]


def test_an_added_video_is_served_to_users_who_watch_its_topic(setup):
    """The Done-when test: a new id, titled about a topic, is recommended to users whose history is that topic."""
    topic = _topics(setup.catalog)
    ids = setup.catalog["video_id"]
    stable = ~np.isin(ids, REMOVED + CHANGED)
    for t, video in enumerate(ADDED):
        watched = ids[(topic == t) & stable]
        history = [watched[i:i + 5] for i in range(0, 12, 3)]
        served = _ids(setup.loaded[setup.refreshed].signatures["serving_default"](**_request(history)))
        assert all(video in row for row in served), (video, served)
        before = _ids(setup.loaded[setup.first].signatures["serving_default"](**_request(history)))
        assert not any(video in row for row in before)


def test_removed_videos_are_never_returned(setup):
    loaded = setup.loaded[setup.refreshed]
    rows = np.arange(len(setup.impressions["user_id"]))[::7]
    request = _request(rows, setup.impressions)
    returned = set()
    for name in ("serving_default", "retrieve"):
        returned |= {v for row in _ids(loaded.signatures[name](**request)) for v in row}
    returned |= {v for row in _ids(loaded.signatures["retrieve_excluding"](
        **request, exclude=tf.constant([["v0"]] * len(rows)))) for v in row}
    assert returned and not returned & set(REMOVED)
    assert {v.decode() for v in loaded.catalog.ids.numpy()[1:]} == set(setup.new["video_id"])
    # They were there before: the first version served some of them.
    first = setup.loaded[setup.first]
    assert {v for row in _ids(first.signatures["retrieve"](**request)) for v in row} & set(REMOVED)


def _rows_by_id(loaded):
    """`{name: {video id: row}}` of every per-video variable of a loaded export."""
    ids = [v.decode() for v in loaded.catalog.ids.numpy()[1:]]
    variables = {"embedding": loaded.catalog_embedding, "encoding": loaded.catalog_encoding}
    variables.update({name: variable for name, variable in loaded.catalog_parts.items()})
    out = {name: dict(zip(ids, variable.numpy())) for name, variable in variables.items()}
    for name, variable in loaded.catalog.values.items():
        out[f"table/{name}"] = dict(zip(ids, variable.numpy()[1:]))
    return out


def test_kept_rows_are_copied_bit_for_bit_and_changed_ones_recomputed(setup):
    before, after, full = (_rows_by_id(setup.loaded[path]) for path in (setup.first, setup.refreshed, setup.full))
    kept = [v for v in setup.new["video_id"] if v not in CHANGED + ADDED]
    for name, rows in after.items():
        for video in kept:
            np.testing.assert_array_equal(rows[video], before[name][video], err_msg=f"{name} {video}")
        if name not in full:  # a prepared column: the full export's own table holds the content only
            continue
        for video in CHANGED + ADDED:  # recomputed: what the full export of the new catalog computed
            if np.asarray(rows[video]).dtype.kind == "f":
                np.testing.assert_allclose(rows[video], full[name][video], atol=1e-5, err_msg=f"{name} {video}")
            else:
                np.testing.assert_array_equal(rows[video], full[name][video], err_msg=f"{name} {video}")
    for video in CHANGED:
        assert not np.array_equal(after["embedding"][video], before["embedding"][video])
        assert after["table/title"][video] == b"piano guitar song"
    # The model's own table was the served one: its prepared columns were refreshed with it.
    assert "table/title_tokens" in after and not np.array_equal(after["table/title_tokens"]["v5"],
                                                                before["table/title_tokens"]["v5"])


def test_only_added_and_changed_videos_are_encoded(setup):
    assert sorted(setup.encoded) == sorted(ADDED + CHANGED)
    with open(os.path.join(setup.refreshed, REFRESH_FILE), encoding="utf-8") as f:
        counts = json.load(f)
    assert counts == {"from_version": 1, "videos": len(setup.new["video_id"]), "added": len(ADDED),
                      "changed": len(CHANGED), "removed": len(REMOVED),
                      "kept": len(setup.new["video_id"]) - len(ADDED) - len(CHANGED)}


def test_catalog_diff_in_small_chunks_gives_the_same_result(setup, monkeypatch):
    """`catalog_diff` compares CHUNK rows at a time: pieces that split the catalog anywhere change nothing."""
    specs = refresh_lib._video_inputs(setup.first)
    columns = refresh_lib._checked_catalog(setup.new, specs, "new")
    table = setup.loaded[setup.first].catalog
    content = [name for name in sorted(specs) if name != "video_id"]
    whole = refresh_lib.catalog_diff(table, columns, content)
    assert len(setup.new["video_id"]) < refresh_lib.CHUNK  # one piece: the reference
    ids = list(setup.new["video_id"])
    assert sorted(np.asarray(ids)[whole["encode"]]) == sorted(ADDED + CHANGED)
    assert list(whole["old_rows"][[ids.index(v) for v in ADDED]]) == [-1] * len(ADDED)
    for chunk in (1, 7, len(ids) - 1):
        monkeypatch.setattr(refresh_lib, "CHUNK", chunk)
        pieces = refresh_lib.catalog_diff(table, columns, content)
        for key in ("old_rows", "encode"):
            assert pieces[key].dtype == whole[key].dtype, (chunk, key)
            np.testing.assert_array_equal(pieces[key], whole[key], err_msg=f"CHUNK {chunk}: {key}")


def test_the_new_version_is_written_atomically_beside_an_untouched_one(setup):
    assert os.path.basename(setup.refreshed) == "2"
    assert sorted(os.listdir(setup.model_dir)) == ["1", "2"]  # no temporary directory left
    assert _digest(setup.first) == setup.first_digest
    assert os.path.isfile(os.path.join(setup.refreshed, WARMUP_FILE))
    # The warmup records are those the full export of the new catalog wrote, and replay.
    refreshed, full = read_warmup_requests(setup.refreshed), read_warmup_requests(setup.full)
    assert [log.SerializeToString(deterministic=True) for log in refreshed] == \
        [log.SerializeToString(deterministic=True) for log in full]
    loaded = setup.loaded[setup.refreshed]
    for log in refreshed:
        request = log.predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        assert loaded.signatures[request.model_spec.signature_name](**inputs)


def _assert_same_answers(a, b, request):
    """Every signature of the loaded exports `a` and `b` answers `request` alike (ids equal, floats to 1e-5)."""
    batch = int(request["user_id"].shape[0])
    for name in ("serving_default", "retrieve", "recommend_excluding", "retrieve_excluding"):
        extra = {"exclude": tf.constant([["v0", "fresh-1"]] * batch)} if name.endswith("_excluding") else {}
        x, y = a.signatures[name](**request, **extra), b.signatures[name](**request, **extra)
        assert _ids(x) == _ids(y), name
        for key in x:
            if x[key].dtype.is_floating:
                np.testing.assert_allclose(x[key].numpy(), y[key].numpy(), atol=1e-5, err_msg=f"{name} {key}")
    for name in ("embed_query", "rank"):  # rank: an added, a changed, a removed and a kept video
        extra = {"video_id": tf.constant([["fresh-0", "v5", "v3", "v7"][i % 4] for i in range(batch)])} \
            if name == "rank" else {}
        x, y = a.signatures[name](**request, **extra), b.signatures[name](**request, **extra)
        for key in x:
            np.testing.assert_allclose(x[key].numpy(), y[key].numpy(), atol=1e-5, err_msg=f"{name} {key}")


def test_the_refresh_serves_what_a_full_export_of_the_new_catalog_serves(setup):
    """To 1e-5, for users whose watched videos were neither changed nor removed. (This export shared the
    model's table, so watched videos are looked up in the refreshed catalog: see `serving.refresh`.)"""
    history = setup.impressions["history"]
    rows = np.flatnonzero(~np.isin(history, REMOVED + CHANGED).any(axis=1))[:64]
    assert len(rows) == 64
    _assert_same_answers(setup.loaded[setup.refreshed], setup.loaded[setup.full], _request(rows, setup.impressions))


def test_an_export_of_another_catalog_refreshes_to_exactly_the_full_export(setup):
    """When the export's catalog is not the model's table, watched videos keep being looked up in the model's
    table, as in a full export: the same answers for every user, histories of added and removed videos too."""
    other = {name: np.asarray(values)[1:] for name, values in setup.catalog.items()}  # not the model's table
    base = str(setup.root / "other")
    export_saved_model(setup.model, other, base, name="video_rec", k=K, n=N)
    refreshed = tf.saved_model.load(refresh_catalog(os.path.join(base, "video_rec"), setup.new))
    assert refreshed.history_embedding is not refreshed.catalog_embedding
    rows = np.arange(0, 96, 3)
    request = _request(rows, setup.impressions)
    history = request["history"].numpy()
    history[0, :3] = [b"fresh-0", b"v3", b"v5"]  # added, removed, changed
    request["history"] = tf.constant(history)
    _assert_same_answers(refreshed, setup.loaded[setup.full], request)


def test_a_catalog_smaller_than_k_and_back(setup, tmp_path):
    """k is as exported: a refreshed catalog of fewer videos returns them all, a larger one k again."""
    small = {name: np.asarray(values)[:3] for name, values in setup.new.items()}
    model_dir = _copy_of_first(setup, str(tmp_path))
    shrunk = tf.saved_model.load(refresh_catalog(model_dir, small))
    full_small = tf.saved_model.load(export_saved_model(setup.model, small, str(tmp_path / "full"), k=K, n=N))
    request = _request(np.arange(4), setup.impressions)
    request["history"] = tf.fill(request["history"].shape, "")
    assert np.array(_ids(shrunk.signatures["retrieve"](**request))).shape == (4, 3)
    assert np.array(_ids(shrunk.signatures["serving_default"](**request))).shape == (4, 3)
    _assert_same_answers(shrunk, full_small, request)
    grown = tf.saved_model.load(refresh_catalog(model_dir, setup.new))  # from version 2: a refresh of a refresh
    assert np.array(_ids(grown.signatures["retrieve"](**request))).shape == (4, K)
    _assert_same_answers(grown, setup.loaded[setup.full], request)
    assert sorted(os.listdir(model_dir)) == ["1", "2", "3"]


@pytest.mark.parametrize("change, message", [
    (lambda c: {k: v for k, v in c.items() if k != "image_embedding"}, r"'image_embedding': missing column"),
    (lambda c: dict(c, image_embedding=c["image_embedding"][:, :7]), r"'image_embedding'.*expected shape \[\d+, 8\]"),
    (lambda c: dict(c, video_id=np.concatenate([c["video_id"][:2], c["video_id"][:-2]])),
     r"duplicate video_id 'fresh-0'"),
    (lambda c: {k: v[:0] for k, v in c.items()}, r"'video_id': no videos"),
    (lambda c: dict(c, title=np.arange(len(c["title"]))), r"'title': holds int64 values \(expected strings\)"),
    (lambda c: dict(c, video_id=np.concatenate([[""], c["video_id"][1:]])), r"row 0: feature 'video_id': empty"),
    (lambda c: dict(c, image_embedding=np.where(np.arange(len(c["video_id"]))[:, None] == 4, np.nan,
                                                c["image_embedding"]).astype(np.float32)),
     r"^the catalog, row 4: feature 'image_embedding': NaN value \(expected finite float32 values\)"),
    (lambda c: dict(c, duration_s=np.concatenate([c["duration_s"][:6], [np.inf], c["duration_s"][7:]])),
     r"row 6: feature 'duration_s': infinite value"),
    # Finite as float64, infinite in the export's float32.
    (lambda c: dict(c, audio_embedding=np.where(np.arange(len(c["video_id"]))[:, None] == 2, 1e300,
                                                c["audio_embedding"].astype(np.float64))),
     r"row 2: feature 'audio_embedding': infinite value"),
])
def test_a_bad_catalog_is_refused_and_nothing_is_written(setup, change, message):
    before = sorted(os.listdir(setup.model_dir))
    with pytest.raises(DataValidationError, match=message):
        refresh_catalog(setup.model_dir, change(setup.new))
    assert sorted(os.listdir(setup.model_dir)) == before


def test_a_bad_row_names_the_row_of_the_whole_catalog_read_from_several_files(setup):
    """A row number counts the rows of the catalog as passed, across every file it was read from: the
    message says so rather than pinning it on the list of files."""
    bad = dict(setup.new, image_embedding=setup.new["image_embedding"].copy())
    bad["image_embedding"][9, 3] = np.nan
    with pytest.raises(DataValidationError, match=r"^the catalog read from a/\*\.parquet, b\.csv \(rows counted "
                                                  r"across its files\), row 9: feature 'image_embedding': NaN"):
        refresh_catalog(setup.model_dir, bad, source="a/*.parquet, b.csv")
    empty = dict(setup.new, video_id=np.concatenate([setup.new["video_id"][:5], [""], setup.new["video_id"][6:]]))
    with pytest.raises(DataValidationError, match=r"\(rows counted across its files\), row 5: feature 'video_id'"):
        refresh_catalog(setup.model_dir, empty, source="a/*.parquet, b.csv")


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "64", None])
def test_a_bad_batch_size_is_refused_before_anything_is_read(setup, batch_size):
    before = sorted(os.listdir(setup.model_dir))
    with pytest.raises(ConfigError, match=r"batch_size: expected an int >= 1"):
        refresh_catalog(setup.model_dir, setup.new, batch_size=batch_size)
    assert sorted(os.listdir(setup.model_dir)) == before


def test_the_cli_refuses_a_batch_size_below_one(tmp_path, capsys):
    for value in ("0", "-3", "x"):  # refused by argparse, before any file is read
        with pytest.raises(SystemExit) as exit_info:
            main(["refresh-catalog", "--export", str(tmp_path), "--catalog", "unread.parquet", "--batch-size", value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--batch-size" in err and "expected a whole number >= 1" in err, err


def test_a_concurrent_export_is_never_followed_by_the_older_weights(setup, tmp_path, monkeypatch):
    """A version N + 1 (new weights) published while refreshing N: the refresh must not take N + 2 (TF Serving
    would serve N's weights as the newest); it fails, removes its temporary directory and touches nothing."""
    model_dir = _copy_of_first(setup, str(tmp_path))
    concurrent = os.path.join(model_dir, "2")
    original = refresh_lib.write_warmup_requests

    def export_meanwhile(*args, **kwargs):  # after the refresh chose 2, before it publishes
        original(*args, **kwargs)
        shutil.copytree(setup.first, concurrent)

    monkeypatch.setattr(refresh_lib, "write_warmup_requests", export_meanwhile)
    with pytest.raises(ConfigError, match=r"^version 2 appeared in .*video_rec while refreshing from version 1 .*"
                                          r"Run refresh-catalog again to refresh version 2\."):
        refresh_catalog(model_dir, setup.new)
    assert sorted(os.listdir(model_dir)) == ["1", "2"]  # no version 3, no temporary directory
    assert _digest(concurrent) == setup.first_digest and _digest(os.path.join(model_dir, "1")) == setup.first_digest
    monkeypatch.undo()
    # Published before the refresh started, after its caller resolved version 1 (the CLI reads its widths
    # first): refused at once, before the slow load.
    monkeypatch.setattr(refresh_lib, "_load", lambda *a: pytest.fail("loaded a version it must not refresh"))
    with pytest.raises(ConfigError, match=r"^version 2 appeared in .* while refreshing from version 1 "):
        refresh_catalog(model_dir, setup.new, from_version=1)
    assert sorted(os.listdir(model_dir)) == ["1", "2"]


def test_the_next_version_passes_numbered_directories_without_a_saved_model(setup, tmp_path):
    """A stray numbered directory above the latest version (no saved_model.pb: nothing TF Serving loads) is
    neither refreshed, nor taken over, nor mistaken for a concurrent export: the refresh goes past it."""
    model_dir = _copy_of_first(setup, str(tmp_path))
    os.mkdir(os.path.join(model_dir, "2"))
    refreshed = refresh_catalog(model_dir, setup.new)
    with open(os.path.join(refreshed, REFRESH_FILE), encoding="utf-8") as f:
        assert os.path.basename(refreshed) == "3" and json.load(f)["from_version"] == 1
    assert sorted(os.listdir(model_dir)) == ["1", "2", "3"] and os.listdir(os.path.join(model_dir, "2")) == []


def test_a_corrupt_saved_model_pb_is_a_config_error_naming_it(setup, tmp_path, capsys):
    model_dir = _copy_of_first(setup, str(tmp_path))
    path = os.path.join(model_dir, "1", "saved_model.pb")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:  # truncated mid-record, as by a full disk or an interrupted copy
        f.write(data[:len(data) // 2])
    for call in (lambda: refresh_catalog(model_dir, setup.new), lambda: refresh_lib.latest_video_inputs(model_dir)):
        with pytest.raises(ConfigError, match=rf"^{re.escape(path)}: not a readable SavedModel: "):
            call()
    catalog = write_table(setup.new, str(tmp_path / "catalog.parquet"), catalog_schema(8, 4))
    assert main(["refresh-catalog", "--export", model_dir, "--catalog", catalog]) == 2
    assert "not a readable SavedModel" in capsys.readouterr().err
    assert sorted(os.listdir(model_dir)) == ["1"]


def test_a_directory_without_a_version_is_refused(setup, tmp_path):
    with pytest.raises(ConfigError, match="no exported version to refresh"):
        refresh_catalog(str(tmp_path / "nothing"), setup.new)
    (tmp_path / "empty" / "1").mkdir(parents=True)  # a version directory without a SavedModel
    with pytest.raises(ConfigError, match="no exported version to refresh"):
        refresh_catalog(str(tmp_path / "empty"), setup.new)
    with pytest.raises(ConfigError, match="it is a version itself: pass its parent"):
        refresh_catalog(setup.first, setup.new)
    assert sorted(os.listdir(tmp_path / "empty")) == ["1"]


def test_a_failed_write_leaves_no_version(setup, tmp_path, monkeypatch):
    model_dir = _copy_of_first(setup, str(tmp_path))

    def crash(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    # After the SavedModel is written, before the rename: the worst moment.
    monkeypatch.setattr(refresh_lib, "write_warmup_requests", crash)
    with pytest.raises(RuntimeError, match="simulated"):
        refresh_catalog(model_dir, setup.new)
    assert sorted(os.listdir(model_dir)) == ["1"]


def test_the_refreshed_export_is_servable_by_a_tf_only_process(setup):
    """The op allowlist and the TF-only call of every signature (`test_servable`) hold for the refreshed
    export, which also still holds the encoding function a further refresh needs."""
    from test_servable import _CALL_EVERY_SIGNATURE, _env, _graph_ops, _unregistered
    from test_warmup import SIGNATURES  # a click model's signatures

    ops = _graph_ops(setup.refreshed)
    assert not [op for op in ops if "PyFunc" in op or op.startswith("IO>")]
    not_in_tf = _unregistered(ops, with_text=False)
    assert not (_unregistered(not_in_tf, with_text=True) if not_in_tf else set())
    result = subprocess.run([sys.executable, "-c", _CALL_EVERY_SIGNATURE, setup.refreshed,
                             setup.impressions["user_id"][0], "fresh-1"],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(outputs) == len(SIGNATURES) and all(value["shape"][0] == 3 and value["finite"]
                                     for values in outputs.values() for value in values.values())
    assert hasattr(setup.loaded[setup.refreshed], refresh_lib.ENCODE_FUNCTION)


@pytest.mark.parametrize("signature", ["serving_default", "retrieve", "rank", "embed_query", "embed_video"])
def test_random_requests_against_the_refreshed_export(setup, signature):
    """`test_serving_fuzz`'s requests and checks, fewer of them, against the refreshed export."""
    from hypothesis import HealthCheck, given, settings

    from test_serving_fuzz import _check, _requests

    fn = setup.loaded[setup.refreshed].signatures[signature]
    spec = fn.structured_input_signature[1]
    known = {"user_id": setup.impressions["user_id"][:20], "video_id": setup.new["video_id"][:20],
             "history": setup.new["video_id"][:20], "title": setup.new["title"][:10],
             "device": ["phone", "tv", "desktop"], "category": setup.new["category"][:5]}

    @settings(max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(_requests(spec, known))
    def run(request):
        batch = next(iter(request.values())).shape[0]
        _check(signature, fn(**{name: tf.constant(value, spec[name].dtype) for name, value in request.items()}), batch)

    run()


def test_the_cli_refreshes_from_catalog_files(setup, tmp_path, capsys):
    model_dir = _copy_of_first(setup, str(tmp_path))
    path = write_table(setup.new, str(tmp_path / "catalog" / "today.parquet"), catalog_schema(8, 4))
    assert main(["refresh-catalog", "--export", model_dir, "--catalog", path]) == 0
    out = capsys.readouterr().out
    assert f"refreshed {os.path.join(model_dir, '2')} from version 1: 3 added, 2 changed, 3 removed" in out
    loaded = tf.saved_model.load(os.path.join(model_dir, "2"))
    np.testing.assert_array_equal(loaded.catalog_embedding.numpy(),
                                  setup.loaded[setup.refreshed].catalog_embedding.numpy())
    bad = write_table({k: v for k, v in setup.new.items() if k != "category"}, str(tmp_path / "bad.csv"),
                      catalog_schema(8, 4))
    assert main(["refresh-catalog", "--export", model_dir, "--catalog", bad]) == 2
    assert "category" in capsys.readouterr().err
    assert main(["refresh-catalog", "--export", str(tmp_path / "none"), "--catalog", path]) == 2
    assert "no exported version" in capsys.readouterr().err
    assert sorted(os.listdir(model_dir)) == ["1", "2"]
