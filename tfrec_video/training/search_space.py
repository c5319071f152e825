"""The `tune:` section of a run config: what `tfrec-video tune` searches, on which metric, for how long.

A hyper-parameter search samples `ModelConfig` and `TrainingConfig` fields, each
named `section.field`, and trains one run per sample. The section sits in the
same YAML/JSON file as the run it tunes (`tfrec-video train` ignores it):

```yaml
tune:
  objective: val_recall_at_100     # a key of the Keras epoch logs
  direction: maximize              # optional: losses are minimised, anything else maximised
  trials: 30                       # COMPLETE + PRUNED trials the study should hold
  space:                           # replaces the default space below
    model.temperature: {low: 0.05, high: 0.5, log: true}
    model.embedding_dim: {low: 32, high: 128, step: 32}
    model.history_pooling: {choices: [mean, attention]}
    model.query_hidden_units: [[64], [128, 64]]   # a plain list is shorthand for choices
    training.batch_size: {choices: [256, 512]}
```

**A parameter** is a range (`low`, `high`, optional `log` or `step`), sampled
as a float or an integer by the field's declared type (`ModelConfig.temperature`
is a float, `embedding_dim` an int), or a list of `choices` of any YAML values:
lists and mappings are allowed (they are handed to Optuna as their JSON text,
since its categorical choices must be scalars). Every key is checked: an
unknown section or field, an unknown option, `low >= high`, `log` with
`low <= 0`, a range on a field that is not a number, or a value the field
itself rejects (`model.user_id_dropout: {high: 1.0}`: dropout must stay
below 1) is a `ConfigError` that names the parameter.

**The default space** (`DEFAULT_SPACE`) is small on purpose: the retrieval
temperature and logQ share, the id dropouts, history pooling, the embedding
width, the learning rate, the ranking dropout and the batch size, the knobs
whose best values moved most between datasets (see `ModelConfig`'s docstring).
A `space` in the file replaces it whole, so a search is exactly what the file
says.

**The objective** is any key the epoch logs hold: `val_auc`, `val_logloss`,
`val_loss`, `val_recall_at_K` (any K: `tfrec-video tune` adds that Recall@K
to the trials' callbacks when the run does not compute it already) or a
training metric. The direction is inferred from the name (names ending in
`loss` are minimised) unless given.

Example:

>>> tune = tune_config_from_dict({"objective": "val_logloss", "trials": 4,
...                               "space": {"model.temperature": {"low": 0.05, "high": 0.5, "log": True}}})
>>> tune.direction, [p.key for p in tune.params]
('minimize', ['model.temperature'])
>>> tune_config_from_dict({"space": {"model.temprature": {"low": 0.1, "high": 0.2}}})
Traceback (most recent call last):
...
tfrec_video.errors.ConfigError: tune.space: unknown field 'model.temprature' (did you mean 'model.temperature'?).
"""

import dataclasses
import json
import math
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from tfrec_video.config_fields import check_known, field_names, from_mapping
from tfrec_video.errors import ConfigError, shorten
from tfrec_video.models.config import ModelConfig
from tfrec_video.training.fit import TrainingConfig
from tfrec_video.training.run_config import RunConfig, run_config_from_dict

# The dataclasses a trial may sample, by their section name in a run config.
SECTIONS = {"model": ModelConfig, "training": TrainingConfig}
_OPTIONS = ("low", "high", "log", "step", "choices")
PRUNERS = ("median", "none")

DEFAULT_SPACE: Dict[str, Dict[str, Any]] = {
    "model.temperature": {"low": 0.05, "high": 0.5, "log": True},
    "model.user_id_dropout": {"low": 0.0, "high": 0.95},
    "model.video_id_dropout": {"low": 0.0, "high": 0.8},
    "model.history_pooling": {"choices": ["mean", "attention"]},
    "model.embedding_dim": {"choices": [32, 64, 128]},
    "model.learning_rate": {"low": 3e-4, "high": 1e-2, "log": True},
    "model.logq_weight": {"low": 0.0, "high": 1.0},
    "model.ranking_dropout": {"low": 0.0, "high": 0.6},
    "training.batch_size": {"choices": [256, 512, 1024]},
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _numeric_kind(section: str, name: str) -> Optional[str]:
    """`"int"`, `"float"` or None (not a number) from the field's annotation; `Optional[...]` and a float
    that may be `"auto"` count."""
    hint = {f.name: f.type for f in dataclasses.fields(SECTIONS[section])}[name]
    args = [hint]
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args == [int]:
        return "int"
    # `Union[float, str]`: a number that may also be "auto" (models.data_rules); the search sets the number.
    if args == [float] or sorted(args, key=str) == sorted([float, str], key=str):
        return "float"
    return None


def _encode(choice):
    # Optuna's categorical choices must be None, bool, int, float or str: others travel as JSON text.
    return choice if choice is None or isinstance(choice, (bool, int, float, str)) else json.dumps(choice)


@dataclasses.dataclass(frozen=True)
class SearchParam:
    """One sampled field: a float or int range, or a list of choices.

    Args:
      key: `section.field`, e.g. `"model.temperature"`; also the Optuna parameter name.
      kind: `"float"`, `"int"` or `"categorical"`.
      low: the range's lower end (inclusive).
      high: the range's upper end (inclusive).
      log: sample the range on a log scale.
      step: sample the range on a grid of this step from `low`.
      choices: the values of a categorical parameter.
    """

    key: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Tuple = ()

    def suggest(self, trial) -> Any:
        """Samples the value of this parameter for an `optuna.Trial` (decoded: a list choice comes back a list)."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return self.decode(trial.suggest_categorical(self.key, [_encode(c) for c in self.choices]))

    def decode(self, value) -> Any:
        """The field value of an Optuna parameter value (JSON text back to the list or mapping it encodes)."""
        if self.kind == "categorical":
            for choice in self.choices:
                if _encode(choice) == value:
                    return choice
        return value

    def extremes(self) -> Tuple:
        """The values that bound what this parameter can sample: the range's ends, or every choice."""
        return tuple(self.choices) if self.kind == "categorical" else (self.low, self.high)

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def parse_param(key: str, spec, where: str = "tune.space") -> SearchParam:
    """A `SearchParam` from one entry of a `space` mapping.

    Args:
      key: `section.field` with a section of `SECTIONS`.
      spec: `{low, high, log?, step?}`, `{choices: [...]}`, or a plain list of choices.
      where: how errors name the mapping.

    Returns:
      The parameter, its type (float or int range) taken from the field's annotation.

    Raises:
      ConfigError: naming `key`, for an unknown section, field or option, or a bad range.
    """
    section, _, name = str(key).partition(".")
    if section not in SECTIONS or not name:
        raise ConfigError(f"{where}: {shorten(key)} must be section.field with a section of {sorted(SECTIONS)}.")
    check_known([key], [f"{section}.{f}" for f in field_names(SECTIONS[section])], where)
    at = f"{where}.{key}"
    if isinstance(spec, (list, tuple)):
        spec = {"choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{at}: expected {{low, high[, log, step]}}, {{choices: [...]}} or a list of choices, "
                          f"got {shorten(spec)}.")
    check_known(spec, _OPTIONS, at)
    if "choices" in spec:
        extra = sorted(set(spec) - {"choices"})
        if extra:
            raise ConfigError(f"{at}: give either choices or a range (low, high, log, step), not both ({extra}).")
        choices = spec["choices"]
        if not isinstance(choices, (list, tuple)) or not choices:
            raise ConfigError(f"{at}: choices must be a non-empty list, got {shorten(choices)}.")
        encoded = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(encoded)) != len(encoded):
            raise ConfigError(f"{at}: choices repeat a value: {shorten(list(choices))}.")
        return SearchParam(key, "categorical", choices=tuple(choices))
    kind = _numeric_kind(section, name)
    if kind is None:
        raise ConfigError(f"{at}: {key} is not a number field; give it choices instead of a range.")
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ConfigError(f"{at}: a range needs low and high (missing {', '.join(missing)}).")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    for option, value in (("low", low), ("high", high)) + ((("step", step),) if step is not None else ()):
        if not _number(value) or (kind == "int" and not isinstance(value, int)):
            raise ConfigError(f"{at}: {option} must be {'an integer' if kind == 'int' else 'a number'} "
                              f"({key} is {'an int' if kind == 'int' else 'a float'}), got {shorten(value)}.")
    if not isinstance(log, bool):
        raise ConfigError(f"{at}: log must be true or false, got {shorten(log)}.")
    if not low < high:
        raise ConfigError(f"{at}: low ({shorten(low)}) must be below high ({shorten(high)}); to fix a value, set it "
                          "in the run config instead.")
    if log and low <= 0:
        raise ConfigError(f"{at}: a log range needs low > 0, got {shorten(low)}.")
    if step is not None and step <= 0:
        raise ConfigError(f"{at}: step must be > 0, got {shorten(step)}.")
    if step is not None and log:
        raise ConfigError(f"{at}: give log or step, not both.")
    if kind == "float":
        low, high, step = float(low), float(high), None if step is None else float(step)
    return SearchParam(key, kind, low=low, high=high, log=log, step=step)


def parse_space(space: Optional[Mapping] = None, where: str = "tune.space") -> Tuple[SearchParam, ...]:
    """Every parameter of a `space` mapping (`DEFAULT_SPACE` when None), in the mapping's order."""
    space = DEFAULT_SPACE if space is None else space
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{where}: expected a non-empty mapping of section.field to ranges or choices, "
                          f"got {shorten(space)}.")
    return tuple(parse_param(key, spec, where) for key, spec in space.items())


def default_direction(objective: str) -> str:
    """`"minimize"` for a loss (`val_loss`, `val_logloss`, `ranking_loss`, ...), else `"maximize"`."""
    return "minimize" if objective.endswith("loss") else "maximize"


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """The `tune:` section: the search of `tfrec-video tune` (see the module docstring).

    Args:
      objective: the epoch-log key a trial is scored on; a trial's value is
        its best epoch's.
      direction: `"maximize"` or `"minimize"`; None infers it from `objective`.
      trials: COMPLETE plus PRUNED trials the study should hold. A resumed or
        shared study runs only what is missing.
      space: `{section.field: range or choices}`; None for `DEFAULT_SPACE`.
      seed: seed of the TPE sampler (each trial's draw is seeded with
        `seed + ` the number of trials before it, so a resumed study does not
        draw its first trials' values again).
      random_trials: trials drawn at random before TPE models the results;
        None for `min(10, trials // 3)`, at least 1.
      pruner: `"median"` (stop a trial whose epoch value is worse than the
        median of earlier trials at that epoch) or `"none"`.
      pruner_startup_trials: trials that finish before any is pruned.
      pruner_warmup_epochs: epochs of each trial that are never pruned.
      study_name: the Optuna study's name; None for the output directory's name.
      storage: an Optuna RDB URL (`sqlite:///...`, `postgresql://...`); None
        for `sqlite:///<output_dir>/study.db`.
      heartbeat_interval: seconds between a running trial's heartbeats in the
        storage. A trial whose heartbeat is older than `grace_period` belongs to
        a dead process and is marked FAIL by the next process that starts a trial.
      grace_period: seconds without a heartbeat that make a trial stale; None
        for twice `heartbeat_interval`.
    """

    objective: str = "val_recall_at_100"
    direction: Optional[str] = None
    trials: int = 20
    space: Optional[Mapping[str, Any]] = None
    seed: int = 0
    random_trials: Optional[int] = None
    pruner: str = "median"
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 1
    study_name: Optional[str] = None
    storage: Optional[str] = None
    heartbeat_interval: int = 60
    grace_period: Optional[int] = None
    params: Tuple[SearchParam, ...] = dataclasses.field(init=False, repr=False, compare=False, default=())

    def __post_init__(self):
        if not isinstance(self.objective, str) or not self.objective.strip():
            raise ConfigError(f"tune.objective must name a metric of the epoch logs, got {shorten(self.objective)}.")
        if self.direction is None:
            object.__setattr__(self, "direction", default_direction(self.objective))
        elif self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"tune.direction must be 'maximize' or 'minimize', got {shorten(self.direction)}.")
        for name, minimum in (("trials", 1), ("seed", 0), ("pruner_startup_trials", 0), ("pruner_warmup_epochs", 0),
                              ("heartbeat_interval", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"tune.{name} must be an integer >= {minimum}, got {shorten(value)}.")
        if self.random_trials is None:
            object.__setattr__(self, "random_trials", max(1, min(10, self.trials // 3)))
        elif not isinstance(self.random_trials, int) or isinstance(self.random_trials, bool) or self.random_trials < 0:
            raise ConfigError(f"tune.random_trials must be an integer >= 0 or null, got {shorten(self.random_trials)}.")
        if self.grace_period is not None and (not isinstance(self.grace_period, int) or self.grace_period < 1):
            raise ConfigError("tune.grace_period must be a positive integer or null, got "
                              f"{shorten(self.grace_period)}.")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"tune.pruner must be one of {PRUNERS}, got {shorten(self.pruner)}.")
        for name in ("study_name", "storage"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"tune.{name} must be a non-empty string or null, got {shorten(value)}.")
        object.__setattr__(self, "params", parse_space(self.space))

    def param(self, key: str) -> Optional[SearchParam]:
        """The parameter named `key`, or None."""
        return next((p for p in self.params if p.key == key), None)

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "params"}
        out["space"] = {p.key: p.to_dict() for p in self.params}
        return out


def tune_config_from_dict(values: Optional[Mapping], where: str = "tune") -> TuneConfig:
    """A `TuneConfig` from the parsed `tune:` section (None or empty: every default)."""
    return from_mapping(TuneConfig, values or {}, where)


def with_values(config: RunConfig, values: Mapping[str, Any]) -> RunConfig:
    """`config` with `{section.field: value}` set, checked by the dataclasses (`ConfigError` if not valid).

    Values are set as Python values, not parsed from text as `apply_overrides` does, so that a
    float like `1e-05` stays a float (YAML 1.1 reads that text as a string).
    """
    data = config.to_dict()
    for key, value in values.items():
        section, _, name = key.partition(".")
        data.setdefault(section, {})[name] = value
    return run_config_from_dict(data)


def check_space(tune: TuneConfig, config: RunConfig) -> None:
    """Raises `ConfigError`, naming the parameter, if any value the space can sample is invalid for `config`.

    Each range's ends and each choice is set into `config` alone and the config is built, so the
    dataclasses' own checks (dropout below 1, a positive batch size, ...) judge the space before
    any trial trains.
    """
    for param in tune.params:
        for value in param.extremes():
            try:
                with_values(config, {param.key: value})
            except ConfigError as error:
                raise ConfigError(f"tune.space.{param.key}: {shorten(value)} is not a valid value: {error}") from None


def sampled_values(params: Sequence[SearchParam], trial_params: Mapping[str, Any]) -> Dict[str, Any]:
    """`{section.field: value}` of a finished trial's Optuna params, decoded by the space's parameters."""
    by_key = {p.key: p for p in params}
    return {key: by_key[key].decode(value) if key in by_key else value for key, value in trial_params.items()}
