"""HTTP service and drawing page: python -m app.server [--host H] [--port P] [--model PATH]

The model is loaded once, at start. Endpoints:
  GET  /         the drawing page (app/static: plain HTML and JavaScript, nothing from a CDN)
  GET  /health   {"status", "version", "models", "tta", "sha256", "bytes"}: which version and
                 model files answer
  POST /predict  an image upload (multipart/form-data, field "file", at most 5 MB) or JSON
                 {"pixels": [784 integers 0..255]} -> {"digit", "confidence", "probabilities",
                 "preprocessed", "version"} (the 28 x 28 image the model saw, as a PNG data URL)
Without --model the server follows promotions: it serves the production version and switches to a
newly promoted one without a restart and without failing a request (app/serving.py).
Bad input gets a 4xx and {"detail": message}; the server stays up:
  400 not an image / cannot be decoded / over 16 megapixels / malformed JSON or multipart
  413 over the size limit (5 MB of image, 64 KB of JSON)
  415 a content type other than multipart/form-data or application/json
  422 no ink (an empty drawing), no file in the form, pixels not 784 integers in 0..255
"""
import argparse
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from app.serving import Serving
from tasks import preprocess

MAX_UPLOAD = 5 * 1024 * 1024        # bytes of image
MAX_BODY = MAX_UPLOAD + 64 * 1024   # the multipart envelope around it
MAX_JSON = 64 * 1024                # a JSON body: a valid {"pixels": [...]} is under 4 KB
# Images are decoded and preprocessed by two threads of their own: at most two decoded images (each
# up to 16 MP, tasks/preprocess.py's MAX_PIXELS) in memory at once, and only these two threads'
# malloc arenas ever hold one, so the memory a burst took is reused by the next. Measured (16 MP
# canvases 8 at a time, server idle at 701 MiB): peak 795 MiB, back to 703 after; decoded in the
# request pool's threads under a semaphore of 2 it peaked at 1,114 MiB and stayed at 1,123.
DECODERS = ThreadPoolExecutor(2, thread_name_prefix="decode")
STATIC = Path(__file__).resolve().parent / "static"
USAGE = ('send an image as multipart/form-data (field "file") or JSON {"pixels": [784 integers 0..255]}')


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
    """A function that gives the request's image (a Pillow image; an upload is decoded only when
    it is called), or HTTPException with the reason the body is refused."""
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
            return lambda: image
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
        return lambda: _decoded(data, name)
    except TooLarge:
        raise _too_large() from None
    except preprocess.BadPixels as e:
        raise HTTPException(422, str(e)) from None


def create_app(predictor) -> FastAPI:
    """The app around a loaded predictor (tasks.recognize.load_predictor), or a Serving that
    follows promotions."""
    serving = predictor if isinstance(predictor, Serving) else Serving(predictor)
    app = FastAPI(title="digit-recognizer", docs_url=None, redoc_url=None)   # no CDN-served docs
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/health")
    def health():
        p = serving.current
        return {"status": "ok", "version": p.version, "models": [str(f) for f in p.files.values()],
                "tta": list(p.tta), "sha256": p.sha256, "bytes": sum(f.stat().st_size for f in p.files.values())}

    @app.post("/predict")
    async def predict(request: Request):
        predictor = serving.current             # this request's version, whatever a swap does meanwhile
        mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if mime not in ("multipart/form-data", "application/json"):
            raise HTTPException(415, f"unsupported content type {mime or '(none)'}: {USAGE}")
        load = await _read_image(request, mime)

        try:
            image28 = await asyncio.get_running_loop().run_in_executor(DECODERS, lambda: preprocess.to_mnist(load()))
        except Undecodable as e:
            raise HTTPException(400, str(e)) from None
        except preprocess.NoInk as e:
            raise HTTPException(422, f"{e}; draw or upload a digit") from None
        probs = await run_in_threadpool(lambda: predictor(image28[None])[0])
        return {"digit": int(probs.argmax()), "confidence": float(probs.max()),
                "probabilities": [float(p) for p in probs], "preprocessed": preprocess.png_data_url(image28),
                "version": predictor.version}

    return app


def main(argv=None, root: Path | None = None, prog: str = "python -m app.server") -> None:
    """The command line; without --model the ensemble of the repository at `root` (default: here)."""
    import uvicorn

    from tasks.recognize import load_predictor
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", type=Path, action="append", metavar="FILE",
                        help="a .keras model; repeat to average several (default: the ensemble of params.yaml)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--poll-seconds", type=float, default=2.0, metavar="S",
                        help="without --model: how often to look for a newly promoted version (default 2)")
    args = parser.parse_args(argv)
    try:
        predictor = load_predictor(args.model, root=root)
    except FileNotFoundError as e:
        raise SystemExit(f"error: {e}" + ("" if args.model else ", or name a model with --model"))
    print(f"version {predictor.version}: models {', '.join(map(str, predictor.files.values()))} "
          f"(sha256 {predictor.sha256[:12]}); the drawing page: http://{args.host}:{args.port}/", flush=True)
    serving = Serving(predictor, root=None if args.model else Path(root or "."), interval=args.poll_seconds)
    uvicorn.run(create_app(serving.start()), host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
