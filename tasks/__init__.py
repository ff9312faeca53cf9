"""Stage logic of the digit-recognizer pipeline: one module per DVC stage plus shared helpers.

Every stage runs as `python -m tasks.<stage>`, which imports this package before the stage's own
imports reach TensorFlow, so this is where TensorFlow's C++ start-up log is quieted for all of
them: TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only, no INFO or WARNING lines); a value the user
set wins (`TF_CPP_MIN_LOG_LEVEL=0 dvc repro` shows everything).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
