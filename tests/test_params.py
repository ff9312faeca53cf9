import copy

import pytest
import yaml

from conftest import ROOT
from tasks import params


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
    with pytest.raises(params.ParamsError, match="'base.seed' must be int"):
        params.parse(raw)


@pytest.mark.parametrize("members, tta, message", [
    ({"big": {"preset": "huge", "seed": 1}}, [],
     "'ensemble.members.big.preset' is 'huge'; known presets: full, lite, long, quick, seed001, wide"),
    ({}, [], "'ensemble.members' is empty; name at least one member"),
    ({"a b": {"preset": "quick", "seed": 1}}, [], "'ensemble.members.a b': a member name is a letter, then "
     "letters, digits, '-' or '_' (it names a stage and files)"),
    ({"q": {"preset": "quick"}}, [], "missing key 'ensemble.members.q.seed'"),
    ({"q": {"preset": "quick", "seed": 1}}, ["flip"], "'ensemble.tta' has 'flip'; one of: shift, rotate"),
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
