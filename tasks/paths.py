"""Every path the pipeline reads or writes, in one place (relative to the repository root).

Stages run with the repository root as the working directory (`dvc repro` does this), so the
paths are relative: the same code works in a temporary test repository.
"""
import dataclasses
import os
from pathlib import Path

PARAMS = Path("params.yaml")

# Kaggle's own files go here (see data/kaggle/README.md); never modified.
KAGGLE_DIR = Path("data/kaggle")

# Stage ingest: Kaggle-format CSVs the rest of the pipeline reads.
RAW_DIR = Path("data/raw")
RAW_TRAIN = RAW_DIR / "train.csv"
RAW_TEST = RAW_DIR / "test.csv"
# The answer key is kept apart from the training data; only the score stage reads it.
ANSWER_KEY_DIR = Path("data/answer_key")
ANSWER_KEY = ANSWER_KEY_DIR / "test_labels.csv"

# Stage validate.
VALIDATION_DIR = Path("reports/validation")

# Stage convert.
PARQUET_DIR = Path("data/parquet")
TRAIN_PARQUET = PARQUET_DIR / "train.parquet"
TEST_PARQUET = PARQUET_DIR / "test.parquet"

# Stage split.
SPLIT_DIR = Path("data/split")
SPLIT_TRAIN = SPLIT_DIR / "train.parquet"
SPLIT_VAL = SPLIT_DIR / "val.parquet"

# Stage train@<member>: one per ensemble member (params.yaml, ensemble.members).
MODEL_DIR = Path("models")
CHECKPOINT_DIR = Path("checkpoints")
METRICS_DIR = Path("metrics")
DVCLIVE_DIR = Path("dvclive")


@dataclasses.dataclass(frozen=True)
class Member:
    model: Path          # the best epoch's model
    checkpoints: Path    # per-epoch resume state
    dvclive: Path        # per-epoch curves
    metrics: Path        # headline train metrics (a DVC metrics file)
    details: Path        # every train figure (seed, timings, epochs) for the report


# A stage's headline figures, the ones compared across branches and experiments, are DVC metrics
# files under metrics/ (`dvc metrics diff` fits a screen); every other figure it measured goes to the
# same name under metrics/details/ (an output in git, read by the report; the per-class,
# per-corruption and per-baseline tables are also CSV plots, so `dvc plots diff` draws them).
DETAILS_DIR = METRICS_DIR / "details"


def member(name: str) -> Member:
    """Where member `name` keeps its files (the train@<name> stage's outputs in dvc.yaml)."""
    return Member(MODEL_DIR / f"{name}.keras", CHECKPOINT_DIR / name, DVCLIVE_DIR / name,
                  METRICS_DIR / "members" / f"{name}.json", DETAILS_DIR / "members" / f"{name}.json")


# Stage evaluate / predict / score / baselines.
EVALUATE_METRICS = METRICS_DIR / "evaluate.json"
EVALUATE_DETAILS = DETAILS_DIR / "evaluate.json"
PLOTS_DIR = Path("plots")
SUBMISSION_DIR = Path("submission")
SUBMISSION = SUBMISSION_DIR / "submission.csv"
PROBABILITIES = SUBMISSION_DIR / "probabilities.parquet"
SCORE_METRICS = METRICS_DIR / "score.json"
BASELINE_METRICS = METRICS_DIR / "baselines.json"
BASELINE_DETAILS = DETAILS_DIR / "baselines.json"
ROBUSTNESS_METRICS = METRICS_DIR / "robustness.json"
ROBUSTNESS_DETAILS = DETAILS_DIR / "robustness.json"
REPORT = Path("reports/report.md")

# Stage intake: the batches of params.yaml's intake.inbox, each validated; accepted rows train only.
INTAKE_DIR = Path("data/intake")
INTAKE_TRAIN = INTAKE_DIR / "train.parquet"        # every accepted batch's rows (split train's columns)
INTAKE_MANIFEST = INTAKE_DIR / "batches.json"      # each batch: file, sha256, rows, taken or why not
INTAKE_REJECTED = INTAKE_DIR / "rejected"          # a copy of each rejected batch beside its report
INTAKE_REPORTS = Path("reports/intake")            # one Great Expectations result per batch
INTAKE_METRICS = METRICS_DIR / "intake.json"

# Stage export: each member in standard formats (exports/<member>/saved_model, model.onnx,
# model.tflite) and how a runtime combines them. Not under models/: evaluate, predict and robustness
# depend on all of models/, and would then re-run whenever an export changed.
EXPORTS_DIR = Path("exports")
EXPORT_MANIFEST = EXPORTS_DIR / "ensemble.json"
EXPORT_METRICS = METRICS_DIR / "export.json"
EXPORT_DETAILS = DETAILS_DIR / "export.json"

# Serving: copies of the promoted versions (git-ignored) and the one users get (docs/loop.md).
SERVING_DIR = Path("serving")
PRODUCTION = SERVING_DIR / "production.json"


def cache_dir() -> Path:
    """Where downloads are cached between runs and clones (outside the workspace, like pip's)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "digit-recognizer"
    return Path(os.environ.get("DIGITS_CACHE_DIR", default))
EVAL_PLOTS = PLOTS_DIR / "evaluate"
EDA_PLOTS = PLOTS_DIR / "eda"
BASELINE_PLOTS = PLOTS_DIR / "baselines"
ROBUSTNESS_PLOTS = PLOTS_DIR / "robustness"
