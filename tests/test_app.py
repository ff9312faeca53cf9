"""The HTTP API against the real app: predictions, the page's files, and every bad input -> its 4xx
with a JSON message (in-process with TestClient, and over HTTP against `python -m digits.server`)."""
import base64
import io
import re
import warnings

import httpx
import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():     # starlette suggests httpx2; httpx 0.28 is the tested, pinned client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from conftest import ROOT
from digits.io import sha256
from digits.preprocess import open_image, to_mnist
from digits.server import MAX_UPLOAD, STATIC, create_app


@pytest.fixture(scope="module")
def client(predictor, tmp_path_factory):
    store = f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'feedback.db'}"
    with TestClient(create_app(predictor, store, root=ROOT)) as c:
        yield c


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    """The image encoded as a file (PNG, or `fmt`)."""
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def test_health_names_the_model_and_its_hash(client, digit_model):
    body = client.get("/health").json()
    assert body == {"status": "ok", "version": sha256(digit_model)[:12], "models": [str(digit_model)], "tta": [],
                    "sha256": sha256(digit_model), "bytes": digit_model.stat().st_size}


def test_an_uploaded_drawing_is_recognised(client, digit, predictor):
    data, label, _ = digit
    r = client.post("/predict", files={"file": ("drawing.png", data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"digit", "confidence", "probabilities", "preprocessed", "version"}
    assert body["digit"] == label and len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-4 and body["confidence"] == max(body["probabilities"])
    head, b64 = body["preprocessed"].split(",", 1)
    assert head == "data:image/png;base64"
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))
    assert np.array_equal(seen, to_mnist(open_image(data)))
    assert np.allclose(body["probabilities"], predictor(seen[None])[0], atol=1e-6)


def test_pixels_as_json_are_recognised(client, digit):
    _, label, original = digit
    r = client.post("/predict", json={"pixels": original.ravel().tolist()})
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == label


BAD = {
    "not an image": (dict(files={"file": ("x.png", b"plain text, not a PNG", "image/png")}), 400, "not an image"),
    "corrupt image": (dict(files={"file": ("x.png", png(Image.new("L", (64, 64), 255))[:70], "image/png")}),
                      400, "cannot decode"),
    "empty file": (dict(files={"file": ("x.png", b"", "image/png")}), 400, "is empty"),
    "empty drawing": (dict(files={"file": ("x.png", png(Image.new("RGBA", (280, 280), (0, 0, 0, 0))),
                                           "image/png")}), 422, "no ink"),
    "over the size limit": (dict(files={"file": ("x.png", b"\0" * (MAX_UPLOAD + 1), "image/png")}),
                            413, "at most 5 MB"),
    "no file in the form": (dict(data={"name": "seven"}, files={"other": (None, "x")}), 422, "no file"),
    "too few pixels": (dict(json={"pixels": [0] * 783}), 422, "784 integers"),
    "too many pixels": (dict(json={"pixels": [0] * 785}), 422, "784 integers"),
    "pixel over 255": (dict(json={"pixels": [0] * 783 + [256]}), 422, "0..255"),
    "negative pixel": (dict(json={"pixels": [-3] + [0] * 783}), 422, "0..255"),
    "fractional pixel": (dict(json={"pixels": [0.5] * 784}), 422, "integers"),
    "pixels not a list": (dict(json={"pixels": "0" * 784}), 422, "list"),
    "JSON without pixels": (dict(json={"image": []}), 422, '{"pixels"'),
    "malformed JSON": (dict(content=b'{"pixels": [1, 2', headers={"content-type": "application/json"}),
                       400, "not valid JSON"),
    "JSON nested 30,000 deep": (dict(content=b'{"pixels": ' + b"[" * 30000 + b"]" * 30000 + b"}",
                                     headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "JSON over 64 KB": (dict(json={"pixels": [0] * 784, "note": "x" * 70_000}), 413, "at most 64 KB"),
    "wrong content type": (dict(content=b"\x89PNG...", headers={"content-type": "image/png"}), 415,
                           "unsupported content type image/png"),
    "no content type": (dict(content=b"x"), 415, "unsupported content type"),
    "multipart without boundary": (dict(content=b"--x--", headers={"content-type": "multipart/form-data"}),
                                   400, "multipart"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gets_its_4xx_and_a_json_message(client, case):
    kwargs, status, message = BAD[case]
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and message in r.json()["detail"]


def test_an_upload_declared_too_large_is_refused_before_reading(client):
    r = client.post("/predict", content=b"x", headers={"content-type": "multipart/form-data; boundary=b",
                                                        "content-length": str(50 * 1024 * 1024)})
    assert r.status_code == 413 and "at most 5 MB" in r.json()["detail"]


def test_a_chunked_upload_is_cut_off_at_the_limit(client):
    chunks = (b"\0" * 65536 for _ in range(100))                   # 6.25 MB, no content-length
    r = client.post("/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "at most 5 MB" in r.json()["detail"]


def test_the_page_and_its_script_are_served_with_nothing_from_elsewhere(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and 'id="clear"' in page.text and 'id="feedback"' in page.text
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.text) > 100
    for f in STATIC.iterdir():                                   # offline: no CDN, no remote fonts
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", f.read_text()), f.name


@pytest.fixture(params=["keras", "onnx without TensorFlow"])
def real_server(request):
    """Each real server: Keras in this environment, and the light environment's on the exports."""
    return request.getfixturevalue("server" if request.param == "keras" else "light_server")


@pytest.mark.integration                # its own process: `python -m digits.server`
def test_the_real_server_survives_bad_input(real_server, digit):
    data, label, _ = digit
    with httpx.Client(base_url=real_server[1], timeout=30) as http:
        for case in ("not an image", "over the size limit", "empty drawing", "wrong content type", "too few pixels"):
            kwargs, status, message = BAD[case]
            r = http.post("/predict", **kwargs)
            assert r.status_code == status and message in r.json()["detail"], case
        r = http.post("/predict", files={"file": ("d.png", data, "image/png")})
        assert r.status_code == 200 and r.json()["digit"] == label
        assert http.get("/health").json()["status"] == "ok"


def test_a_small_png_of_a_huge_canvas_is_refused_and_a_huge_jpeg_is_decoded_reduced(client):
    huge = png(Image.new("L", (5000, 4000), 255))                       # 20 MP in a few KB
    r = client.post("/predict", files={"file": ("canvas.png", huge, "image/png")})
    assert r.status_code == 400 and "canvas.png: image too large to decode: 5000 x 4000" in r.json()["detail"]
    photo = Image.new("L", (6000, 4000), 230)                                # a 24 MP photo of a 1
    photo.paste(30, (2900, 1200, 3100, 2800))
    jpeg = png(photo, "JPEG")
    decoded = open_image(jpeg)
    assert decoded.size[0] < 6000 and min(decoded.size) >= 1024                # reduced while decoding
    r = client.post("/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text


def test_images_are_decoded_and_preprocessed_two_at_a_time(client, digit, monkeypatch):
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from digits import server
    active, peak, lock = [0], [0], threading.Lock()
    real = server.preprocess.to_mnist

    def slow(image, **kw):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return real(image, **kw)
    monkeypatch.setattr(server.preprocess, "to_mnist", slow)
    post = lambda _: client.post("/predict", files={"file": ("d.png", digit[0], "image/png")}).status_code
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(post, range(6))) == [200] * 6
    assert peak[0] == 2


@pytest.mark.integration                # the real server, its own process, under a bounded hostile burst
def test_a_hostile_burst_gets_4xx_json_while_health_answers_and_memory_stays_bounded(real_server, digit):
    from probes.hostile import hostile_burst
    proc, url = real_server
    data, label, _ = digit
    result = hostile_burst(url, proc.pid, uploads=32, at_once=8, valid=data)
    answers = result["answers"]
    assert {k: len(v) for k, v in answers.items()} == {"16 MP canvas": 16, "20 MP canvas": 16, "nested JSON": 4,
                                                      "100 KB JSON": 4}
    assert {s for s, _ in answers["16 MP canvas"]} == {422}
    assert all("no ink" in d for _, d in answers["16 MP canvas"]), answers["16 MP canvas"][0]
    assert {s for s, _ in answers["20 MP canvas"]} == {400}
    assert all("image too large to decode: 5000 x 4000" in d for _, d in answers["20 MP canvas"])
    assert {s for s, _ in answers["nested JSON"]} == {400} and {s for s, _ in answers["100 KB JSON"]} == {413}
    assert all(isinstance(d, str) and d for a in answers.values() for _, d in a)       # JSON {"detail": ...}
    assert result["health"] and set(result["health"]) == {200}                     # /health answered throughout
    assert result["valid"] and {s for _, s in result["valid"]} == {200}
    assert result["peak_rss"] < 1.2e9, f"server peak RSS {result['peak_rss'] / 2**20:.0f} MiB"
    assert httpx.post(f"{url}/predict", files={"file": ("d.png", data, "image/png")}).json()["digit"] == label
