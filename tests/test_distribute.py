"""tf.distribute: strategies and roles, splitting the input between workers, the replica loss scaling,
MirroredStrategy on two CPU devices and MultiWorkerMirroredStrategy with two local worker processes.

TensorFlow fixes its devices and its collective ops when it starts, and this pytest process started it
long ago: the strategies with several replicas run in fresh subprocesses, whose scripts are below.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import tfrec_video  # noqa: F401  (before TensorFlow: tf.keras must be Keras 2)
import tensorflow as tf
from tensorflow.python.distribute import input_ops  # what tf.distribute applies per worker (auto-sharding)

from tfrec_video.data import read_table, write_table
from tfrec_video.data.files import shard_files
from tfrec_video.data.pipeline import distributed_impressions, impressions_dataset, load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.distribute import is_chief, make_strategy, num_workers, task, tf_config, worker_dir
from tfrec_video.errors import ConfigError
from toy import toy_data

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
COLUMNS = ("user_id", "history", "hour", "device", "video_id", "clicked")
FILES, ROWS_PER_FILE = 4, 100
TIMEOUT_S = 360


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A catalog and the same training impressions as 4 TFRecord (one GZIP), 4 Parquet and 4 CSV files.

    Every user id names its file (`f2-17`: file 2, row 17), so a reader's rows say which files it read.
    """
    directory = tmp_path_factory.mktemp("distribute")
    catalog, impressions = toy_data(n_rows=FILES * ROWS_PER_FILE)
    write_table(catalog, directory / "catalog" / "part-0.csv", catalog_schema(8, 4).select(list(catalog)))
    for i in range(FILES):
        rows = {k: impressions[k][i * ROWS_PER_FILE:(i + 1) * ROWS_PER_FILE] for k in COLUMNS}
        rows["user_id"] = np.array([f"f{i}-{u}" for u in rows["user_id"]], object)
        for name in (f"tfrecord/part-{i}.tfrecord" + (".gz" if i == 2 else ""), f"parquet/part-{i}.parquet",
                     f"csv/part-{i}.csv"):
            write_table(rows, directory / f"train_{name}", impressions_schema(5))
    return directory


def _files_read(dataset):
    """The file numbers whose rows `dataset` (batches with `user_id`) yields, and how many rows."""
    users = [u.decode() for batch in dataset.as_numpy_iterator() for u in batch["user_id"]]
    return sorted({int(u.split("-")[0][1:]) for u in users}), len(users)


# -- strategies, TF_CONFIG and roles ------------------------------------------------------------------


def test_make_strategy_names():
    strategy = make_strategy("default")
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1
    with pytest.raises(ConfigError, match="unknown distribution strategy 'mirroring'.*'multi_worker'"):
        make_strategy("mirroring")
    with pytest.raises(ConfigError, match="devices= applies to 'mirrored' only"):
        make_strategy("default", devices=["/cpu:0"])
    assert num_workers(strategy) == 1 and is_chief(strategy)


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', 'needs a "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', 'needs a "task"'),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "index 2"),
])
def test_a_malformed_tf_config_is_a_config_error(monkeypatch, raw, message):
    monkeypatch.setenv("TF_CONFIG", raw)
    with pytest.raises(ConfigError, match=message):
        tf_config()


def test_task_comes_from_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config() == {} and task() == (None, 0)
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert task() == ("worker", 1)
    # A process outside MultiWorkerMirroredStrategy is its own chief, whatever TF_CONFIG says.
    assert is_chief(make_strategy("default"))


def test_the_chief_writes_into_the_directory_itself(tmp_path):
    with worker_dir(str(tmp_path / "saved_models")) as directory:
        assert directory == str(tmp_path / "saved_models")
        (tmp_path / "saved_models" / "kept").write_text("x")
    assert (tmp_path / "saved_models" / "kept").exists()


# -- splitting the input between workers --------------------------------------------------------------


def test_tfrecord_is_auto_sharded_by_file(data_dir):
    catalog = load_catalog(str(data_dir / "catalog"), catalog_schema(8, 4))
    data = impressions_dataset(str(data_dir / "train_tfrecord"), catalog, impressions_schema(5), batch_size=16,
                               shuffle=True, seed=3, shuffle_buffer=50)
    policy = data.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.FILE
    # What tf.distribute does to the dataset on each of 2 workers: every worker reads whole files of its own.
    shares = [_files_read(input_ops.auto_shard_dataset(data, 2, worker, 2)) for worker in (0, 1)]
    files = [share[0] for share in shares]
    assert sorted(files[0] + files[1]) == list(range(FILES)) and not set(files[0]) & set(files[1]), files
    assert [share[1] for share in shares] == [2 * ROWS_PER_FILE] * 2  # whole files, GZIP ones included


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_parquet_and_csv_split_their_files_between_input_pipelines(data_dir, fmt):
    catalog = load_catalog(str(data_dir / "catalog"), catalog_schema(8, 4))
    paths = str(data_dir / f"train_{fmt}")
    # Read in Python, these cannot be auto-sharded by file: left to model.fit they split by row.
    assert read_table(paths, impressions_schema(5)).options().experimental_distribute.auto_shard_policy == \
        tf.data.experimental.AutoShardPolicy.DATA
    shares = []
    for pipeline in (0, 1):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline,
                                             num_replicas_in_sync=2)
        data = impressions_dataset(paths, catalog, impressions_schema(5), batch_size=16, shuffle=True, seed=3,
                                   input_context=context)
        assert data.element_spec["user_id"].shape.as_list() == [None]
        assert max(len(b["user_id"]) for b in data.as_numpy_iterator()) == 8  # a replica's half of the batch
        shares.append(_files_read(data))
    files = [share[0] for share in shares]
    assert sorted(files[0] + files[1]) == list(range(FILES)) and not set(files[0]) & set(files[1]), files
    assert [share[1] for share in shares] == [2 * ROWS_PER_FILE] * 2


def test_fewer_files_than_workers_and_uneven_batches_are_config_errors(data_dir):
    assert shard_files(["a", "b", "c"], 1, 2) == ["b"]
    with pytest.raises(ConfigError, match="1 input file.*cannot be split between 2 workers"):
        shard_files(["a"], 0, 2)
    catalog = load_catalog(str(data_dir / "catalog"), catalog_schema(8, 4))
    one_file = str(data_dir / "train_parquet" / "part-0.parquet")
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    with pytest.raises(ConfigError, match="cannot be split between 2 workers"):
        impressions_dataset(one_file, catalog, impressions_schema(5), batch_size=16, input_context=context)
    three = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=3)
    with pytest.raises(ConfigError, match="global batch size 16 does not divide between 3 replicas"):
        impressions_dataset(one_file, catalog, impressions_schema(5), batch_size=16, input_context=three)


def test_the_default_strategy_reads_the_plain_dataset(data_dir):
    catalog = load_catalog(str(data_dir / "catalog"), catalog_schema(8, 4))
    for fmt in ("tfrecord", "parquet"):
        train = distributed_impressions(make_strategy("default"), str(data_dir / f"train_{fmt}"), catalog,
                                        impressions_schema(5), 64)
        assert isinstance(train.data, tf.data.Dataset) and train.steps is None
        assert _files_read(train.data) == (list(range(FILES)), FILES * ROWS_PER_FILE)


# -- several replicas, in subprocesses ----------------------------------------------------------------

MIRRORED_SCRIPT = '''
"""MirroredStrategy over two logical CPU devices, which must exist before TensorFlow starts."""
import json
import os
import sys

import tfrec_video  # noqa: F401
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np
from toy import SMALL, toy_data
from tfrec_video.data.pipeline import load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.distribute import make_strategy
from tfrec_video.features import adapt
from tfrec_video.models import ModelConfig, VideoRecModel
from tfrec_video.training import TrainingConfig, fit_model

data_dir, out = sys.argv[1], sys.argv[2]
mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
default = make_strategy("default")
catalog, impressions = toy_data(n_rows=256)
vocabularies = adapt(catalog, impressions, title_vocabulary_size=80)
batch = {k: v[:64] for k, v in impressions.items()}


def build(strategy, initial=None, **overrides):
    # Plain SGD, whose step is proportional to the gradient (unlike Adam), so a wrongly scaled loss shows.
    # No id or ranking dropout: two processes of random draws would differ.
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        model = VideoRecModel(ModelConfig(**SMALL, video_id_dropout=0.0, user_id_dropout=0.0, ranking_dropout=0.0,
                                          **overrides),
                              vocabularies, catalog=catalog)
        model(batch)
        if initial is not None:
            model.set_weights(initial)
        model.compile(tf.keras.optimizers.SGD(0.5))
    return model


def fit(model, steps):
    history = model.fit(tf.data.Dataset.from_tensor_slices(batch).batch(64).repeat(steps), verbose=0)
    return [w.numpy() for w in model.trainable_weights], history.history["loss"][-1]


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


result = {"replicas": mirrored.num_replicas_in_sync}
# Ranking only (no in-batch negatives): two replicas on the global batch take the step of one device.
one = build(default, ranking_weight=1.0, retrieval_weight=0.0)
initial, before = one.get_weights(), [w.numpy() for w in one.trainable_weights]
after_one, loss_one = fit(one, steps=2)
after_two, loss_two = fit(build(mirrored, initial, ranking_weight=1.0, retrieval_weight=0.0), steps=2)
result["ranking"] = dict(moved=max_diff(after_one, before), diff=max_diff(after_one, after_two),
                         loss_one=loss_one, loss_two=loss_two)
# The joint model: the retrieval softmax of each replica sees only its half of the batch, so the step is
# the gradient of the mean of the two halves losses, computed here by hand on one device.
one = build(default)
initial = one.get_weights()
with tf.GradientTape() as tape:
    loss = (one.compute_loss({k: v[:32] for k, v in batch.items()}, training=True)
            + one.compute_loss({k: v[32:] for k, v in batch.items()}, training=True)) / 2
    # The ranking head's L2 penalty is part of every step's loss.
    total = loss + tf.add_n(one.losses)
one.optimizer.apply_gradients(zip(tape.gradient(total, one.trainable_weights), one.trainable_weights))
after_two, loss_two = fit(build(mirrored, initial), steps=1)
result["joint"] = dict(diff=max_diff([w.numpy() for w in one.trainable_weights], after_two),
                       loss_halves=float(loss), loss_two=loss_two)
# fit_model from Parquet files: the input comes from distribute_datasets_from_function. With validation
# data, HeadSelection, the calibration and the list blend run under the strategy too.
files = os.path.join(data_dir, "train_parquet")
model, history = fit_model(load_catalog(os.path.join(data_dir, "catalog"), catalog_schema(8, 4)), files,
                           impressions_schema(5), ModelConfig(**SMALL),
                           TrainingConfig(batch_size=64, epochs=4, shuffle_buffer=256, head_patience=1),
                           validation_paths=files, verbose=0, strategy=mirrored)
probability = model({k: v[:8] for k, v in impressions.items()})["click_probability"].numpy()
result["fit_model"] = dict(loss=history.history["loss"], finite=bool(np.isfinite(probability).all()),
                           variable=type(model.query_tower.mlp.trainable_weights[0]).__name__,
                           selection=history.selection, calibration=history.calibration,
                           list_blend=history.list_blend["weights"], trained_heads=model.trained_heads)
with open(out, "w") as f:
    json.dump(result, f)
'''

WORKER_SCRIPT = '''
"""One worker of a two-worker MultiWorkerMirroredStrategy cluster; TF_CONFIG says which."""
import json
import os
import sys

import tfrec_video  # noqa: F401
from tfrec_video.distribute import is_chief, make_strategy, task, worker_dir

# First: MultiWorkerMirroredStrategy sets up the collective ops when TensorFlow starts.
strategy = make_strategy("multi_worker")

from toy import SMALL
from tfrec_video.data.pipeline import load_catalog
from tfrec_video.data.schema import catalog_schema, impressions_schema
from tfrec_video.models import ModelConfig
from tfrec_video.serving.export import export_saved_model
from tfrec_video.training import TrainingConfig, fit_model

data_dir, out_dir = sys.argv[1], sys.argv[2]
catalog = load_catalog(os.path.join(data_dir, "catalog"), catalog_schema(8, 4))
result = {"task": list(task(strategy)), "chief": is_chief(strategy), "replicas": strategy.num_replicas_in_sync}
# TFRecord: 3 files (one GZIP) for 2 workers, so one worker reads twice the rows of the other and must not
# run out first. Parquet: all 4 files.
for fmt, paths in (("tfrecord", "train_tfrecord/part-[0-2].*"), ("parquet", "train_parquet")):
    model, history = fit_model(catalog, os.path.join(data_dir, paths), impressions_schema(5),
                               ModelConfig(**SMALL), TrainingConfig(batch_size=64, epochs=1, shuffle_buffer=256),
                               verbose=0, strategy=strategy)
    result[fmt] = history.history["loss"]
# Every worker exports (saving all-reduces the metric variables); only the copy of the chief stays.
with worker_dir(os.path.join(out_dir, "saved_models"), strategy) as base_dir:
    result["export"] = export_saved_model(model, catalog, base_dir, name="video_rec", k=10, n=5)
with open(os.path.join(out_dir, "worker-%d.json" % task(strategy)[1]), "w") as f:
    json.dump(result, f)
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, TESTS] + [p for p in [env.get("PYTHONPATH")] if p])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env


def _start(script, args, log, **env):
    with open(log, "wb") as out:
        # A session of its own, so that a stuck process and its children can be killed as one group.
        return subprocess.Popen([sys.executable, str(script)] + [str(a) for a in args], stdout=out,
                                stderr=subprocess.STDOUT, env=_env(**env), start_new_session=True)


def _wait_all(processes, logs):
    """Waits for every process until TIMEOUT_S has passed in all; kills them all on a timeout or a failure."""
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        failed = [p for p in processes if p.poll() is None or p.returncode != 0]
        if failed:
            for process in processes:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
    if any(p.returncode != 0 for p in processes):
        tails = []
        for process, log in zip(processes, logs):
            with open(log, errors="replace") as f:
                tails.append(f"--- {log} (exit {process.returncode})\n{f.read()[-3000:]}")
        pytest.fail("\n".join(tails))


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))  # all bound at once, so the ports differ
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_mirrored_strategy_on_two_cpus_takes_one_devices_step(data_dir, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    out = tmp_path / "result.json"
    _wait_all([_start(script, [data_dir, out], tmp_path / "log.txt")], [tmp_path / "log.txt"])
    result = json.loads(out.read_text())
    assert result["replicas"] == 2
    ranking = result["ranking"]
    # The step is 0.2 at the largest weight: a loss summed instead of averaged over replicas would double it.
    assert ranking["moved"] > 0.05 and ranking["diff"] < 1e-5, ranking
    assert ranking["loss_two"] == pytest.approx(ranking["loss_one"], rel=1e-5)  # logged as a mean over replicas
    joint = result["joint"]
    assert joint["diff"] < 1e-5 and joint["loss_two"] == pytest.approx(joint["loss_halves"], rel=1e-5), joint
    fitted = result["fit_model"]
    assert 2 <= len(fitted["loss"]) <= 4 and np.isfinite(fitted["loss"]).all() and fitted["finite"], fitted
    assert fitted["variable"] == "MirroredVariable"
    selection = fitted["selection"]
    assert 1 <= selection["retrieval_epoch"] <= len(fitted["loss"]) and fitted["trained_heads"] == "both"
    assert fitted["calibration"]["scale"] > 0 and len(fitted["list_blend"]) == 3


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_with_two_worker_processes(data_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    ports = _free_ports(2)
    processes, logs = [], []
    for index in range(2):
        config = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
        logs.append(tmp_path / f"worker-{index}.log")
        processes.append(_start(script, [data_dir, out], logs[-1], TF_CONFIG=json.dumps(config)))
    _wait_all(processes, logs)

    chief, other = (json.loads((out / f"worker-{i}.json").read_text()) for i in range(2))
    assert chief["task"] == ["worker", 0] and chief["chief"] and not other["chief"]
    assert chief["replicas"] == other["replicas"] == 2
    for fmt in ("tfrecord", "parquet"):
        # One synchronous run: the logged loss is all-reduced, the same on both workers.
        assert np.isfinite(chief[fmt]).all() and chief[fmt] == pytest.approx(other[fmt]), (chief, other)
    # The chief's export is the usual one; the other worker wrote its copy to a temp dir it then deleted.
    assert chief["export"] == str(out / "saved_models" / "video_rec" / "1")
    assert sorted(os.listdir(out / "saved_models")) == ["video_rec"]
    assert sorted(os.listdir(out / "saved_models" / "video_rec")) == ["1"]
    assert "workertemp_1" in other["export"] and not os.path.exists(other["export"])

    import tensorflow_text  # noqa: F401  (the WordPiece ops, as any client loading the export needs)

    loaded = tf.saved_model.load(chief["export"])
    assert {"serving_default", "retrieve", "rank", "embed_query", "embed_video"} <= set(loaded.signatures)
    served = loaded.signatures["serving_default"](
        user_id=tf.constant(["f0-u1", "never-seen"]), history=tf.constant([["v1", "v2", "", "", ""], [""] * 5]),
        hour=tf.constant([20, 3], tf.int64), device=tf.constant(["tv", "phone"]))
    catalog_ids = {f"v{i}".encode() for i in range(60)}
    assert served["video_ids"].shape == (2, 5) and set(served["video_ids"].numpy().ravel()) <= catalog_ids
    assert np.isfinite(served["click_probability"].numpy()).all()
