"""Benchmarks: `python -m bench` (the pipeline's stages) and `python -m bench.serve` (the recognizer)."""
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]      # the repository; every benchmark runs from here


def table(title: str, header: list, rows: list) -> None:
    """Print rows as an aligned text table under `title` (flushed: parts run for minutes)."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    print(f"\n{title}\n" + fmt.format(*header) + "\n" + fmt.format(*("-" * w for w in widths)), flush=True)
    for row in rows:
        print(fmt.format(*row), flush=True)


def machine() -> str:
    """The machine every table names: CPU model, vector extensions, cores, Python."""
    from tasks.machine import describe
    return f"{describe()['summary']}, Python {platform.python_version()}"
