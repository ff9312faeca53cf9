"""The feedback store (digits/feedback.py), its review command and POST /feedback: items are
validated, reviewed only from pending, exported once (accepted only) into one whole batch file,
and the API stores nothing on any error and at most params feedback.per_minute items per client."""
import contextlib
import csv
import io
import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

with warnings.catch_warnings():     # starlette suggests httpx2; httpx 0.28 is the tested, pinned client
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from conftest import ROOT
from digits import feedback, params
from digits.io import LABEL, PIXELS
from digits.preprocess import open_image, pixels_image, to_mnist
from digits.server import MAX_UPLOAD, RateLimit, create_app

T0 = datetime(2026, 5, 4, 12, 30, 15, tzinfo=timezone.utc)


def image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


@pytest.fixture
def store(tmp_path):
    engine = feedback.open_store(f"sqlite:///{tmp_path / 'db' / 'feedback.db'}")
    yield engine
    engine.dispose()


def add(store, seed: int, label: int, source: str = "api") -> int:
    return feedback.add(store, image(seed), label, (label + 1) % 10, 0.75, source, "abc123def456", "10.0.0.1")


def test_an_item_is_stored_pending_with_every_field(store):
    item_id = feedback.add(store, image(0), 7, 1, 0.875, "page", "abc123def456", "192.0.2.7", now=T0)
    item = feedback.get(store, item_id)
    assert np.array_equal(item.image, image(0)) and len(item.pixels) == 784
    assert (item.label, item.predicted, item.confidence, item.source, item.model_version, item.client) == \
           (7, 1, 0.875, "page", "abc123def456", "192.0.2.7")
    assert item.created_at == T0 and item.created_at.tzinfo is not None
    assert (item.status, item.reviewed_at, item.exported) == ("pending", None, None)


BAD_ITEMS = {
    "float image": (dict(image=image(0).astype(np.float32)), "uint8 array of shape (28, 28)"),
    "image with a channel axis": (dict(image=image(0)[..., None]), "(28, 28, 1)"),
    "image as a list": (dict(image=image(0).tolist()), "got list"),
    "label 10": (dict(label=10), "label must be an integer 0..9, got 10"),
    "label -1": (dict(label=-1), "got -1"),
    "label True": (dict(label=True), "got True"),
    "label 7.0": (dict(label=7.0), "got 7.0"),
    "label '7'": (dict(label="7"), "got '7'"),
    "unknown source": (dict(source="web"), "source must be one of api, page, cli, got 'web'"),
    "confidence over 1": (dict(confidence=1.5), "confidence must be a number in 0..1"),
    "no model version": (dict(model_version=""), "model_version must be a non-empty string"),
}


@pytest.mark.parametrize("case", BAD_ITEMS)
def test_a_bad_item_is_refused_with_a_clear_message_and_not_stored(store, case):
    changes, message = BAD_ITEMS[case]
    item = dict(image=image(0), label=3, predicted=5, confidence=0.5, source="api", model_version="v1",
                client="10.0.0.1") | changes
    with pytest.raises(ValueError, match=re.escape(message)):
        feedback.add(store, **item)
    assert feedback.items(store) == []


def test_only_pending_items_are_accepted_or_rejected_and_a_bad_list_changes_nothing(store):
    a, b, c = add(store, 0, 1), add(store, 1, 2), add(store, 2, 3)
    feedback.accept(store, [a], now=T0)
    feedback.reject(store, [b])
    assert [(i.id, i.status) for i in feedback.items(store)] == [(a, "accepted"), (b, "rejected"), (c, "pending")]
    assert feedback.get(store, a).reviewed_at == T0
    with pytest.raises(feedback.FeedbackError, match=f"cannot mark rejected: #{a} is accepted, not pending"):
        feedback.reject(store, [a])
    with pytest.raises(feedback.FeedbackError, match=f"#{b} is rejected, not pending; #99 is unknown"):
        feedback.accept(store, [c, b, 99])
    assert feedback.get(store, c).status == "pending"                 # all or nothing
    assert [i.id for i in feedback.items(store, "pending")] == [c]
    with pytest.raises(feedback.FeedbackError, match="no feedback item #42"):
        feedback.get(store, 42)


def read_batch(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[int(v) for v in row] for row in rows[1:]]


def test_accepted_items_are_exported_once_and_rejected_ones_never(store, tmp_path):
    inbox = tmp_path / "inbox"
    ids = {seed: add(store, seed, label) for seed, label in [(0, 4), (1, 9), (2, 0), (3, 6), (4, 2)]}
    feedback.accept(store, [ids[0], ids[1], ids[3]])
    feedback.reject(store, [ids[2]])

    path, n = feedback.export(store, inbox, now=T0)
    assert path == inbox / "feedback-20260504T123015Z.csv" and n == 3
    header, rows = read_batch(path)
    assert header == [LABEL, *PIXELS] and len(header) == 785
    assert rows == [[label, *image(seed).ravel().tolist()] for seed, label in [(0, 4), (1, 9), (3, 6)]]
    assert {i.id: i.exported for i in feedback.items(store, "accepted")} == {ids[s]: path.name for s in (0, 1, 3)}

    assert feedback.export(store, inbox, now=T0 + timedelta(minutes=1)) == (None, 0)    # nothing new
    feedback.accept(store, [ids[4]])
    later, n = feedback.export(store, inbox, now=T0)                  # the same second: its own file
    assert later.name == "feedback-20260504T123015Z-2.csv" and n == 1
    assert read_batch(later)[1] == [[2, *image(4).ravel().tolist()]]
    assert set(os.listdir(inbox)) == {path.name, later.name}
    assert feedback.get(store, ids[2]).exported is None              # the rejected one never left


def test_the_batch_appears_in_the_inbox_only_whole(store, tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    for seed in range(3):
        feedback.accept(store, [add(store, seed, seed)])
    seen = []
    real_replace = os.replace

    def replace(src, dst):                               # what the inbox holds just before the rename
        seen.append((sorted(os.listdir(inbox)), len(open(src).read().splitlines())))
        real_replace(src, dst)
    monkeypatch.setattr(feedback.os, "replace", replace)
    path, _ = feedback.export(store, inbox, now=T0)
    (names, lines), = seen
    assert len(names) == 1 and not names[0].endswith(".csv") and lines == 4    # complete, under a name intake skips
    assert os.listdir(inbox) == [path.name]


def test_a_failed_export_leaves_no_file_and_marks_nothing(store, tmp_path):
    inbox = tmp_path / "inbox"
    good, bad = add(store, 0, 1), add(store, 1, 2)
    feedback.accept(store, [good, bad])
    with store.begin() as conn:                          # a row damaged behind the store's back
        conn.execute(feedback.feedback.update().where(feedback.feedback.c.id == bad).values(pixels=b"\0" * 10))
    with pytest.raises(feedback.FeedbackError, match=f"item #{bad} holds 10 pixels, not 784"):
        feedback.export(store, inbox, now=T0)
    assert os.listdir(inbox) == []                       # not even a temporary file
    assert [i.exported for i in feedback.items(store)] == [None, None]


def test_the_url_comes_from_params_or_the_environment_relative_to_the_repository(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    assert feedback.database_url(tmp_path, {}) == f"sqlite:///{tmp_path / 'data/feedback/feedback.db'}"
    env = {feedback.ENV: "sqlite:///elsewhere/f.db"}
    assert feedback.database_url(tmp_path, env) == f"sqlite:///{tmp_path / 'elsewhere/f.db'}"
    pg = "postgresql+psycopg://digits:secret@db.example:5432/feedback"
    assert feedback.database_url(tmp_path / "no-repo", {feedback.ENV: pg}) == pg
    engine = feedback.open_store(feedback.database_url(tmp_path, {}))
    assert (tmp_path / "data/feedback/feedback.db").is_file()       # folder made, table created
    assert sa.inspect(engine).get_table_names() == ["feedback"]
    engine.dispose()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository folder with the project's params.yaml; its default store, reached through it."""
    monkeypatch.delenv(feedback.ENV, raising=False)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    engine = feedback.open_store(feedback.database_url(tmp_path))
    yield tmp_path, engine
    engine.dispose()


def review(repo_dir, *args):
    return feedback.main([*args, "--repo", str(repo_dir)])


def test_the_review_command_lists_shows_accepts_and_exports(repo, capsys, tmp_path):
    root, engine = repo
    a, b = add(engine, 0, 7, "page"), add(engine, 1, 3, "cli")
    assert review(root, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"#{a} ")
    assert all(w in lines[0] for w in ("label 7", "predicted 8", "75.0%", "page", "model abc123def456", "pending"))

    png = tmp_path / "seen.png"
    assert review(root, "show", str(a), "--png", str(png)) == 0
    out = capsys.readouterr().out
    assert "label      7" in out and "client     10.0.0.1" in out
    art = [line for line in out.splitlines() if len(line) == 56]
    assert len(art) == 28                                            # the image, two characters a pixel
    assert np.array_equal(np.asarray(Image.open(png)), image(0))

    assert review(root, "accept", str(a)) == 0 and review(root, "reject", str(b)) == 0
    assert capsys.readouterr().out == f"accepted #{a}\nrejected #{b}\n"
    assert review(root, "export") == 0
    batch, = (root / "data/inbox").iterdir()
    assert re.fullmatch(r"feedback-\d{8}T\d{6}Z\.csv", batch.name)
    assert f"exported 1 items to {root / 'data/inbox' / batch.name}" in capsys.readouterr().out
    assert read_batch(batch)[1] == [[7, *image(0).ravel().tolist()]]
    assert review(root, "export") == 0
    assert "nothing to export" in capsys.readouterr().out and len(list((root / "data/inbox").iterdir())) == 1
    assert review(root, "list", "--status", "all") == 0
    assert f"exported in {batch.name}" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (("accept", "99"), "cannot mark accepted: #99 is unknown (nothing was changed)"),
    (("show", "99"), "no feedback item #99"),
    (("reject", "1", "99"), "#99 is unknown"),
    (("accept", "2"), "cannot mark accepted: #2 is rejected, not pending"),
])
def test_the_review_command_names_an_unknown_id_or_a_wrong_transition(repo, capsys, args, message):
    root, engine = repo
    add(engine, 0, 1)
    feedback.reject(engine, [add(engine, 1, 2)])
    assert review(root, *args) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert [i.status for i in feedback.items(engine)] == ["pending", "rejected"]


def test_the_rate_limit_is_a_sliding_minute_per_client():
    now = [0.0]
    limit = RateLimit(2, clock=lambda: now[0])
    assert limit.wait("a") == 0
    now[0] = 10.0
    assert limit.wait("a") == 0
    now[0] = 15.0
    assert limit.wait("a") == 45.0 and limit.wait("b") == 0       # b is not limited by a
    now[0] = 60.0
    assert limit.wait("a") == 0 and limit.wait("a") == 10.0        # the first one's minute is over


# The API, on the session's small model, each test with an app (and a rate limit) of its own.

@contextlib.contextmanager
def fresh_api(predictor, folder, **kw):
    """(TestClient, the app's store) for a new app on a temporary SQLite store."""
    app = create_app(predictor, f"sqlite:///{folder / 'feedback.db'}", root=ROOT, **kw)
    with TestClient(app) as client:
        yield client, app.state.feedback
    app.state.feedback.dispose()


@pytest.fixture
def api(predictor, tmp_path):
    """A new app with params.yaml's rate."""
    with fresh_api(predictor, tmp_path) as pair:
        yield pair


@pytest.fixture(scope="module")
def seven(mnist):
    """A real MNIST test digit: (28 x 28 uint8, its label)."""
    return mnist[2][0].reshape(28, 28), int(mnist[3][0])


def test_json_pixels_are_stored_with_what_the_model_said(api, seven, predictor):
    client, store = api
    pixels, _ = seven
    before = datetime.now(timezone.utc)
    r = client.post("/feedback", json={"pixels": pixels.ravel().tolist(), "label": 4})
    assert r.status_code == 201, r.text
    body = r.json()
    seen = to_mnist(pixels_image(pixels.ravel().tolist()))
    probs = predictor(seen[None])[0]
    assert body == {"id": body["id"], "label": 4, "predicted": int(probs.argmax()),
                    "confidence": pytest.approx(float(probs.max())), "model_version": predictor.sha256[:12]}
    item, = feedback.items(store)
    assert item.id == body["id"] and np.array_equal(item.image, seen)
    assert (item.label, item.predicted, item.source, item.model_version, item.client, item.status) == \
           (4, body["predicted"], "api", predictor.sha256[:12], "testclient", "pending")
    assert item.confidence == pytest.approx(body["confidence"])
    assert before <= item.created_at <= datetime.now(timezone.utc)


def test_an_uploaded_png_is_stored_as_the_page_sends_it(api, seven):
    client, store = api
    pixels, _ = seven
    data = io.BytesIO()
    Image.fromarray(np.pad(255 - pixels, 40, constant_values=255)).save(data, format="PNG")   # dark on light
    r = client.post("/feedback", files={"file": ("d.png", data.getvalue(), "image/png")},
                    data={"label": "9", "source": "page"})
    assert r.status_code == 201, r.text
    item = feedback.get(store, r.json()["id"])
    assert (item.label, item.source) == (9, "page")
    assert np.array_equal(item.image, to_mnist(open_image(data.getvalue())))


BAR = np.zeros((28, 28), np.uint8)
BAR[6:22, 13:15] = 255                                   # a 1


def pixels_with(label, **extra):
    return dict(json={"pixels": BAR.ravel().tolist(), "label": label} | extra)


BAD = {
    "label 10": (pixels_with(10), 422, "label 10 is not an integer 0..9"),
    "label -1": (pixels_with(-1), 422, "label -1 is not"),
    'label "7"': (pixels_with("7"), 422, 'label "7" is not'),
    "label true": (pixels_with(True), 422, "label true is not"),
    "label 7.5": (pixels_with(7.5), 422, "label 7.5 is not"),
    "no label": (dict(json={"pixels": [0] * 784}), 422, "no label"),
    "form label 10": (dict(files={"file": ("d.png", b"x", "image/png")}, data={"label": "10"}), 422, 'label "10"'),
    "form label seven": (dict(files={"file": ("d.png", b"x", "image/png")}, data={"label": "seven"}), 422,
                         'label "seven"'),
    "source cli": (pixels_with(3, source="cli"), 422, 'source must be "api" or "page", got "cli"'),
    "image over the upload limit": (dict(files={"file": ("x.png", b"\0" * (MAX_UPLOAD + 1), "image/png")},
                                         data={"label": "3"}), 413, "at most 5 MB"),
    "JSON nested 30,000 deep": (dict(content=b'{"label": 3, "pixels": ' + b"[" * 30000 + b"]" * 30000 + b"}",
                                     headers={"content-type": "application/json"}), 400, "not valid JSON"),
    "JSON over 64 KB": (pixels_with(3, note="x" * 70_000), 413, "at most 64 KB"),
    "bad pixels": (dict(json={"pixels": [0] * 783, "label": 3}), 422, "784 integers"),
    "empty drawing": (dict(json={"pixels": [0] * 784, "label": 3}), 422, "no ink"),
    "not an image": (dict(files={"file": ("x.png", b"text", "image/png")}, data={"label": "3"}), 400, "not an image"),
    "wrong content type": (dict(content=b"x", headers={"content-type": "text/plain"}), 415, "unsupported"),
}


def test_every_bad_request_gets_its_4xx_json_and_stores_nothing(predictor, tmp_path):
    with fresh_api(predictor, tmp_path, per_minute=len(BAD)) as (client, store):
        for case, (kwargs, status, message) in BAD.items():
            r = client.post("/feedback", **kwargs)
            assert r.status_code == status, (case, r.text)
            assert r.headers["content-type"] == "application/json" and message in r.json()["detail"], (case, r.text)
        assert feedback.items(store) == []


def test_a_flood_from_one_client_is_cut_at_the_rate_and_another_client_still_gets_in(api, predictor):
    client, store = api
    per_minute = params.load(ROOT / "params.yaml").feedback.per_minute
    post = lambda _: client.post("/feedback", **pixels_with(1))
    with ThreadPoolExecutor(8) as pool:                   # at once, from one address
        answers = list(pool.map(post, range(per_minute + 5)))
    assert sorted(r.status_code for r in answers) == [201] * per_minute + [429] * 5
    refused = [r for r in answers if r.status_code == 429]
    assert all("at most %d a minute" % per_minute in r.json()["detail"] for r in refused)
    assert all(1 <= int(r.headers["retry-after"]) <= 60 for r in refused)
    assert len(feedback.items(store)) == per_minute

    with TestClient(client.app, client=("198.51.100.2", 5000)) as other:
        r = other.post("/feedback", **pixels_with(2))
    assert r.status_code == 201, r.text
    assert [i.client for i in feedback.items(store)] == ["testclient"] * per_minute + ["198.51.100.2"]
