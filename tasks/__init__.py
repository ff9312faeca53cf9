"""The pipeline's DVC stages: one module per stage (`python -m tasks.<stage>`) plus the helpers
only stages use; the library they share is the `digits` package.

Importing this package imports `digits` first, which quiets TensorFlow's C++ start-up log for every
stage (see digits/__init__.py).
"""
import digits  # noqa: F401
