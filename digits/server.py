"""HTTP service and drawing page: python -m digits.server [--host H] [--port P] [--model PATH] [--runtime R]

The model is loaded once, at start, run by R: keras, or its exports with onnx (ONNX Runtime) or
litert, which need no TensorFlow (digits/runtime.py); by default onnx where the model's exports
exist (`dvc repro export`), else keras. Endpoints:
  GET  /         the drawing page (digits/static: plain HTML and JavaScript, nothing from a CDN)
  GET  /health   {"status", "version", "models", "tta", "sha256", "bytes"}: which version and
                 model files answer
  POST /predict  an image upload (multipart/form-data, field "file", at most 5 MB) or JSON
                 {"pixels": [784 integers 0..255]} -> {"digit", "confidence", "probabilities",
                 "preprocessed", "version"} (the 28 x 28 image the model saw, as a PNG data URL)
  POST /feedback the image as /predict takes it plus the correct digit (form field "label", or JSON
                 key "label": an integer 0..9) and optionally "source": "page" (default "api") ->
                 201 {"id", "label", "predicted", "confidence", "model_version"}: the 28 x 28 image
                 the model saw is stored, pending review (digits/feedback.py: the store and the
                 review command); each client address may send params.yaml feedback.per_minute
                 requests in any 60 s (counted as they arrive), beyond that 429 with Retry-After
Without --model the server follows promotions: it serves the production version and switches to a
newly promoted one without a restart and without failing a request (digits/serving.py).
Bad input gets a 4xx and {"detail": message}, and nothing is stored; the server stays up:
  400 not an image / cannot be decoded / over 16 megapixels / malformed JSON or multipart
  413 over the size limit (5 MB of image, 64 KB of JSON)
  415 a content type other than multipart/form-data or application/json
  422 no ink (an empty drawing), no file in the form, pixels not 784 integers in 0..255; for
      /feedback a label missing or not an integer 0..9, a source other than "api" or "page"
  429 /feedback only: over the client's rate (Retry-After: seconds until it may send again)
  503 /feedback only: the feedback store cannot be written
"""
import argparse
import asyncio
import json
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import make_url
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from digits import feedback, preprocess
from digits.serving import Serving

MAX_UPLOAD = 5 * 1024 * 1024        # bytes of image
MAX_BODY = MAX_UPLOAD + 64 * 1024   # the multipart envelope around it
MAX_JSON = 64 * 1024                # a JSON body: a valid {"pixels": [...]} is under 4 KB
# Images are decoded and preprocessed by two threads of their own: at most two decoded images (each
# up to 16 MP, digits/preprocess.py's MAX_PIXELS) in memory at once, and only these two threads'
# malloc arenas ever hold one, so the memory a burst took is reused by the next. Measured (16 MP
# canvases 8 at a time, server idle at 701 MiB): peak 795 MiB, back to 703 after; decoded in the
# request pool's threads under a semaphore of 2 it peaked at 1,114 MiB and stayed at 1,123.
DECODERS = ThreadPoolExecutor(2, thread_name_prefix="decode")
STATIC = Path(__file__).resolve().parent / "static"
USAGE = ('send an image as multipart/form-data (field "file") or JSON {"pixels": [784 integers 0..255]}')
LABEL_USAGE = 'the correct digit goes in "label": an integer 0..9 (a form field, or a JSON key beside "pixels")'
WEB_SOURCES = ("api", "page")       # what a client may call itself; "cli" is the command line's


class TooLarge(Exception):
    pass


async def _limited(request: Request, limit: int):
    """The request body, chunk by chunk, stopping with TooLarge past `limit` bytes."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        yield chunk


def _too_large() -> HTTPException:
    return HTTPException(413, f"upload too large: at most {MAX_UPLOAD // (1024 * 1024)} MB")


def _json_too_large() -> HTTPException:
    return HTTPException(413, f"JSON body too large: at most {MAX_JSON // 1024} KB; " + USAGE)


class Undecodable(Exception):
    """An upload Pillow cannot decode; the message names it."""


def _decoded(data: bytes, name: str):
    try:
        return preprocess.open_image(data)
    except preprocess.NotAnImage as e:
        raise Undecodable(f"{name}: {e}") from None


async def _read_image(request: Request, mime: str):
    """(a function that gives the request's image (a Pillow image; an upload is decoded only when
    it is called), the body's other fields: the JSON object, or the form's fields but "file"), or
    HTTPException with the reason the body is refused."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise _too_large()
    try:
        if mime == "application/json":
            if length.isdigit() and int(length) > MAX_JSON:
                raise _json_too_large()
            try:
                body = b"".join([chunk async for chunk in _limited(request, MAX_JSON)])
            except TooLarge:
                raise _json_too_large() from None
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):     # RecursionError: nested thousands deep
                raise HTTPException(400, "the body is not valid JSON; " + USAGE) from None
            if not isinstance(data, dict) or "pixels" not in data:
                raise HTTPException(422, 'JSON body must be {"pixels": [784 integers 0..255]}')
            image = preprocess.pixels_image(data["pixels"])
            return (lambda: image), data
        parser = MultiPartParser(request.headers, _limited(request, MAX_BODY), max_files=4, max_fields=16)
        try:
            form = await parser.parse()
        except MultiPartException as e:
            raise HTTPException(400, f"malformed multipart body: {e.message}") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(422, 'no file in the form: send the image in a field named "file"')
        upload = next((v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)), files[0])
        data = await upload.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            raise _too_large()
        if not data:
            raise HTTPException(400, f"not an image: {upload.filename or 'the upload'} is empty")
        name = upload.filename or "the upload"
        fields = {k: v for k, v in form.multi_items() if k != "file"}
        return (lambda: _decoded(data, name)), fields
    except TooLarge:
        raise _too_large() from None
    except preprocess.BadPixels as e:
        raise HTTPException(422, str(e)) from None


class RateLimit:
    """At most `limit` requests per client in any `window` seconds: a sliding log of each client's
    recent request times, behind one lock (the server's threads share it)."""

    def __init__(self, limit: int, window: float = 60.0, clock=time.monotonic):
        if limit < 1:
            raise ValueError(f"a rate limit of {limit} per {window:g} s lets nothing through; at least 1")
        self.limit, self.window, self.clock = limit, window, clock
        self._times: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._swept = clock()

    def wait(self, client: str) -> float:
        """0 if `client` may go ahead now (and the request is counted), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            if now - self._swept >= self.window:      # forget clients quiet for a whole window
                self._times = {c: t for c, t in self._times.items() if now - t[-1] < self.window}
                self._swept = now
            times = self._times.setdefault(client, deque())
            while times and now - times[0] >= self.window:
                times.popleft()
            if len(times) >= self.limit:
                return self.window - (now - times[0])
            times.append(now)
            return 0.0


def _shown(value) -> str:
    """A value the client sent, for an error message: as JSON, cut short (it is echoed back)."""
    text = "a file" if isinstance(value, UploadFile) else json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _label(fields: dict, multipart: bool) -> int:
    """The correct digit from the body's fields, or HTTPException 422 naming what is wrong."""
    if "label" not in fields:
        raise HTTPException(422, f"no label: {LABEL_USAGE}")
    value = fields["label"]
    if multipart and isinstance(value, str) and len(value) == 1 and value in "0123456789":
        return int(value)
    if not multipart and type(value) is int and 0 <= value <= 9:      # not True, 7.0 or "7"
        return value
    raise HTTPException(422, f"label {_shown(value)} is not an integer 0..9: {LABEL_USAGE}")


def _source(fields: dict) -> str:
    source = fields.get("source", "api")
    if source not in WEB_SOURCES:
        raise HTTPException(422, f"source must be \"api\" or \"page\", got {_shown(source)}")
    return source


def create_app(predictor, store=None, per_minute: int | None = None, root: Path | None = None) -> FastAPI:
    """The app around a loaded predictor (digits.recognize.load_predictor; or a Serving, which follows
    promotions) and the feedback store
    (an engine or a URL; default: digits.feedback.database_url of the repository at `root`, the
    current directory by default), which is opened here, once. `per_minute` defaults to params.yaml's
    feedback.per_minute."""
    root = Path(root or ".")
    if per_minute is None:
        from digits import params, paths
        per_minute = params.load(root / paths.PARAMS).feedback.per_minute
    if store is None:
        store = feedback.database_url(root)
    engine = feedback.open_store(store) if isinstance(store, str) else store
    limit = RateLimit(per_minute)
    serving = predictor if isinstance(predictor, Serving) else Serving(predictor)

    app = FastAPI(title="digit-recognizer", docs_url=None, redoc_url=None)   # no CDN-served docs
    app.state.feedback, app.state.serving = engine, serving
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health():
        p = serving.current
        return {"status": "ok", "version": p.version, "models": [str(f) for f in p.files.values()],
                "tta": list(p.tta), "sha256": p.sha256, "bytes": sum(f.stat().st_size for f in p.files.values())}

    def content_type(request: Request) -> str:
        mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if mime not in ("multipart/form-data", "application/json"):
            raise HTTPException(415, f"unsupported content type {mime or '(none)'}: {USAGE}")
        return mime

    async def seen(load, predictor):
        """The 28 x 28 image the model sees and `predictor`'s probabilities."""
        try:
            image28 = await asyncio.get_running_loop().run_in_executor(DECODERS, lambda: preprocess.to_mnist(load()))
        except Undecodable as e:
            raise HTTPException(400, str(e)) from None
        except preprocess.NoInk as e:
            raise HTTPException(422, f"{e}; draw or upload a digit") from None
        return image28, await run_in_threadpool(lambda: predictor(image28[None])[0])

    @app.post("/predict")
    async def predict(request: Request):
        predictor = serving.current             # this request's version, whatever a swap does meanwhile
        load, _ = await _read_image(request, content_type(request))
        image28, probs = await seen(load, predictor)
        return {"digit": int(probs.argmax()), "confidence": float(probs.max()),
                "probabilities": [float(p) for p in probs], "preprocessed": preprocess.png_data_url(image28),
                "version": predictor.version}

    @app.post("/feedback", status_code=201)
    async def send_feedback(request: Request):
        client = request.client.host if request.client and request.client.host else "unknown"
        wait = limit.wait(client)
        if wait:
            raise HTTPException(429, f"too many feedback items from {client}: at most {per_minute} a minute; "
                                f"try again in {math.ceil(wait)} s", headers={"Retry-After": str(math.ceil(wait))})
        mime = content_type(request)
        load, fields = await _read_image(request, mime)
        label, source = _label(fields, mime == "multipart/form-data"), _source(fields)
        predictor = serving.current
        image28, probs = await seen(load, predictor)
        predicted, confidence, version = int(probs.argmax()), float(probs.max()), feedback.model_version(predictor)
        try:
            item = await run_in_threadpool(feedback.add, engine, image28, label, predicted, confidence, source,
                                           version, client[:64])
        except feedback.FeedbackError as e:         # the store's own checks, behind the ones above
            raise HTTPException(422, str(e)) from None
        except SQLAlchemyError:
            raise HTTPException(503, "the feedback store cannot be written now; try again later") from None
        return {"id": item, "label": label, "predicted": predicted, "confidence": confidence,
                "model_version": version}

    return app


def main(argv=None, root: Path | None = None, prog: str = "python -m digits.server") -> None:
    """The command line; without --model the ensemble of the repository at `root` (default: here)."""
    import uvicorn

    from digits import params, paths
    from digits.recognize import load_predictor
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", type=Path, action="append", metavar="FILE",
                        help="a .keras model; repeat to average several (default: the ensemble of params.yaml)")
    parser.add_argument("--runtime", choices=["keras", "onnx", "litert"],
                        help="what runs the model: keras, or its exports (ONNX Runtime, LiteRT: no TensorFlow); "
                             "default onnx where the exports of the model exist (dvc repro export), else keras")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--poll-seconds", type=float, default=2.0, metavar="S",
                        help="without --model: how often to look for a newly promoted version (default 2)")
    args = parser.parse_args(argv)
    try:                                  # the store first: a wrong URL fails before the model loads
        per_minute = params.load(Path(root or ".") / paths.PARAMS).feedback.per_minute
        url = feedback.database_url(Path(root or "."))
        store = feedback.open_store(url)
    except (OSError, ValueError, params.ParamsError, SQLAlchemyError) as e:
        raise SystemExit(f"error: the feedback store: {e} (params.yaml feedback.database, or env {feedback.ENV})")
    try:
        predictor = load_predictor(args.model, root=root, runtime=args.runtime)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}" + ("" if args.model else ", or name a model with --model"))
    print(f"version {predictor.version} on {predictor.runtime}: models "
          f"{', '.join(map(str, predictor.files.values()))} "
          f"(sha256 {predictor.sha256[:12]}); feedback "
          f"{make_url(url).render_as_string(hide_password=True)}; the drawing page: "
          f"http://{args.host}:{args.port}/", flush=True)
    serving = Serving(predictor, root=None if args.model else Path(root or "."), interval=args.poll_seconds,
                      load=lambda r: load_predictor(root=r, runtime=args.runtime))
    uvicorn.run(create_app(serving.start(), store, per_minute), host=args.host, port=args.port,
                log_level=args.log_level)


if __name__ == "__main__":
    main()
