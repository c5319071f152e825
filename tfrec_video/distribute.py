"""Training on several devices or machines with `tf.distribute`: strategies, roles, where to write.

    make_strategy("default")       one device: TensorFlow's default strategy (no distribution)
    make_strategy("mirrored")      one machine, every local GPU (or the CPU): MirroredStrategy
    make_strategy("multi_worker")  several machines listed in TF_CONFIG: MultiWorkerMirroredStrategy

Everything is stock `tf.distribute`: the cluster is described by the `TF_CONFIG`
environment variable that every worker process is started with, and gradients
are all-reduced by TensorFlow's collective ops. There is no cluster code here.

Synchronous data parallelism. Each replica (one GPU, or the CPU) holds a copy of
every variable and trains on its slice of the global batch; gradients are summed
across replicas before the update. `fit_model(..., strategy=...)` therefore reads
`TrainingConfig.batch_size` as the *global* batch (each replica gets
`batch_size / num_replicas_in_sync` rows) and `VideoRecModel.train_step` divides
each replica's loss by the number of replicas, so N replicas take the same step
as one device on the same global batch.

Roles. Every worker runs the same program. The *chief* (`"chief"`, or worker 0
when the cluster has no chief) writes the artifacts: exports, `save_model`,
reports. Writing a model still needs every worker: metrics and other
sync-on-read variables are all-reduced when they are saved, so a chief saving
alone waits forever for the others. The rule, from TensorFlow's multi-worker
Keras tutorial, is that every worker writes, non-chief workers into a temporary
directory they delete afterwards; `worker_dir` does exactly that. The Keras
callbacks `ModelCheckpoint`, `BackupAndRestore` and `TensorBoard` apply the same
rule themselves: give them the real directory on every worker.

`MultiWorkerMirroredStrategy` must be created at the start of the program,
before any other TensorFlow op runs (TensorFlow configures its collective ops
once, at startup); `make_strategy` says so when that is not the case.

Example (each worker of a two-machine cluster runs this, with its own TF_CONFIG):

    # TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    import tfrec_video
    from tfrec_video.distribute import make_strategy, worker_dir
    strategy = make_strategy("multi_worker")          # first TensorFlow call of the program
    model, history = fit_model(catalog, "data/train/", imp_schema, model_config, training_config,
                               strategy=strategy)
    with worker_dir("saved_models", strategy) as base_dir:   # the chief's real dir, others' temp dir
        export_saved_model(model, catalog, base_dir, name="video_rec")
"""

import contextlib
import json
import logging
import os
from typing import Dict, Iterator, Optional, Sequence, Tuple

import tensorflow as tf

from tfrec_video.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker")

_log = logging.getLogger(__name__)


def make_strategy(name: str = "default", devices: Optional[Sequence[str]] = None) -> tf.distribute.Strategy:
    """A `tf.distribute.Strategy` by name.

    Args:
      name: `"default"` (TensorFlow's default strategy: one device, no
        distribution), `"mirrored"` (`MirroredStrategy`: one replica per local
        GPU, or the CPU when there is none) or `"multi_worker"`
        (`MultiWorkerMirroredStrategy` over the cluster in `TF_CONFIG`; without
        `TF_CONFIG` it runs as a single worker, with a warning).
      devices: for `"mirrored"` only: the devices to mirror over, e.g.
        `["/gpu:0", "/gpu:1"]`; default every local GPU.

    Returns:
      The strategy. Build and compile the model inside `strategy.scope()`, or
      pass it to `fit_model(..., strategy=strategy)`, which does.

    Raises:
      ConfigError: an unknown name, `devices` with a strategy other than
        `"mirrored"`, a malformed `TF_CONFIG`, or `"multi_worker"` asked for
        after TensorFlow already started its runtime.

    Example:

    >>> make_strategy("default").num_replicas_in_sync
    1
    >>> make_strategy("mirroring")
    Traceback (most recent call last):
    ...
    tfrec_video.errors.ConfigError: unknown distribution strategy 'mirroring'; expected one of ('default', 'mirrored', 'multi_worker').
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown distribution strategy {name!r}; expected one of {STRATEGIES}.")
    if devices is not None and name != "mirrored":
        raise ConfigError(f"make_strategy: devices= applies to 'mirrored' only, not {name!r}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=None if devices is None else list(devices))
    config = tf_config()
    if not config:
        _log.warning("make_strategy('multi_worker'): TF_CONFIG is not set, so this process is a cluster of one "
                     "worker. Set TF_CONFIG on every worker to train on several machines.")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        if "startup" not in str(e) and "initialized" not in str(e):
            raise
        raise ConfigError(
            "make_strategy('multi_worker') must run at the start of the program, before any other TensorFlow "
            f"operation: TensorFlow sets up its cross-worker communication once, at startup ({e}).") from None


def tf_config() -> Dict:
    """The parsed `TF_CONFIG` environment variable, `{}` when it is unset or empty.

    Raises:
      ConfigError: it is not a JSON object with a `cluster` of `worker`/`chief`
        address lists and a `task` naming one of them.

    Example:

    >>> import os
    >>> os.environ["TF_CONFIG"] = '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}'
    >>> tf_config()["task"]
    {'type': 'worker', 'index': 1}
    >>> del os.environ["TF_CONFIG"]
    """
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e}): {raw[:200]!r}.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not (cluster.get("worker") or cluster.get("chief")):
        raise ConfigError('TF_CONFIG needs a "cluster" with a "worker" (and optionally a "chief") list of '
                          f'"host:port" addresses; got {raw[:200]!r}.')
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise ConfigError('TF_CONFIG needs a "task": {"type": ..., "index": ...} naming one of its cluster\'s '
                          f"jobs {sorted(cluster)}; got {raw[:200]!r}.")
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise ConfigError(f"TF_CONFIG task index {index!r} is not a position in its cluster's "
                          f"{task['type']!r} list of {len(cluster[task['type']])}.")
    return config


def task(strategy: Optional[tf.distribute.Strategy] = None) -> Tuple[Optional[str], int]:
    """`(task_type, task_id)` of this process: `("worker", 1)`, `("chief", 0)`; `(None, 0)` outside a cluster.

    Read from the strategy's cluster resolver when it has one, else from `TF_CONFIG`.
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and getattr(resolver, "task_type", None):
        return resolver.task_type, int(resolver.task_id or 0)
    config = tf_config()
    if not config:
        return None, 0
    return config["task"]["type"], int(config["task"].get("index", 0))


def num_workers(strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Processes that train (chief and workers), each with one input pipeline; 1 outside a cluster.

    A `MirroredStrategy` or the default strategy is one worker whatever `TF_CONFIG` says.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return 1
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, sum(len(cluster.get(job, [])) for job in ("chief", "worker")))


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this process writes the run's artifacts (see module docstring).

    True outside a cluster and for any strategy but `MultiWorkerMirroredStrategy`;
    in a cluster, for the `"chief"` task, or worker 0 when there is no chief.

    Example:

    >>> is_chief(make_strategy("default"))
    True
    """
    strategy = strategy or tf.distribute.get_strategy()
    if num_workers(strategy) == 1:
        return True
    task_type, task_id = task(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not cluster.get("chief")


@contextlib.contextmanager
def worker_dir(path: str, strategy: Optional[tf.distribute.Strategy] = None) -> Iterator[str]:
    """The directory this worker writes `path`'s files to, for the duration of a `with` block.

    The chief gets `path` itself. Any other worker gets `path/workertemp_<task_id>`
    (the rule of TensorFlow's multi-worker Keras tutorial and of the Keras
    callbacks), which is deleted when the block ends, successfully or not. Every
    worker must run the block: saving a model reads its sync-on-read variables
    through an all-reduce that needs all of them.

    Args:
      path: the directory the artifacts belong in (created when missing).
      strategy: the training strategy; default the current one.

    Yields:
      The directory to write to.

    Example:

    >>> import tempfile
    >>> with worker_dir(tempfile.mkdtemp()) as directory:   # no cluster: the chief's own dir
    ...     directory.endswith("workertemp_0")
    False
    """
    path = os.fspath(path)
    if is_chief(strategy):
        tf.io.gfile.makedirs(path)
        yield path
        return
    temp = os.path.join(path, f"workertemp_{task(strategy)[1]}")
    tf.io.gfile.makedirs(temp)
    try:
        yield temp
    finally:
        if tf.io.gfile.exists(temp):
            tf.io.gfile.rmtree(temp)


@contextlib.contextmanager
def host_variables() -> Iterator[None]:
    """Variables created in the block are plain variables on this worker's CPU, even in a strategy's scope.

    For tables the model only reads and every worker fills identically (the
    catalog's ids, titles and embeddings in `CatalogTable`). Mirrored, they would
    be copied once per replica, and `MultiWorkerMirroredStrategy` would broadcast
    their initial values from the chief with collective ops, which refuse
    strings (`CollectiveBcastSend`: "Value for attr 'T' of string is not in the
    list of allowed values"). The block passes tf.distribute's `colocate_with`
    variable argument with the strategy's host device, the mechanism its own
    `experimental_make_numpy_dataset` uses for input held in variables. Outside
    a `MirroredStrategy` or `MultiWorkerMirroredStrategy` scope it changes nothing.

    Example:

    >>> strategy = make_strategy("mirrored")
    >>> with strategy.scope(), host_variables():
    ...     titles = tf.Variable(["a", "b"])
    >>> type(titles).__name__
    'ResourceVariable'
    """
    strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    mirrored = isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))
    # The worker's host CPU, as tf.distribute itself names it (a `SingleDevice`).
    host = getattr(strategy.extended, "_host_input_device", None) if mirrored else None
    if host is None:
        yield
        return

    def creator(next_creator, **kwargs):
        kwargs["colocate_with"] = host
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield
