"""A hostile burst against the recognizer's HTTP service: the API tests' and `python -m bench.serve
--only hostile`'s load (uploads that decode to huge images, nested and oversized JSON) sent while a
valid drawing and /health keep being asked for, with the server's peak memory sampled."""
import threading
import time

from probes.render import drawn_digit


def hostile_payloads(uploads: int = 32) -> list:
    """(name, httpx.post keyword arguments) of a hostile burst: small PNGs of huge blank canvases,
    alternately 16 MP (decoded, then no ink: 422) and 20 MP (refused unread: 400), and JSON bodies
    nested 30,000 deep (400) or of 100 KB (413)."""
    import io
    import json

    from PIL import Image

    def png(size):
        buf = io.BytesIO()
        Image.new("L", size, 255).save(buf, format="PNG", optimize=True)
        return buf.getvalue()
    canvases = {"16 MP canvas": png((4000, 4000)), "20 MP canvas": png((5000, 4000))}
    nested = ('{"pixels": ' + "[" * 30_000 + "]" * 30_000 + "}").encode()
    large = json.dumps({"pixels": [0] * 784, "padding": "x" * 100_000}).encode()
    out = []
    for i in range(uploads):
        name = list(canvases)[i % 2]
        out.append((name, {"files": {"file": (f"{i}.png", canvases[name], "image/png")}}))
        if i % 4 == 3:
            body = nested if i % 8 == 3 else large
            out.append(("nested JSON" if body is nested else "100 KB JSON",
                        {"content": body, "headers": {"content-type": "application/json"}}))
    return out


def hostile_burst(url: str, pid: int, uploads: int = 32, at_once: int = 8, valid: bytes | None = None) -> dict:
    """Send hostile_payloads() `at_once` at a time while one client posts `valid` (a drawing) and
    another polls /health, sampling the server's resident memory every 20 ms. Returns the answers
    ({kind: [(status, JSON detail or the raw text)]}), the valid requests' seconds and statuses,
    the /health statuses (an exception counts as None) and the peak RSS in bytes."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import psutil
    server, done = psutil.Process(pid), threading.Event()
    peak, answers, valid_runs, health = [server.memory_info().rss], {}, [], []

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], server.memory_info().rss)
            time.sleep(0.02)

    def post(item):
        kind, kwargs = item
        with httpx.Client(base_url=url, timeout=120) as client:
            r = client.post("/predict", **kwargs)
        try:
            detail = r.json().get("detail")
        except ValueError:
            detail = r.text
        return kind, r.status_code, detail

    def keep_posting():
        with httpx.Client(base_url=url, timeout=120) as client:
            while not done.is_set():
                t0 = time.perf_counter()
                r = client.post("/predict", files={"file": ("drawing.png", valid or drawn_digit(), "image/png")})
                valid_runs.append((time.perf_counter() - t0, r.status_code))

    def poll_health():
        with httpx.Client(base_url=url, timeout=10) as client:
            while not done.is_set():
                try:
                    health.append(client.get("/health").status_code)
                except httpx.HTTPError:
                    health.append(None)
                time.sleep(0.1)
    side = [threading.Thread(target=f) for f in (sample, keep_posting, poll_health)]
    for t in side:
        t.start()
    try:
        with ThreadPoolExecutor(at_once) as pool:
            for kind, status, detail in pool.map(post, hostile_payloads(uploads)):
                answers.setdefault(kind, []).append((status, detail))
    finally:
        done.set()
        for t in side:
            t.join()
    return {"answers": answers, "valid": valid_runs, "health": health, "peak_rss": peak[0]}
