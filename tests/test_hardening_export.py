"""Issue 16, exports: readable by a server running as another user, two exporters at once, stale
temporary directories of killed exports, and serving requests of the wrong shape refused naming the input.

One small model is saved and exported once, through `tfrec-video export`, for the whole module; the
file-system tests that need many exports stand a stub in for the SavedModel writer (the races and
modes are in the file system, not in TensorFlow) and run in a second or two each.
"""

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import types

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

from tfrec_video.cli.main import main
from tfrec_video.data.schema import catalog_schema
from tfrec_video.data.tables import write_table
from tfrec_video.errors import DataValidationError
from tfrec_video.models import save_model
from tfrec_video.serving import ExportedModel
from tfrec_video.serving import export as export_lib
from toy import LogRecords, small_model, toy_data

pytestmark = pytest.mark.bad_input

K, N = 8, 3
HISTORY, IMAGE_DIM, AUDIO_DIM = 5, 8, 4  # toy_data's widths
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def _host():
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _temp_name(version, pid, host=None, token="0123abcd"):
    """A temporary version directory's documented name: `.tmp-<version>-<host>-pid<pid>-<token>`."""
    return f".tmp-{version}-{_host() if host is None else host}-pid{pid}-{token}"


def _dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _plant(model_dir, name, mtime=None):
    """A half-written temporary version directory named `name` in `model_dir`."""
    path = os.path.join(model_dir, name)
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"half a model")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A toy model saved, then exported by `tfrec-video export` under umask 022 into a directory any
    user may traverse, with temporary directories of earlier exports planted beside the version."""
    catalog, impressions = toy_data(n_rows=300, history_length=HISTORY, image_dim=IMAGE_DIM, audio_dim=AUDIO_DIM)
    model = small_model(catalog, impressions, epochs=1)  # fitted once: save_model needs built weights
    work = tmp_path_factory.mktemp("hardening_export")
    model_path = save_model(model, str(work / "model"))
    catalog_path = write_table(catalog, str(work / "catalog.parquet"), catalog_schema(IMAGE_DIM, AUDIO_DIM))
    # pytest's own temporary directories are 0700: another user could not reach an export inside them.
    public = tempfile.mkdtemp(prefix="tfrec-video-export-")
    os.chmod(public, 0o755)
    try:
        export_dir = os.path.join(public, "saved_models")
        model_dir = os.path.join(export_dir, "video_rec")
        os.makedirs(model_dir)
        planted = {
            "dead": _plant(model_dir, _temp_name(1, _dead_pid())),
            # This process's pid, but the directory was last written long before this process started: a
            # killed export whose pid was reused since.
            "reused": _plant(model_dir, _temp_name(1, os.getpid(), token="4567cdef"), mtime=time.time() - 30 * 86400),
            "live": _plant(model_dir, _temp_name(1, os.getpid(), token="89abcdef")),
            "legacy": _plant(model_dir, ".tmp-1-k3j_x9zq"),  # mkdtemp's name, as older exports left it
        }
        records = LogRecords(logging.WARNING)
        logger = logging.getLogger("tfrec_video.export")
        logger.addHandler(records)
        old_umask = os.umask(0o022)
        try:
            code = main(["export", "--model", model_path, "--catalog", catalog_path, "--export-dir", export_dir,
                         "-k", str(K), "-n", str(N)])
        finally:
            os.umask(old_umask)
            logger.removeHandler(records)
        assert code == 0
        version_dir = os.path.join(model_dir, "1")
        # Loaded once: `ExportedModel` loads it with tf.saved_model.load, whose object the signature tests call.
        api = ExportedModel(version_dir)
        yield types.SimpleNamespace(model=model, catalog=catalog, impressions=impressions, model_path=model_path,
                                    catalog_path=catalog_path, export_dir=export_dir, model_dir=model_dir,
                                    version_dir=version_dir, planted=planted, warnings=records.messages,
                                    api=api, loaded=api._loaded)
    finally:  # also when the export fails
        shutil.rmtree(public, ignore_errors=True)


# -- 1. exports that TF Serving can read ----------------------------------------------------------------


def _modes(version_dir):
    """`{relative path: permission bits}` of the version directory and everything in it."""
    modes = {".": os.stat(version_dir).st_mode & 0o777}
    for folder, dirs, files in os.walk(version_dir):
        for name in dirs + files:
            path = os.path.join(folder, name)
            modes[os.path.relpath(path, version_dir)] = os.stat(path).st_mode & 0o777
    return modes


def _expect_modes(version_dir, directory_mode, file_mode):
    modes = _modes(version_dir)
    assert {"saved_model.pb", "variables", "assets.extra", os.path.join("assets.extra", "tf_serving_warmup_requests")} \
        <= set(modes)
    wrong = {path: oct(mode) for path, mode in modes.items()
             if mode != (directory_mode if os.path.isdir(os.path.join(version_dir, path)) else file_mode)}
    assert wrong == {}, f"expected directories {oct(directory_mode)} and files {oct(file_mode)}"


def test_a_cli_export_follows_the_umask(exported):
    """Under umask 022 the version directory is 0755 (not mkdtemp's 0700) and every file 0644."""
    _expect_modes(exported.version_dir, 0o755, 0o644)
    assert os.path.isdir(os.path.join(exported.version_dir, "variables"))


def test_a_saved_model_follows_the_umask(tmp_path):
    """`save_model` writes through mkdtemp too: its directory must not stay 0700, or `tfrec-video export`
    run as another user (a serving host's account) cannot read the model."""
    catalog, impressions = toy_data(n_rows=100, history_length=HISTORY, image_dim=IMAGE_DIM, audio_dim=AUDIO_DIM)
    model = small_model(catalog, impressions, epochs=1)
    old = os.umask(0o022)
    try:
        path = save_model(model, str(tmp_path / "model"))
    finally:
        os.umask(old)
    modes = _modes(path)
    assert modes["."] == 0o755 and modes["model.json"] == 0o644
    assert {oct(mode) for name, mode in modes.items() if name != "."} <= {"0o755", "0o644"}


_READ_AS_NOBODY = r"""
import os, sys
os.setgroups([])
os.setgid(65534)
os.setuid(65534)  # 'nobody', as a tensorflow_model_server service user
version_dir = sys.argv[1]
read = 0
for folder, dirs, files in os.walk(version_dir, onerror=lambda error: sys.exit(f"cannot list: {error}")):
    for name in files:
        with open(os.path.join(folder, name), "rb") as f:
            read += len(f.read())
for name in ("saved_model.pb", "variables/variables.index", "assets.extra/tf_serving_warmup_requests"):
    assert os.path.isfile(os.path.join(version_dir, name)), name
print("read", read)
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root to run a reader as another user (uid 65534, 'nobody')")
def test_another_user_reads_the_export(exported):
    """A server running as its own user reads saved_model.pb, the variables and the warmup file."""
    # The base interpreter, isolated: the reader must not need anything outside the export.
    python = os.path.realpath(sys.executable)
    result = subprocess.run([python, "-I", "-S", "-c", _READ_AS_NOBODY, exported.version_dir],
                            capture_output=True, text=True, cwd="/", timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) > 0


class _Module:
    """Stands in for `ServingModule`: what these tests check happens in the file system."""

    def __init__(self, *args, **kwargs):
        pass

    def signatures(self):
        return {}


def _save(module, directory, signatures=None):
    """Stands in for `tf.saved_model.save`: the files and folders a SavedModel has."""
    os.makedirs(os.path.join(directory, "variables"))
    os.makedirs(os.path.join(directory, "assets"))
    for name in ("saved_model.pb", "variables/variables.index", "assets/vocabulary.txt"):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"stub")


@pytest.fixture
def stub_writer(monkeypatch):
    """`export_saved_model` with the SavedModel writer stubbed; `.then(fn)` runs `fn(tmp)` before the rename."""
    hooks = []

    def write_warmup(directory, logs):
        path = os.path.join(directory, "assets.extra", "tf_serving_warmup_requests")
        os.makedirs(os.path.dirname(path))
        open(path, "wb").close()
        for hook in hooks:
            hook(directory)

    monkeypatch.setattr(export_lib, "ServingModule", _Module)
    monkeypatch.setattr(tf.saved_model, "save", _save)
    monkeypatch.setattr(export_lib, "warmup_requests", lambda module, name: [])
    monkeypatch.setattr(export_lib, "write_warmup_requests", write_warmup)
    return types.SimpleNamespace(then=hooks.append,
                                 export=lambda base, **kwargs: export_lib.export_saved_model(None, {}, str(base),
                                                                                            **kwargs))


@pytest.mark.parametrize("umask, directory_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640),
                                                              (0o002, 0o775, 0o664)])
def test_the_api_export_follows_any_umask(stub_writer, tmp_path, umask, directory_mode, file_mode):
    old = os.umask(umask)
    try:
        version_dir = stub_writer.export(tmp_path / "saved_models")
    finally:
        os.umask(old)
    _expect_modes(version_dir, directory_mode, file_mode)
    assert os.stat(os.path.dirname(version_dir)).st_mode & 0o777 == directory_mode  # the model directory too


# -- 2. two writers at once --------------------------------------------------------------------------


def test_a_version_taken_while_exporting_goes_to_the_next_number(stub_writer, tmp_path):
    """Another writer renames its version 1 into place after this export chose 1, before its rename."""
    base = tmp_path / "saved_models"
    model_dir = base / "video_rec"

    def another_writer_publishes_1(tmp):
        os.makedirs(model_dir / "1")
        (model_dir / "1" / "saved_model.pb").write_bytes(b"the other writer's model")

    stub_writer.then(another_writer_publishes_1)
    version_dir = stub_writer.export(base)
    assert os.path.basename(version_dir) == "2"
    assert (model_dir / "1" / "saved_model.pb").read_bytes() == b"the other writer's model"  # left alone
    assert sorted(os.listdir(model_dir)) == ["1", "2"]


def test_an_explicit_version_taken_meanwhile_is_never_overwritten(stub_writer, tmp_path):
    base = tmp_path / "saved_models"
    model_dir = base / "video_rec"
    stub_writer.then(lambda tmp: (os.makedirs(model_dir / "3"), (model_dir / "3" / "keep").write_text("mine")))
    with pytest.raises(FileExistsError, match=re.escape(os.path.join(str(model_dir), "3"))):
        stub_writer.export(base, version=3)
    assert os.listdir(model_dir) == ["3"] and (model_dir / "3" / "keep").read_text() == "mine"


# Exports the stub "model" into argv[1]; the writer waits until the other process has chosen its version too
# (both hold a temporary directory, or one has already renamed it), so both choose version 1.
_RACING_EXPORT = r"""
import os, sys, time
import tfrec_video
import tensorflow as tf
from tfrec_video.serving import export as export_lib

base = sys.argv[1]
model_dir = os.path.join(base, "video_rec")


class Module:  # the race is in the file system: no graph is needed
    def __init__(self, *args, **kwargs):
        pass

    def signatures(self):
        return {}


def save(module, directory, signatures=None):
    with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
        f.write(b"stub")


def wait_for_the_other_writer(directory, logs):
    deadline = time.time() + 300
    while len(os.listdir(model_dir)) < 2:
        if time.time() > deadline:
            sys.exit("the other exporter never chose its version")
        time.sleep(0.02)


export_lib.ServingModule = Module
tf.saved_model.save = save
export_lib.warmup_requests = lambda module, name: []
export_lib.write_warmup_requests = wait_for_the_other_writer
print(export_lib.export_saved_model(None, {}, base, name="video_rec"))
"""


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def test_two_processes_exporting_at_once_both_succeed(tmp_path):
    """Both choose version 1; one publishes 1, the other 2, and neither removes the other's temporary directory."""
    base = tmp_path / "saved_models"
    (base / "video_rec").mkdir(parents=True)
    writers = [subprocess.Popen([sys.executable, "-c", _RACING_EXPORT, str(base)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    results = [(w.returncode, out, err) for w in writers for out, err in [w.communicate(timeout=600)]]
    for code, out, err in results:
        assert code == 0, err[-3000:]
    published = sorted(os.path.basename(out.strip().splitlines()[-1]) for _, out, _ in results)
    assert published == ["1", "2"]
    assert sorted(os.listdir(base / "video_rec")) == ["1", "2"]  # no temporary directory left
    for version in published:
        assert (base / "video_rec" / version / "saved_model.pb").read_bytes() == b"stub"


@pytest.mark.slow
def test_two_cli_exports_into_one_directory_at_once(exported, tmp_path):
    """Two `tfrec-video export` processes into one --export-dir: both succeed, with distinct versions."""
    export_dir = tmp_path / "saved_models"
    command = [sys.executable, "-m", "tfrec_video", "export", "--model", exported.model_path, "--catalog",
               exported.catalog_path, "--export-dir", str(export_dir), "-k", str(K), "-n", str(N)]
    writers = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
               for _ in range(2)]
    results = [(w.returncode, out, err) for w in writers for out, err in [w.communicate(timeout=900)]]
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert sorted(os.listdir(export_dir / "video_rec")) == ["1", "2"]
    for version in ("1", "2"):
        assert tf.saved_model.contains_saved_model(str(export_dir / "video_rec" / version))


# -- 3. stale temporary directories ----------------------------------------------------------------------


def test_the_cli_export_removed_the_temporary_directories_of_killed_exports(exported):
    planted = exported.planted
    assert not os.path.exists(planted["dead"])      # its process is gone
    assert not os.path.exists(planted["reused"])    # its pid now belongs to a process started after it
    assert os.path.isdir(planted["live"])           # a live writer's: never touched
    assert os.path.isdir(planted["legacy"])         # cannot be judged: kept, and reported
    assert any(planted["legacy"] in message and "delete" in message for message in exported.warnings), \
        exported.warnings
    assert any(planted["dead"] in message for message in exported.warnings), exported.warnings
    assert sorted(e for e in os.listdir(exported.model_dir) if not e.startswith(".")) == ["1"]


def test_the_api_export_removes_stale_temporary_directories_only(stub_writer, tmp_path, caplog):
    model_dir = tmp_path / "saved_models" / "video_rec"
    model_dir.mkdir(parents=True)
    dead = _plant(str(model_dir), _temp_name(4, _dead_pid()))
    live = _plant(str(model_dir), _temp_name(4, os.getpid()))
    elsewhere = _plant(str(model_dir), _temp_name(4, _dead_pid(), host="another-host.example"))
    with caplog.at_level(logging.WARNING, logger="tfrec_video.export"):
        version_dir = stub_writer.export(tmp_path / "saved_models")
    assert os.path.basename(version_dir) == "1"
    assert not os.path.exists(dead)
    assert os.path.isdir(live) and os.path.isdir(elsewhere)
    assert dead in caplog.text and elsewhere in caplog.text and "another host" in caplog.text


# -- 11. serving inputs of the wrong shape -------------------------------------------------------------


def _valid_inputs(exported, signature):
    """A valid batch of 2 for each input of `signature`."""
    inputs = {}
    for name, spec in signature.structured_input_signature[1].items():
        # The impressions carry the catalog's features too (joined on video_id).
        if name == "exclude":
            value = [["v1", ""], ["v2", "no-such-video"]]
        elif name == "diversity":
            value = [0.0, 0.5]
        else:
            value = exported.impressions[name][:2]
        inputs[name] = tf.constant(value, spec.dtype)
    return inputs


def _shape(value):
    return "[" + ", ".join(str(d) for d in value.shape) + "]"


def _bad_requests(inputs):
    """`(changed inputs, the message the export must give)` for each kind of wrong shape `inputs` allow."""
    first = "user_id" if "user_id" in inputs else "video_id"
    other = sorted(name for name in inputs if name != first)[0]
    one_more = tf.concat([inputs[other], inputs[other][:1]], 0)
    bad = [({first: tf.reshape(inputs[first], [2, 1])}, f"{first}: expected shape [batch], got [2, 1]"),
           ({other: one_more}, f"{other}: expected batch size 2 (that of {first}), got shape {_shape(one_more)}")]
    if "history" in inputs:
        bad.append(({"history": tf.fill([2, HISTORY + 2], "v1")},
                    f"history: expected shape [batch, <= {HISTORY}], got [2, {HISTORY + 2}]"))
    if "image_embedding" in inputs:
        bad.append(({"image_embedding": tf.zeros([2, IMAGE_DIM + 1])},
                    f"image_embedding: expected shape [batch, {IMAGE_DIM}], got [2, {IMAGE_DIM + 1}]"))
        bad.append(({"audio_embedding": tf.zeros([2, AUDIO_DIM - 1])},
                    f"audio_embedding: expected shape [batch, {AUDIO_DIM}], got [2, {AUDIO_DIM - 1}]"))
    if "exclude" in inputs:
        bad.append(({"exclude": tf.constant(["v1", "v2"])}, "exclude: expected shape [batch, m], got [2]"))
    return bad


SIGNATURES = ["serving_default", "retrieve", "recommend_excluding", "retrieve_excluding", "recommend_diverse", "rank",
              "embed_query", "embed_video"]


@pytest.mark.parametrize("name", SIGNATURES)
def test_every_signature_refuses_a_wrong_shape_naming_the_input(exported, name):
    signature = exported.loaded.signatures[name]
    inputs = _valid_inputs(exported, signature)
    signature(**inputs)  # the valid request is answered
    bad = _bad_requests(inputs)
    assert len(bad) >= 3
    for changed, message in bad:
        with pytest.raises(tf.errors.InvalidArgumentError) as raised:
            signature(**dict(inputs, **changed))
        assert message in str(raised.value), (name, message, str(raised.value)[:600])


def test_a_narrower_history_is_padded_and_an_empty_batch_still_answers(exported):
    signature = exported.loaded.signatures["serving_default"]
    inputs = _valid_inputs(exported, signature)
    history = np.array([["v1", "v2", ""], ["v3", "", ""]], object)
    narrow = signature(**dict(inputs, history=tf.constant(history)))
    padded = signature(**dict(inputs, history=tf.constant(np.pad(history, [[0, 0], [0, HISTORY - 3]],
                                                                 constant_values=""))))
    for key in ("video_ids", "click_probability", "retrieval_score"):
        np.testing.assert_array_equal(narrow[key].numpy(), padded[key].numpy())
    empty = signature(**{name: value[:0] for name, value in inputs.items()})
    assert empty["video_ids"].shape == (0, N)


def test_the_exported_model_names_the_refused_input(exported):
    """`ExportedModel` turns the export's refusal into a DataValidationError naming the path and input."""
    model = exported.api
    features = _valid_inputs(exported, exported.loaded.signatures["rank"])
    wide = dict(features, history=tf.fill([2, HISTORY + 20], "v1"))
    with pytest.raises(DataValidationError) as raised:
        model.recommend(wide)
    error = raised.value
    assert error.feature == "history" and error.file == exported.version_dir
    assert f"got [2, {HISTORY + 20}]" in str(error) and f"[batch, <= {HISTORY}]" in str(error)
    assert "serving_default" in str(error)
    with pytest.raises(DataValidationError, match="feature 'video_id'.*got shape \\[3\\]"):
        model(dict(features, video_id=tf.constant(["v1", "v2", "v3"])))
    videos = _valid_inputs(exported, exported.loaded.signatures["embed_video"])
    with pytest.raises(DataValidationError, match=f"feature 'image_embedding'.*expected shape \\[batch, {IMAGE_DIM}\\]"):
        model.embed_videos(dict(videos, image_embedding=tf.zeros([2, 3])))
    assert model.recommend(features)["video_ids"].shape == (2, N)  # a valid request still answers
