"""A config file is input like any other: bounded, and every error names the file, the line and the key.

Issue 16, class 10: a 709-byte YAML "billion laughs" put 157 MB into an error message (one more level
exhausted memory); deep nesting, a 5,000-digit integer or a non-UTF-8 byte gave a traceback; errors of
the config dataclasses did not say which file (or line) they came from; a quoted value was not cut.
Each case goes through the command line (`tfrec_video.cli.main.main`) and the Python API.
"""

import json
import time

import pytest

from tfrec_video.cli.main import main
from tfrec_video.config_fields import MAX_ALIASES, MAX_CONFIG_BYTES, MAX_DEPTH, parse_config_text
from tfrec_video.datasets import BuiltinConfig
from tfrec_video.errors import ConfigError
from tfrec_video.models.saving import FORMAT, load_model
from tfrec_video.training.run_config import apply_overrides, load_run_config, run_config_from_dict

pytestmark = pytest.mark.bad_input

# Far below the 2,000-character cap of every message: a quoted value is cut to about 200.
SHORT = 700


def _write(path, text):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def _laughs(levels=9):
    """The classic bomb: 9 levels of 9 aliases each, 9**9 strings once expanded, in under 1 KB."""
    lines = ["data: {builtin: tiny}", 'a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"model: {{query_hidden_units: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


def _cli_error(capsys, argv):
    """Runs the CLI, expects exit status 2 and returns its one-line error."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err[:3000]
    assert "Traceback" not in err
    return err


def _api_error(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_run_config(path, overrides)
    return str(info.value)


def test_billion_laughs_is_refused_fast_with_a_short_message(tmp_path, capsys):
    cfg = _write(tmp_path / "laughs.yaml", _laughs())
    assert len(_laughs()) < 1000
    start = time.perf_counter()
    api = _api_error(cfg)
    cli = _cli_error(capsys, ["train", "--config", cfg])
    assert time.perf_counter() - start < 10
    for message in (api, cli):
        assert len(message) < SHORT
        assert f"{cfg}, line " in message and "refused" in message and "aliases are expanded" in message
    assert not (tmp_path / "runs").exists()


def test_more_aliases_than_the_bound_are_refused(tmp_path, capsys):
    uses = ", ".join(["*x"] * (MAX_ALIASES + 1))
    cfg = _write(tmp_path / "aliases.yaml", f"data: {{builtin: tiny}}\nx: &x 1\nmodel:\n  query_hidden_units: [{uses}]\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}, line 4: refused: more than {MAX_ALIASES} aliases" in message


def test_a_few_aliases_are_still_fine(tmp_path):
    cfg = _write(tmp_path / "ok.yaml", "data: {builtin: tiny}\nmodel: &m {query_hidden_units: &u [8, 4]}\n"
                                       "training: {epochs: 2}\n")
    assert load_run_config(cfg).model.query_hidden_units == (8, 4)


def test_an_alias_that_contains_itself_is_refused(tmp_path, capsys):
    cfg = _write(tmp_path / "cycle.yaml", "data: {builtin: tiny}\nmodel: &m {query_hidden_units: *m}\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}, line 2: refused: an alias refers to a value that contains it" in message


@pytest.mark.parametrize("name, text", [
    ("deep.yaml", "data: {builtin: tiny}\nmodel: {query_hidden_units: " + "[" * 5000 + "]" * 5000 + "}\n"),
    ("deep.json", '{"data": {"builtin": "tiny"}, "model": {"query_hidden_units": ' + "[" * 100000 + "]" * 100000 + "}}"),
])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path, capsys, name, text):
    cfg = _write(tmp_path / name, text)
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert cfg in message and f"nested more than {MAX_DEPTH} levels deep" in message
        assert len(message) < SHORT


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path, capsys):
    cfg = _write(tmp_path / "big.yaml", "data: {builtin: tiny}\n# " + "x" * MAX_CONFIG_BYTES + "\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}: refused: the config file is over {MAX_CONFIG_BYTES} bytes" in message


def test_a_file_that_is_not_utf8_names_the_line(tmp_path, capsys):
    cfg = _write(tmp_path / "latin1.yaml", b"data: {builtin: tiny}\noutput_dir: caf\xe9\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}, line 2: not UTF-8 text (byte 0xe9" in message


def test_a_huge_integer_is_a_config_error(tmp_path, capsys):
    cfg = _write(tmp_path / "int.yaml", "data: {builtin: tiny}\nmodel: {embedding_dim: " + "9" * 5000 + "}\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}: not valid YAML" in message and "digits" in message
        assert len(message) < SHORT


def test_a_long_value_is_cut_in_the_message_that_quotes_it(tmp_path, capsys):
    cfg = _write(tmp_path / "long.yaml", "data: {builtin: tiny}\nstrategy: " + "s" * 500_000 + "\n")
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}, line 2: strategy must be one of" in message
        assert "more characters)" in message and len(message) < SHORT


@pytest.mark.parametrize("text, expected", [
    ("data: {builtin: tiny}\nmodel:\n  embedding_dim: -3\n", "line 3: ModelConfig.embedding_dim must be a positive integer"),
    ("data: {builtin: tiny}\nmodel:\n  embedding_dim: 8\n  embeding_dim: 3\n",
     "line 4: model: unknown field 'embeding_dim' (did you mean 'embedding_dim'?)"),
    ("data: {builtin: tiny}\n\ncallbacks:\n  monitor: val_accuracy\n", "line 4: callbacks.monitor must be"),
    ("data: {builtin: tiny}\nexport: {k: 5, n: 10}\n", "line 2: export.n (10) must be <= export.k (5)"),
    ("data:\n  builtin: tiny\n  history_length: 0\n", "line 3: data.history_length must be a positive integer"),
    ("data: {builtin: tiny}\noutput_dir: !!binary aGVsbG8=\n", "line 2: output_dir: a config value must be plain data"),
])
def test_field_errors_name_the_file_and_line(tmp_path, capsys, text, expected):
    cfg = _write(tmp_path / "cfg.yaml", text)
    for message in (_api_error(cfg), _cli_error(capsys, ["train", "--config", cfg])):
        assert f"{cfg}, {expected}" in message


def test_a_yaml_date_is_text_not_a_crash(tmp_path):
    cfg = _write(tmp_path / "date.yaml", "data: {builtin: tiny}\noutput_dir: 2024-01-01\n")
    assert load_run_config(cfg).output_dir == str(tmp_path / "2024-01-01")


def test_set_values_are_bounded_like_a_file(tmp_path, capsys):
    bomb = "[" + ", ".join(["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 8)]) + "]"
    override = f"model.query_hidden_units={bomb}"
    with pytest.raises(ConfigError, match=r"--set .*: refused: more than \d+ values once its aliases are expanded"):
        apply_overrides(run_config_from_dict({"data": {"builtin": "tiny"}}), [override])
    cfg = _write(tmp_path / "cfg.yaml", "data: {builtin: tiny}\n")
    message = _cli_error(capsys, ["train", "--config", cfg, "--set", override])
    assert "--set " in message and "refused" in message and len(message) < SHORT


def test_tune_section_errors_name_the_file_and_line(tmp_path, capsys):
    cfg = _write(tmp_path / "tune.yaml", "data: {builtin: tiny}\ntune:\n  trials: 2\n  space:\n"
                                         "    model.temperature: {low: 0.1, high: 0.5}\n"
                                         "    model.user_id_dropout: {low: 0.0, high: 1.5}\n")
    message = _cli_error(capsys, ["tune", "--config", cfg, "--output-dir", str(tmp_path / "t")])
    assert f"{cfg}, line 6: tune.space.model.user_id_dropout: 1.5 is not a valid value" in message
    cfg = _write(tmp_path / "tune2.yaml", "data: {builtin: tiny}\ntune:\n  objective: " + "v" * 10_000 + "\n"
                                          "  direction: sideways\n")
    message = _cli_error(capsys, ["tune", "--config", cfg, "--output-dir", str(tmp_path / "t")])
    assert f"{cfg}, line 4: tune.direction must be 'maximize' or 'minimize', got 'sideways'" in message
    assert not (tmp_path / "t").exists()


def test_parse_config_text_api():
    value, lines = parse_config_text("data:\n  builtin: tiny\nmodel: {embedding_dim: 8}\n", "cfg.yaml")
    assert value == {"data": {"builtin": "tiny"}, "model": {"embedding_dim": 8}}
    assert lines == {"data": 1, "data.builtin": 2, "model": 3, "model.embedding_dim": 3}
    with pytest.raises(ConfigError, match=r"^cfg.yaml, line 2, column 1: not valid YAML"):
        parse_config_text("a: [1,\n", "cfg.yaml")
    with pytest.raises(ConfigError, match=r"^cfg.yaml, line 1, column 4: not valid YAML: could not determine a "
                                          r"constructor for the tag"):
        parse_config_text("a: !!python/object/apply:os.system [echo hi]\n", "cfg.yaml")


def test_builtin_config_errors_are_short_and_suggest_the_field():
    with pytest.raises(ConfigError, match=r"BuiltinConfig: unknown field 'n_video' \(did you mean 'n_videos'\?\)"):
        BuiltinConfig.from_dict({"n_video": 3})
    with pytest.raises(ConfigError) as info:
        BuiltinConfig.from_dict({"seed": "x" * 100_000})
    assert "BuiltinConfig.seed must be" in str(info.value) and len(str(info.value)) < SHORT
    with pytest.raises(ConfigError) as info:
        BuiltinConfig.named("t" * 100_000)
    assert len(str(info.value)) < SHORT


@pytest.mark.parametrize("saved, expected", [
    ({"format": FORMAT, "class": "VideoRecModel"}, "the model config is missing or not a mapping"),
    ({"format": FORMAT, "class": "VideoRecModel", "config": {"config": {"embedding_dim": -1}, "vocabularies": {}}},
     "ModelConfig.embedding_dim must be a positive integer"),
    ({"format": "x" * 100_000, "class": "VideoRecModel"}, "expected format"),
    ("[" * 100_000 + "]" * 100_000, "unreadable model config"),
])
def test_a_tampered_model_json_is_a_config_error(tmp_path, capsys, saved, expected):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _write(model_dir / "model.json", saved if isinstance(saved, str) else json.dumps(saved))
    with pytest.raises(ConfigError) as info:
        load_model(str(model_dir))
    assert str(info.value).startswith(path) and expected in str(info.value) and len(str(info.value)) < SHORT
    message = _cli_error(capsys, ["export", "--model", str(model_dir), "--catalog", str(tmp_path / "none")])
    assert path in message and expected in message


def test_an_error_about_a_set_value_does_not_blame_the_file(tmp_path, capsys):
    cfg = _write(tmp_path / "cfg.yaml", "data: {builtin: tiny}\nmodel:\n  embedding_dim: 8\n")
    message = _api_error(cfg, ["model.embedding_dim=-3"])
    assert message.startswith("ModelConfig.embedding_dim must be a positive integer, got -3") and cfg not in message
    message = _cli_error(capsys, ["train", "--config", cfg, "--set", "model.embeding_dim=3"])
    assert "--set model: unknown field 'embeding_dim'" in message and cfg not in message
