"""`MixtureOfExperts`: expert networks shared between several prediction heads, and a gate per head.

A ranking stage that predicts more than one thing (a click, then how much of the
video is watched) must share what it learns between the heads without one head's
gradients drowning the other's. Each expert is a small MLP over the shared input;
each head reads a mixture of the experts' outputs:

    x ──► expert_1 … expert_E ──► [E outputs]
    x ──► gate_t (softmax over its experts) ──► head t's input = Σ_i gate_t,i(x) · expert_i(x)

The gates decide that sharing per example. Three layouts (`gates`):

* `"mmoe"`: every head gates all `experts` experts (multi-gate mixture-of-experts;
  Zhao et al., "Recommending what video to watch next", RecSys 2019).
* `"shared"`: no gates: every head reads the mean of the experts, a shared bottom
  (the classic multi-task baseline).
* `"ple"`: `experts` shared experts plus `experts` of each head's own; a head gates
  its own and the shared ones (one level of progressive layered extraction; Tang et
  al., RecSys 2020), so a head can keep features the other's gradients would erase.

Example:

>>> import tensorflow as tf
>>> moe = MixtureOfExperts(("click", "watch"), experts=3, expert_units=(8,))
>>> {task: tuple(out.shape) for task, out in moe(tf.ones([2, 5])).items()}
{'click': (2, 8), 'watch': (2, 8)}
>>> MixtureOfExperts.from_config(moe.get_config()).gates
'mmoe'
"""

from typing import Dict, List, Sequence

import tensorflow as tf

from tfrec_video.towers.mlp import MLP

GATES = ("mmoe", "shared", "ple")


class MixtureOfExperts(tf.keras.layers.Layer):
    """Experts and per-head gates (see module docstring).

    Args:
      tasks: the heads' names, e.g. `("click", "watch")`.
      experts: experts per group (the shared group; with `"ple"`, also each head's own).
      expert_units: each expert's ReLU widths; the last is the width each head reads.
      gates: `"mmoe"`, `"shared"` or `"ple"`.
      dropout: dropout after each expert layer.
      l2: L2 penalty on the experts' and gates' kernels.

    Call arguments:
      x: `[batch, features]`.
      training: whether dropout is on.

    Returns (call):
      `{task: [batch, expert_units[-1]]}`, the mixture each head reads.
    """

    def __init__(self, tasks: Sequence[str], experts: int = 4, expert_units: Sequence[int] = (64,),
                 gates: str = "mmoe", dropout: float = 0.0, l2: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.tasks = [str(task) for task in tasks]
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"MixtureOfExperts {self.name}: need distinct task names, got {self.tasks}.")
        if gates not in GATES:
            raise ValueError(f"MixtureOfExperts {self.name}: gates must be one of {GATES}, got {gates!r}.")
        if int(experts) < 1 or not expert_units:
            raise ValueError(f"MixtureOfExperts {self.name}: need at least one expert of at least one layer.")
        self.experts = int(experts)
        self.expert_units = [int(u) for u in expert_units]
        self.gates = gates
        self.dropout = float(dropout)
        self.l2 = float(l2)
        groups = ["shared"] + (self.tasks if gates == "ple" else [])
        # Group name -> its experts. A head reads `self.reads[task]`: the groups whose experts it mixes.
        self.groups = {group: [MLP(self.expert_units, dropout=self.dropout, l2=self.l2, name=f"{group}_expert_{i}")
                               for i in range(self.experts)] for group in groups}
        self.reads = {task: ["shared"] + ([task] if gates == "ple" else []) for task in self.tasks}
        regularizer = tf.keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        self.gate_layers = {} if gates == "shared" else {
            task: tf.keras.layers.Dense(self.experts * len(self.reads[task]), activation="softmax",
                                        kernel_regularizer=regularizer, name=f"{task}_gate")
            for task in self.tasks}

    def call(self, x, training=None) -> Dict[str, tf.Tensor]:
        outputs = {group: [expert(x, training=training) for expert in experts]
                   for group, experts in self.groups.items()}
        mixed = {}
        for task in self.tasks:
            stacked = tf.stack([out for group in self.reads[task] for out in outputs[group]], axis=1)  # [b, E, u]
            if self.gates == "shared":
                mixed[task] = tf.reduce_mean(stacked, axis=1)
            else:
                weights = tf.cast(self.gate_layers[task](x), stacked.dtype)  # [b, E]
                mixed[task] = tf.einsum("be,beu->bu", weights, stacked)
        return mixed

    def task_variables(self, task: str) -> List[tf.Variable]:
        """The trainable variables only head `task` reads: its gate and, with `"ple"`, its own experts."""
        layers = ([self.gate_layers[task]] if task in self.gate_layers else []) + (
            self.groups[task] if task in self.groups else [])
        return [variable for layer in layers for variable in layer.trainable_variables]

    def get_config(self):
        config = super().get_config()
        config.update(tasks=self.tasks, experts=self.experts, expert_units=self.expert_units, gates=self.gates,
                      dropout=self.dropout, l2=self.l2)
        return config
