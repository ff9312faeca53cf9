"""Benchmarks: `python -m bench` (the pipeline's stages) and `python -m bench.serve` (the recognizer)."""
import json
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


def concurrently(work, n: int) -> float:
    """Run `work()` in `n` threads at once; the wall seconds until the last one ends."""
    import threading
    import time
    threads = [threading.Thread(target=work) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def machine() -> str:
    """The machine every table names: CPU model, vector extensions, cores, Python."""
    from tasks.machine import describe
    return f"{describe()['summary']}, Python {platform.python_version()}"


def merge_rows(path: Path, rows: list, key, old: list | None = None) -> list:
    """A results file's rows (or `old`) with `rows` replacing those of the same key, sorted by
    key; written to `path` as {"rows": [...]}, and returned."""
    if old is None:
        old = json.loads(path.read_text())["rows"] if path.exists() else []
    new = {key(r) for r in rows}
    merged = sorted([r for r in old if key(r) not in new] + rows, key=key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": merged}, indent=1) + "\n")
    return merged
