import copy
import dataclasses

import pytest
import yaml
from pydantic import ValidationError

from conftest import ROOT
from digits import params


@pytest.fixture
def raw():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_and_presets_resolve(raw):
    p = params.parse(raw)
    assert {n: (m.preset, m.seed) for n, m in p.ensemble.members.items()} == {"quick-42": ("quick", p.base.seed)}
    assert p.ensemble.tta == ()
    assert sorted(p.train.presets) == ["full", "lite", "long", "quick", "seed001", "wide"]
    s = p.train.presets["seed001"]
    assert (s.arch.widths, s.arch.kernels, s.batch_size, s.optimizer.name) == ((32, 64), (5, 3), 86, "rmsprop")


@pytest.mark.parametrize("path, message", [
    (("train", "presets", "quick", "epoch"), "unknown key 'train.presets.quick.epoch'"),
    (("split", "shuffle"), "unknown key 'split.shuffle'"),
    (("colour",), "unknown key 'colour'"),
])
def test_unknown_key_is_an_error_naming_the_key(raw, path, message):
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = 1
    with pytest.raises(params.ParamsError, match=message):
        params.parse(raw)


def test_missing_key_and_wrong_type(raw):
    bad = copy.deepcopy(raw)
    del bad["train"]["presets"]["full"]["arch"]["dense"]
    with pytest.raises(params.ParamsError, match="missing key 'train.presets.full.arch.dense'"):
        params.parse(bad)
    raw["base"]["seed"] = "x"
    with pytest.raises(params.ParamsError, match="'base.seed' must be an integer, got 'x'"):
        params.parse(raw)


@pytest.mark.parametrize("members, tta, message", [
    ({"big": {"preset": "huge", "seed": 1}}, [],
     "'ensemble.members.big.preset' is 'huge'; known presets: full, lite, long, quick, seed001, wide"),
    ({}, [], "'ensemble.members' is empty; name at least one member"),
    ({"a b": {"preset": "quick", "seed": 1}}, [], "'ensemble.members.a b' is not a member name: a letter, then "
     "letters, digits, '-' or '_' (it names a stage and files)"),
    ({"q": {"preset": "quick"}}, [], "missing key 'ensemble.members.q.seed'"),
    ({"q": {"preset": "quick", "seed": 1}}, ["shift", "flip"], "'ensemble.tta[1]' is 'flip'; one of: shift, rotate"),
])
def test_bad_ensemble_is_an_error_naming_the_key(raw, members, tta, message):
    raw["ensemble"] = {"members": members, "tta": tta}
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert str(err.value) == f"params: {message}"          # the whole message: every preset listed


def test_robustness_baselines_must_be_known_baselines(raw):
    raw["robustness"]["baselines"] = ["random_forest", "xgboost"]
    with pytest.raises(params.ParamsError, match="'robustness.baselines' has 'xgboost', which is not in baselines.models"):
        params.parse(raw)


@pytest.mark.parametrize("key, value, message", [
    ("schedule", "linear", "'train.presets.full.optimizer.schedule' is 'linear'; one of: cosine, onecycle, plateau"),
    ("name", "adagrad", "'train.presets.full.optimizer.name' is 'adagrad'; one of: adamw, adam, rmsprop, sgd"),
])
def test_unknown_optimizer_or_schedule_names_the_key(raw, key, value, message):
    raw["train"]["presets"]["full"]["optimizer"][key] = value
    with pytest.raises(params.ParamsError, match=message):
        params.parse(raw)


@pytest.mark.parametrize("key, value, message", [
    ("data.source", "s3", "'data.source' is 's3'; one of: bundled, kaggle"),
    ("train.presets.quick.arch.padding", "full", "'train.presets.quick.arch.padding' is 'full'; one of: same, valid"),
    ("split.val_fraction", 1.0, "'split.val_fraction' is 1.0; input should be less than 1"),
    ("split.sample_fraction", 0, "'split.sample_fraction' is 0; input should be greater than 0"),
    ("train.presets.quick.epochs", "20", "'train.presets.quick.epochs' must be an integer, got '20'"),
    ("train.presets.quick.epochs", 20.0, "'train.presets.quick.epochs' must be an integer, got 20.0"),
    ("train.presets.quick.arch.batch_norm", 1, "'train.presets.quick.arch.batch_norm' must be true or false, got 1"),
    ("train.presets.quick.arch.widths", [32, "x"], "'train.presets.quick.arch.widths[1]' must be an integer, got 'x'"),
    ("train.presets.quick.arch.widths", [32],
     "'train.presets.quick.arch' needs one entry per block in widths, kernels and convs"),
    ("train.presets.quick.augment", [1], "'train.presets.quick.augment' must be a mapping, got [1]"),
    ("feedback.per_minute", "20", "'feedback.per_minute' must be an integer, got '20'"),
])
def test_a_bad_value_is_one_error_naming_the_full_key(raw, key, value, message):
    *parents, last = key.split(".")
    node = raw
    for name in parents:
        node = node[name]
    node[last] = value
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert str(err.value) == f"params: {message}"


def test_every_problem_is_listed_and_an_integer_is_a_float(raw):
    raw["train"]["presets"]["quick"]["epoch"] = 1
    raw["train"]["presets"]["quick"]["optimizer"]["name"] = "adagrad"
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert sorted(str(err.value).splitlines()) == [
        "params: 'train.presets.quick.optimizer.name' is 'adagrad'; one of: adamw, adam, rmsprop, sgd",
        "params: unknown key 'train.presets.quick.epoch'"]
    del raw["train"]["presets"]["quick"]["epoch"]
    raw["train"]["presets"]["quick"]["optimizer"]["name"] = "adamw"
    rotation = params.parse(raw).train.presets["quick"].augment.rotation
    assert rotation == 8.0 and isinstance(rotation, float)              # YAML's 8


def test_the_structure_is_frozen_and_replace_revalidates(raw):
    quick = params.parse(raw).train.presets["quick"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.epochs = 3
    assert dataclasses.replace(quick, epochs=3).epochs == 3
    with pytest.raises(ValidationError):
        dataclasses.replace(quick.optimizer, schedule="linear")
