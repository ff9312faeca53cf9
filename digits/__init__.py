"""digits: the digit recognizer's library, the one package this project installs.

Data I/O and the CSV-to-image conversion (io), params.yaml's typed settings (params) and every
path (paths), the model and its layers (model, augment, schedules), the ensemble (ensemble), the
recognizer (preprocess, recognize), the HTTP service and drawing page (server, serving, static/),
the feedback store (feedback), the model registry (registry) and the installed commands
(commands). The DVC stages (tasks/) and the Prefect flows (flows/) build on it.

Importing the package quiets TensorFlow's C++ start-up log before anything reaches TensorFlow:
TF_CPP_MIN_LOG_LEVEL defaults to 2 (errors only, no INFO or WARNING lines), and the lines written
before TensorFlow reads it are held back (digits/quiet.py); a value the user set wins
(`TF_CPP_MIN_LOG_LEVEL=0 dvc repro` shows everything).
"""
import os

from digits import quiet

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
quiet.install()
