"""TensorFlow's C++ start-up log, kept out of the user's terminal unless asked for.

TF_CPP_MIN_LOG_LEVEL (2 by default here, see digits/__init__.py) silences TensorFlow's own INFO
and WARNING lines, but a few are written during `import tensorflow` before its logging reads the
setting: absl's "All log messages before absl::InitializeLog() is called are written to STDERR"
and, whenever oneDNN's operations are on, port.cc's "oneDNN custom operations are on" notice, each
twice. While TensorFlow is first imported, file descriptor 2 goes to a temporary file; afterwards
every line of it except those is written back to stderr, so a real error is still seen. A user who
sets TF_CPP_MIN_LOG_LEVEL=0 gets everything unfiltered.
"""
import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
)


@contextlib.contextmanager
def filtered_stderr(noise=NOISE):
    """Hold what is written to file descriptor 2 (C++ code included) inside the block; then
    write it back less the lines that contain one of `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(n in line for n in noise)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


class _QuietFirstImport(importlib.abc.MetaPathFinder):
    """Runs the first `import tensorflow` (however it is reached: keras, tasks, a test) inside
    filtered_stderr, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            with filtered_stderr():
                run(module)
        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Filter TensorFlow's first import, unless the user asked for its log (TF_CPP_MIN_LOG_LEVEL=0)
    or it is already imported."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") != "0" and "tensorflow" not in sys.modules \
            and not any(isinstance(f, _QuietFirstImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFirstImport())
