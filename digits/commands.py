"""The installed commands, runnable from any directory (pyproject.toml's [project.scripts]):

    digits-recognize PATH [PATH ...] [options]     python -m digits.recognize
    digits-serve [--host H] [--port P] [options]   python -m digits.server

Same options and output as the modules. Without --model they load the default model, the
ensemble of params.yaml (models/<member>.keras, with its test-time views), from the repository
this package is installed from (`make setup` installs it editable), wherever they are started.
Image paths, --model and --save-preprocessed are relative to the current directory.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def repository() -> Path | None:
    """The repository the package is installed from; None for an installed copy without one
    (then the current directory's params.yaml and models/ are the default)."""
    return ROOT if (ROOT / "params.yaml").is_file() else None


def recognize(argv=None) -> int:
    """digits-recognize: digits.recognize's command line."""
    from digits import recognize as cli
    return cli.main(argv, root=repository(), prog="digits-recognize")


def serve(argv=None) -> None:
    """digits-serve: digits.server's command line."""
    from digits import server
    server.main(argv, root=repository(), prog="digits-serve")
