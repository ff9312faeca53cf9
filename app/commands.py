"""The installed commands, runnable from any directory (pyproject.toml's [project.scripts]):

    digits-recognize PATH [PATH ...] [options]     python -m tasks.recognize
    digits-serve [--host H] [--port P] [options]   python -m app.server

Same options and output as the modules. The pipeline names its files relative to the repository
root, where the stages run (tasks/paths.py); so without --model these commands load the default
model, the ensemble of params.yaml (models/<member>.keras, with its test-time views), from the
repository this package is installed from (`make setup` installs it editable), wherever they are
started. Image paths, --model and --save-preprocessed are relative to the current directory.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repository_default(load_predictor):
    """`load_predictor` whose default (no model files given) is read from ROOT, not from the
    current directory: params.yaml's ensemble members and TTA views, as absolute model paths."""
    def load(model_files=None, tta=None):
        from tasks import params, paths
        if model_files is not None or not (ROOT / paths.PARAMS).is_file():
            return load_predictor(model_files, tta)       # an installed copy with no repository
        ensemble = params.load(ROOT / paths.PARAMS).ensemble
        files = [ROOT / paths.member(name).model for name in ensemble.members]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise FileNotFoundError(f"no model {', '.join(missing)}; train the ensemble with `dvc repro` "
                                    f"in {ROOT}, or name a model with --model")
        return load_predictor(files, ensemble.tta if tta is None else tta)
    return load


def _with_repository_default():
    from tasks import recognize
    recognize.load_predictor = repository_default(recognize.load_predictor)
    return recognize


def recognize(argv=None) -> int:
    """digits-recognize: tasks.recognize's command line."""
    return _with_repository_default().main(argv)


def serve(argv=None) -> None:
    """digits-serve: app.server's command line."""
    _with_repository_default()
    from app import server
    server.main(argv)
