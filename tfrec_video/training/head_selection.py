"""`HeadSelection`: each head of the model from the epoch that is best for it, inside one `model.fit`.

The two heads converge at different speeds. On a public ratings dataset the click
head's validation log-loss was best at epoch 3-5 while retrieval's Recall@100
still rose until epoch 9-10, so one early-stopping monitor restores one head
overfit or the other undertrained. This callback selects them in two phases:

1. **Joint** (`model.trained_heads = "both"`): both losses train everything.
   After each epoch it keeps a copy of all weights when the retrieval monitor
   improves, and of the ranking head's own weights (`model.ranking_variables`:
   the head and the target attention) when the ranking monitor improves. When
   the retrieval monitor has not improved for `patience` epochs, retrieval is
   done: every weight goes back to the best retrieval epoch.
2. **Ranking** (`model.trained_heads = "ranking"`): the towers are frozen as they
   are at the best retrieval epoch, and the ranking head alone goes on training
   on them, from its best joint-epoch weights or from those of the retrieval
   epoch, whichever validates better on these towers. It stops after `patience`
   epochs without improvement and keeps its best epoch.

3. **Watch** (`model.trained_heads = "watch"`, a model with a watch head only): the
   ranking phase selected the whole ranking head on the click monitor. The watch
   head's own weights (`model.watch_variables`: its tower, its gate and, with
   `"ple"`, its own experts) then go on training alone on the watch loss, from
   the click-selected head, and keep their best epoch on `watch_monitor`
   (`val_watch_loss`); the click head and the experts it reads are not changed.
   The watch head is so selected on its own metric, like the other two, without
   undoing the click head's selection.

The ranking head reads the towers' encodings, so its best joint weights do not
simply combine with towers from a later epoch; the second phase fits the head to
the towers that are exported, and is selected on the ranking monitor itself.
When the epochs run out during the joint phase, retrieval keeps its best epoch
and the ranking head the better, on validation, of its best joint weights and
those of that epoch; when they run out before the watch phase, the watch head
keeps the weights of the click head's epoch.

Put it after `RetrievalRecall` in the callback list (its `val_recall_at_K` must
be in the logs) and give `fit` validation data. `fit`'s `epochs` bounds both
phases together. What was selected is in `selected` after training:

    {"retrieval_epoch": 4, "ranking_epoch": 6, "ranking_phase": "ranking",
     "ranking_initialised_from_epoch": 2, "retrieval": 0.41, "ranking": 0.312, ...}

Epochs are 1-based, as in the Keras log. With `state_dir`, the phase, the best
values and the weight copies are written after every epoch and read back at the
start of training, so a run resumed by `BackupAndRestore` goes on in its phase.

Example:

>>> recall = RetrievalRecall(validation_paths, catalog, schema, k=100)          # doctest: +SKIP
>>> heads = HeadSelection("val_recall_at_100", "val_logloss", validation_data=validation)  # doctest: +SKIP
>>> model.fit(train, validation_data=validation, epochs=20, callbacks=[recall, heads])  # doctest: +SKIP
>>> heads.selected["retrieval_epoch"], heads.selected["ranking_epoch"]          # doctest: +SKIP
(4, 6)
"""

import json
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfrec_video.distribute import is_chief
from tfrec_video.errors import ConfigError, shorten

_STATE = "head_selection.json"
_WEIGHTS = "head_selection_{}.npz"


def _higher_is_better(monitor: str) -> bool:
    name = monitor[4:] if monitor.startswith("val_") else monitor
    return not (name.endswith("loss") or name == "logloss")


class HeadSelection(tf.keras.callbacks.Callback):
    """Selects the retrieval and the ranking weights on their own validation metrics (see module docstring).

    Args:
      retrieval_monitor: the retrieval metric in the epoch logs, e.g. `val_recall_at_100`.
      ranking_monitor: the ranking metric: `val_logloss`, `val_auc` or `val_ranking_loss`.
      watch_monitor: the watch head's metric (a model with one), `val_watch_loss`.
      patience: epochs without improvement that end a phase.
      min_delta: the smallest change that counts as an improvement.
      validation_data: the validation data given to `fit` (batched), used to compare the two starts
        of the ranking phase; without it the phase starts from the retrieval epoch's head.
      validation_steps: steps of `validation_data`, when it repeats.
      ranking_learning_rate_scale: the optimizer's learning rate is multiplied by this in the ranking
        phase: the head is fine-tuned to towers it has nearly fitted already, and a whole epoch at the
        joint rate overfits it.
      state_dir: where to keep the state across a resumed run (None: memory only).
      verbose: 1 prints a line when a phase ends.
    """

    def __init__(self, retrieval_monitor: str = "val_recall_at_100", ranking_monitor: str = "val_logloss",
                 patience: int = 1, min_delta: float = 0.0, validation_data=None,
                 validation_steps: Optional[int] = None, ranking_learning_rate_scale: float = 0.1,
                 state_dir: Optional[str] = None, verbose: int = 0, watch_monitor: str = "val_watch_loss"):
        super().__init__()
        if not isinstance(patience, int) or patience < 1:
            raise ConfigError(f"HeadSelection: patience must be a positive integer, got {shorten(patience)}.")
        for name, monitor in (("retrieval_monitor", retrieval_monitor), ("ranking_monitor", ranking_monitor),
                              ("watch_monitor", watch_monitor)):
            if not isinstance(monitor, str) or not monitor.startswith("val_"):
                raise ConfigError(f"HeadSelection: {name} must be a validation metric (val_...), got "
                                  f"{shorten(monitor)}.")
        self.retrieval_monitor = retrieval_monitor
        self.ranking_monitor = ranking_monitor
        self.watch_monitor = watch_monitor
        self.patience = patience
        self.min_delta = abs(float(min_delta))
        self.validation_data = validation_data
        self.validation_steps = validation_steps
        if not 0 < ranking_learning_rate_scale <= 1:
            raise ConfigError("HeadSelection: ranking_learning_rate_scale must be in (0, 1], got "
                              f"{shorten(ranking_learning_rate_scale)}.")
        self.ranking_learning_rate_scale = float(ranking_learning_rate_scale)
        self.state_dir = state_dir
        self.verbose = verbose
        self.selected: Dict[str, object] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def _better(self, monitor: str, value: float, best: Optional[float]) -> bool:
        if best is None:
            return bool(np.isfinite(value))
        if _higher_is_better(monitor):
            return value > best + self.min_delta
        return value < best - self.min_delta

    def _value(self, logs, monitor) -> float:
        if not logs or monitor not in logs:
            raise ConfigError(
                f"HeadSelection: {shorten(monitor)} is not in the epoch logs (they have {sorted(logs or {})}). Pass "
                "validation_data to fit, and put RetrievalRecall before HeadSelection in the callbacks.")
        return float(logs[monitor])

    def _numeric_weights(self) -> List[tf.Variable]:
        """Every numeric variable of the model: what a snapshot holds. (The string ids of the catalog
        table never change, and would need pickle to be written.)"""
        return [v for v in self.model.weights if v.dtype != tf.string]

    def _ranking_weights(self) -> List[np.ndarray]:
        return [v.numpy() for v in self.model.ranking_variables]

    def _set_ranking_weights(self, values: List[np.ndarray]) -> None:
        for variable, value in zip(self.model.ranking_variables, values):
            variable.assign(value)

    def _watch_weights(self) -> List[np.ndarray]:
        return [v.numpy() for v in self.model.watch_variables]

    def _set_watch_weights(self, values: List[np.ndarray]) -> None:
        for variable, value in zip(self.model.watch_variables, values):
            variable.assign(value)

    def _set_phase(self, phase: str) -> None:
        self.state["phase"] = phase
        self.model.trained_heads = phase if phase in ("ranking", "watch") else "both"
        # The joint rate is kept in the state: a resumed run restores the optimizer at the scaled rate.
        rate = self.model.optimizer.learning_rate
        if phase != "joint" and self.state["joint_learning_rate"] is None:
            self.state["joint_learning_rate"] = float(tf.keras.backend.get_value(rate))
            tf.keras.backend.set_value(rate, self.state["joint_learning_rate"] * self.ranking_learning_rate_scale)
        elif phase == "joint" and self.state["joint_learning_rate"] is not None:
            tf.keras.backend.set_value(rate, self.state["joint_learning_rate"])
            self.state["joint_learning_rate"] = None
        # fit calls model.train_function every step: a new trace takes effect from the next step.
        self.model.make_train_function(force=True)

    def _evaluate(self, monitor: str) -> Optional[float]:
        """`monitor` of the current weights on `validation_data`, or None without it."""
        if self.validation_data is None:
            return None
        logs = self.model.evaluate(self.validation_data, steps=self.validation_steps, verbose=0, return_dict=True)
        return float(logs[monitor[len("val_"):]])

    # -- the two phases ---------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        for attribute in ("ranking_variables", "trained_heads"):
            if not hasattr(self.model, attribute):
                raise ConfigError(f"HeadSelection needs a VideoRecModel, got {type(self.model).__name__}.")
        config = self.model.config
        if config.retrieval_weight <= 0 or config.ranking_weight <= 0:
            raise ConfigError("HeadSelection selects two heads: ModelConfig.retrieval_weight and ranking_weight "
                              "must both be > 0.")
        self.watch = bool(getattr(config, "watch", False))
        self.state = {"phase": "joint", "retrieval": None, "retrieval_epoch": None, "retrieval_epoch_ranking": None,
                      "ranking": None, "ranking_epoch": None, "ranking_phase": None,
                      "ranking_initialised_from_epoch": None, "ranking_phase_start": None, "last_epoch": None,
                      "joint_learning_rate": None, "watch": None, "watch_epoch": None, "watch_phase_start": None}
        self._weights = {"retrieval": None, "ranking": None, "watch": None}
        self._dirty = set()
        self._load()
        if self.state["phase"] != "joint":
            self._set_phase(self.state["phase"])

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        state = self.state
        state["last_epoch"] = number
        ranking = self._value(logs, self.ranking_monitor)
        if state["phase"] == "joint":
            retrieval = self._value(logs, self.retrieval_monitor)
            if self._better(self.retrieval_monitor, retrieval, state["retrieval"]):
                state.update(retrieval=retrieval, retrieval_epoch=number, retrieval_epoch_ranking=ranking)
                self._keep("retrieval", [v.numpy() for v in self._numeric_weights()])
            if self._better(self.ranking_monitor, ranking, state["ranking"]):
                state.update(ranking=ranking, ranking_epoch=number, ranking_phase="joint")
                self._keep("ranking", self._ranking_weights())
            if state["retrieval_epoch"] is not None and number - state["retrieval_epoch"] >= self.patience:
                self._start_ranking_phase(train=True)
        elif state["phase"] == "ranking":
            if self._better(self.ranking_monitor, ranking, state["ranking"]):
                state.update(ranking=ranking, ranking_epoch=number, ranking_phase="ranking")
                self._keep("ranking", self._ranking_weights())
            elif number - max(state["ranking_epoch"], state["ranking_phase_start"]) >= self.patience:
                if self.watch:
                    self._start_watch_phase()
                else:
                    self.model.stop_training = True
        else:
            watch = self._value(logs, self.watch_monitor)
            if self._better(self.watch_monitor, watch, state["watch"]):
                state.update(watch=watch, watch_epoch=number)
                self._keep("watch", self._watch_weights())
            elif number - max(state["watch_epoch"] or 0, state["watch_phase_start"]) >= self.patience:
                self.model.stop_training = True
        self._save()

    def _start_watch_phase(self):
        """The click head is selected: its weights back, and the watch head trains alone from them."""
        self._set_ranking_weights(self._weights["ranking"])
        start = self._evaluate(self.watch_monitor)
        self.state.update(watch=start, watch_epoch=self.state["ranking_epoch"],
                          watch_phase_start=self.state["last_epoch"])
        self._keep("watch", self._watch_weights())
        self._set_phase("watch")
        if self.verbose:
            print(f"HeadSelection: click head from epoch {self.state['ranking_epoch']}; training the watch head "
                  f"alone ({self.watch_monitor} {start if start is None else round(start, 4)})")

    def _keep(self, name: str, values: List[np.ndarray]) -> None:
        self._weights[name] = values
        self._dirty.add(name)

    def _start_ranking_phase(self, train: bool):
        """Retrieval is done: its best weights back, and the ranking head's better start on those towers."""
        state = self.state
        joint_head = self._weights["ranking"]
        for variable, value in zip(self._numeric_weights(), self._weights["retrieval"]):
            variable.assign(value)
        start_epoch, start_value = state["retrieval_epoch"], state["retrieval_epoch_ranking"]
        if state["ranking_epoch"] != state["retrieval_epoch"]:
            own = self._ranking_weights()
            self._set_ranking_weights(joint_head)
            value = self._evaluate(self.ranking_monitor)
            if value is not None and not self._better(self.ranking_monitor, start_value, value):
                start_epoch, start_value = state["ranking_epoch"], value
            else:
                self._set_ranking_weights(own)
        state.update(ranking=start_value, ranking_epoch=start_epoch, ranking_phase="joint",
                     ranking_initialised_from_epoch=start_epoch, ranking_phase_start=state["last_epoch"])
        self._keep("ranking", self._ranking_weights())
        if not train:
            return
        self._set_phase("ranking")
        if self.verbose:
            print(f"HeadSelection: retrieval from epoch {state['retrieval_epoch']} ({self.retrieval_monitor} "
                  f"{state['retrieval']:.4f}); training the ranking head alone from epoch {start_epoch}'s "
                  f"({self.ranking_monitor} {start_value:.4f})")

    def on_train_end(self, logs=None):
        state = self.state
        if state["retrieval_epoch"] is None:
            return  # no epoch finished
        if state["phase"] == "joint":
            # The epochs ran out before retrieval stopped improving: its best epoch, and the better head.
            self._start_ranking_phase(train=False)
        self._set_ranking_weights(self._weights["ranking"])
        watch_trained = state["phase"] == "watch"
        if watch_trained:
            self._set_watch_weights(self._weights["watch"])
        self._set_phase("joint")
        self.selected = {key: state[key] for key in ("retrieval_epoch", "retrieval", "ranking_epoch", "ranking",
                                                     "ranking_phase", "ranking_initialised_from_epoch")}
        self.selected.update(retrieval_monitor=self.retrieval_monitor, ranking_monitor=self.ranking_monitor)
        if self.watch:
            self.selected.update(watch_epoch=state["watch_epoch"] if watch_trained else state["ranking_epoch"],
                                 watch=state["watch"] if watch_trained else None, watch_monitor=self.watch_monitor)
        if self.verbose:
            print(f"HeadSelection: retrieval weights from epoch {state['retrieval_epoch']}, ranking weights from "
                  f"epoch {state['ranking_epoch']} ({state['ranking_phase']} phase)")
        self._clear()

    # -- state across a resumed run ---------------------------------------------------------------
    def _paths(self):
        return (os.path.join(self.state_dir, _STATE),
                {name: os.path.join(self.state_dir, _WEIGHTS.format(name)) for name in self._weights})

    def _save(self):
        # Every worker of a cluster holds the same state; one writes it, as with the run's other files.
        if self.state_dir is None or not is_chief(self.model.distribute_strategy):
            return
        os.makedirs(self.state_dir, exist_ok=True)
        state_path, weight_paths = self._paths()
        for name in sorted(self._dirty):
            tmp = weight_paths[name] + ".tmp.npz"
            np.savez(tmp, *self._weights[name])
            os.replace(tmp, weight_paths[name])
        self._dirty.clear()
        with open(state_path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(self.state, f)
        os.replace(state_path + ".tmp", state_path)

    def _load(self):
        if self.state_dir is None:
            return
        state_path, weight_paths = self._paths()
        if not os.path.isfile(state_path):
            return
        with open(state_path, encoding="utf-8") as f:
            self.state.update(json.load(f))
        for name, path in weight_paths.items():
            if os.path.isfile(path):
                with np.load(path, allow_pickle=False) as saved:
                    self._weights[name] = [saved[f"arr_{i}"] for i in range(len(saved.files))]

    def _clear(self):
        if self.state_dir is None or not is_chief(self.model.distribute_strategy):
            return
        state_path, weight_paths = self._paths()
        for path in [state_path, *weight_paths.values()]:
            if os.path.isfile(path):
                os.remove(path)
        if os.path.isdir(self.state_dir) and not os.listdir(self.state_dir):
            os.rmdir(self.state_dir)  # so that the backup directory around it can go too
