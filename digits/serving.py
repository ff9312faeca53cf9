"""The predictor a running server answers with, following promotions without a restart.

A server started without --model serves the production version (serving/production.json, written
by digits/registry.py). A watcher thread looks at that file every `interval` seconds; when it
changes, the new version is loaded beside the old one, off the request path, and then replaces it
in one assignment. Each request takes the current predictor once, at its start, so a request that
began before the swap finishes with the old version and none fails; requests after it get the new
one. A version that fails to load is logged and the old one keeps serving.
"""
import logging
import threading
from pathlib import Path

from digits import paths

log = logging.getLogger("digits.serving")


class Serving:
    def __init__(self, predictor, root: Path | None = None, load=None, interval: float = 1.0):
        """`predictor` answers now; with `root`, serving/production.json there is followed, each new
        version loaded with `load(root)` (digits.recognize.load_predictor by default)."""
        self.current = predictor
        self.root, self.interval = (Path(root) if root is not None else None), interval
        self._load = load
        self._seen = self._stamp()
        self._stop = threading.Event()
        self._thread = None

    def _stamp(self):
        if self.root is None:
            return None
        try:
            st = (self.root / paths.PRODUCTION).stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def check(self) -> bool:
        """Load and swap in the production version if its record changed; True if it swapped."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        self._seen = stamp
        load = self._load
        if load is None:
            from digits.recognize import load_predictor
            load = lambda root: load_predictor(root=root)
        try:
            new = load(self.root)
        except Exception as e:          # a broken record or file must not take the server down
            log.error("could not load the promoted model (%s): still serving %s", e, self.current.version)
            return False
        old, self.current = self.current, new
        log.warning("now serving %s (was %s)", new.version, old.version)
        return True

    def start(self) -> "Serving":
        if self.root is not None and self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="production-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()
