"""The feedback store: corrections users send from the recognizer, kept for review, exported as batches.

A user who gets a wrong answer sends the right digit (POST /feedback, the drawing page's "Wrong?"
control, `python -m digits.recognize IMAGE --label D`). Each item keeps the 28 x 28 uint8 image the
model saw, the label given, what the model said (digit, confidence, model version), where it came
from (source, client address) and when. Items are untrusted: they arrive "pending", a person
accepts or rejects each one, and only accepted items leave, once, in a batch file in Kaggle's
train.csv format (label,pixel0..pixel783) written into the inbox (params.yaml intake.inbox) that
the intake stage reads. One table, SQLAlchemy Core, so the same code runs on SQLite (the default,
data/feedback/feedback.db) or PostgreSQL (env DIGITS_FEEDBACK_DB).

The review command:

    python -m digits.feedback list [--status pending|accepted|rejected|all]
    python -m digits.feedback show ID [--png FILE]
    python -m digits.feedback accept ID [ID ...]
    python -m digits.feedback reject ID [ID ...]
    python -m digits.feedback export            -> <inbox>/feedback-<YYYYmmddTHHMMSSZ>.csv

`--repo DIR` (default: here) names the repository whose params.yaml is read. An unknown id or a
wrong transition (only pending items can be accepted or rejected) changes nothing, prints a
message naming the ids on stderr and exits 1.
"""
import argparse
import csv
import dataclasses
import math
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from digits.io import LABEL, PIXELS, SIDE

ENV = "DIGITS_FEEDBACK_DB"
SOURCES = ("api", "page", "cli")
STATUSES = ("pending", "accepted", "rejected")
SHADES = " .:-=+*#%@"                  # ASCII art, dark to light (ink is light in MNIST's format)


class FeedbackError(ValueError):
    """An item the store refuses, an unknown id, a wrong transition; the message says which."""


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware UTC datetimes in and out, also on SQLite (which stores them without a zone)."""
    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            raise ValueError("a naive datetime: the store keeps UTC times with their zone")
        return None if value is None else value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


metadata = sa.MetaData()
feedback = sa.Table(
    "feedback", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("pixels", sa.LargeBinary, nullable=False),       # 784 bytes: 28 x 28 uint8, row-major
    sa.Column("label", sa.Integer, nullable=False),            # the digit the user says it is
    sa.Column("predicted", sa.Integer, nullable=False),        # what the model said
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("source", sa.String(8), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("client", sa.String(64), nullable=False),        # the client's address, or "cli"
    sa.Column("status", sa.String(8), nullable=False, index=True),
    sa.Column("reviewed_at", UTCDateTime, nullable=True),
    sa.Column("exported", sa.String(128), nullable=True),      # the batch file it went out in
    sa.CheckConstraint("label BETWEEN 0 AND 9", name="label_digit"),
    sa.CheckConstraint("predicted BETWEEN 0 AND 9", name="predicted_digit"),
    sa.CheckConstraint("source IN ('api', 'page', 'cli')", name="known_source"),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'rejected')", name="known_status"),
)


@dataclasses.dataclass(frozen=True)
class Item:
    id: int
    created_at: datetime
    pixels: bytes = dataclasses.field(repr=False)
    label: int
    predicted: int
    confidence: float
    source: str
    model_version: str
    client: str
    status: str
    reviewed_at: datetime | None
    exported: str | None

    @property
    def image(self) -> np.ndarray:
        """The 28 x 28 uint8 image the model saw."""
        return np.frombuffer(self.pixels, np.uint8).reshape(SIDE, SIDE)


def database_url(root: Path, environ=os.environ) -> str:
    """The store's SQLAlchemy URL: env DIGITS_FEEDBACK_DB, else params.yaml feedback.database of the
    repository at `root`; a relative SQLite path is taken relative to `root`."""
    url = environ.get(ENV)
    if not url:
        from digits import params, paths
        url = params.load(Path(root) / paths.PARAMS).feedback.database
    parsed = sa.make_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:" \
            and not database.startswith("file:") and not Path(database).is_absolute():
        parsed = parsed.set(database=str((Path(root) / database).resolve()))
    return parsed.render_as_string(hide_password=False)


def open_store(url: str) -> sa.Engine:
    """An engine on the store at `url` (a SQLite file's folder is created), its table made if new."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:" \
            and not parsed.database.startswith("file:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)
    metadata.create_all(engine)
    return engine


def model_version(predictor) -> str:
    """What identifies the model that answered: its version if it has one, else its files' hash."""
    return getattr(predictor, "version", None) or predictor.sha256[:12]


def _digit(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 9:
        raise FeedbackError(f"{name} must be an integer 0..9, got {value!r}")
    return int(value)


def _text(value, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise FeedbackError(f"{name} must be a non-empty string of at most {limit} characters, got {value!r}")
    return value


def add(engine: sa.Engine, image, label, predicted, confidence, source: str, model_version: str,
        client: str, now: datetime | None = None) -> int:
    """Store one pending item (validated; FeedbackError says what is wrong); returns its id."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape != (SIDE, SIDE):
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise FeedbackError(f"image must be a uint8 array of shape ({SIDE}, {SIDE}), got {what}")
    row = {"pixels": np.ascontiguousarray(image).tobytes(), "label": _digit(label, "label"),
           "predicted": _digit(predicted, "predicted")}
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)) \
            or not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise FeedbackError(f"confidence must be a number in 0..1, got {confidence!r}")
    if source not in SOURCES:
        raise FeedbackError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    row |= {"confidence": float(confidence), "source": source,
            "model_version": _text(model_version, "model_version", 64), "client": _text(client, "client", 64),
            "created_at": now or datetime.now(timezone.utc), "status": "pending"}
    with engine.begin() as conn:
        return conn.execute(feedback.insert().values(**row)).inserted_primary_key[0]


def items(engine: sa.Engine, status: str | None = None) -> list[Item]:
    """Every item (or those with `status`), oldest first."""
    query = feedback.select().order_by(feedback.c.id)
    if status is not None:
        query = query.where(feedback.c.status == status)
    with engine.connect() as conn:
        return [Item(**row._mapping) for row in conn.execute(query)]


def get(engine: sa.Engine, item_id: int) -> Item:
    with engine.connect() as conn:
        row = conn.execute(feedback.select().where(feedback.c.id == item_id)).first()
    if row is None:
        raise FeedbackError(f"no feedback item #{item_id}")
    return Item(**row._mapping)


def _review(engine: sa.Engine, ids, status: str, now: datetime | None) -> None:
    """Pending -> `status` for all of `ids`, or for none of them (FeedbackError naming the others)."""
    ids = sorted(set(ids))
    with engine.begin() as conn:          # an error inside rolls everything back
        found = dict(conn.execute(sa.select(feedback.c.id, feedback.c.status).where(feedback.c.id.in_(ids))).all())
        problems = [f"#{i} is unknown" if i not in found else f"#{i} is {found[i]}, not pending"
                    for i in ids if found.get(i) != "pending"]
        if not problems:
            done = conn.execute(feedback.update().where(feedback.c.id.in_(ids), feedback.c.status == "pending")
                                .values(status=status, reviewed_at=now or datetime.now(timezone.utc))).rowcount
            if done == len(ids):
                return
            problems = ["another review changed some of them meanwhile"]
        raise FeedbackError(f"cannot mark {status}: {'; '.join(problems)} (nothing was changed)")


def accept(engine: sa.Engine, ids, now: datetime | None = None) -> None:
    _review(engine, ids, "accepted", now)


def reject(engine: sa.Engine, ids, now: datetime | None = None) -> None:
    _review(engine, ids, "rejected", now)


def _batch_name(inbox: Path, now: datetime) -> str:
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name, n = f"feedback-{stamp}.csv", 1
    while (inbox / name).exists():                   # two exports within one second
        n += 1
        name = f"feedback-{stamp}-{n}.csv"
    return name


def _write_batch(path: Path, rows) -> None:
    """The CSV under a temporary name in the same folder, renamed when whole. The temporary name
    does not end in .csv (digits.io.atomic_path's would), so the intake, reading every *.csv of the
    inbox, cannot take a half-written batch."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([LABEL, *PIXELS])
            for row in rows:
                pixels = np.frombuffer(row.pixels, np.uint8)
                if pixels.size != SIDE * SIDE:
                    raise FeedbackError(f"feedback item #{row.id} holds {pixels.size} pixels, not {SIDE * SIDE}")
                writer.writerow([row.label, *pixels.tolist()])
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)                         # mkstemp makes 0600
        if path.exists():
            raise FeedbackError(f"{path} exists already; nothing exported")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export(engine: sa.Engine, inbox: Path, now: datetime | None = None) -> tuple[Path | None, int]:
    """Every accepted item not yet exported -> one batch file in `inbox`, those items marked with its
    name; (the file, the number of rows), or (None, 0) when there is nothing to export."""
    inbox = Path(inbox)
    name = _batch_name(inbox, now or datetime.now(timezone.utc))
    path, written = inbox / name, False
    try:
        with engine.begin() as conn:
            # Marking first, in the same transaction, makes the rows this export's own: a second
            # export running at the same time waits for the lock, then finds them taken.
            marked = conn.execute(feedback.update().where(feedback.c.status == "accepted",
                                                          feedback.c.exported.is_(None))
                                  .values(exported=name)).rowcount
            if not marked:
                return None, 0
            rows = conn.execute(sa.select(feedback.c.id, feedback.c.label, feedback.c.pixels)
                                .where(feedback.c.exported == name).order_by(feedback.c.id)).all()
            inbox.mkdir(parents=True, exist_ok=True)
            _write_batch(path, rows)
            written = True
    except BaseException:
        if written:                                  # the commit failed: the rows stay unexported
            path.unlink(missing_ok=True)
        raise
    return path, len(rows)


def ascii_art(image: np.ndarray) -> str:
    """The 28 x 28 image as text, two characters per pixel (so it is about square)."""
    levels = (np.asarray(image, np.uint16) * len(SHADES) // 256).clip(0, len(SHADES) - 1)
    return "\n".join("".join(SHADES[v] * 2 for v in row) for row in levels)


def _when(t: datetime | None) -> str:
    return "-" if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(item: Item) -> str:
    """The one line `list` prints for an item."""
    line = (f"#{item.id:<5} {_when(item.created_at)}  label {item.label}  predicted {item.predicted} "
            f"({item.confidence:6.1%})  {item.source:<4}  model {item.model_version}  {item.status}")
    return line + (f" (exported in {item.exported})" if item.exported else "")


def _show(item: Item) -> str:
    fields = [("id", item.id), ("created", _when(item.created_at)), ("label", item.label),
              ("predicted", f"{item.predicted} ({item.confidence:.1%})"), ("source", item.source),
              ("client", item.client), ("model", item.model_version), ("status", item.status),
              ("reviewed", _when(item.reviewed_at)), ("exported", item.exported or "-")]
    return "\n".join(f"{k:<10} {v}" for k, v in fields) + "\n" + ascii_art(item.image)


def main(argv=None, prog: str = "python -m digits.feedback") -> int:
    from digits import params, paths
    from digits.io import atomic_path
    repo = argparse.ArgumentParser(add_help=False)
    repo.add_argument("--repo", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                      help="the repository whose params.yaml is read (default: the current directory)")
    parser = argparse.ArgumentParser(prog=prog, parents=[repo], description="Review the feedback users sent.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", parents=[repo], help="one line per item")
    listing.add_argument("--status", choices=[*STATUSES, "all"], default="pending")
    show = commands.add_parser("show", parents=[repo], help="an item's fields and its image")
    show.add_argument("id", type=int)
    show.add_argument("--png", type=Path, metavar="FILE", help="also write the 28 x 28 image as a PNG")
    for name in ("accept", "reject"):
        commands.add_parser(name, parents=[repo], help=f"{name} pending items").add_argument("ids", type=int, nargs="+",
                                                                                             metavar="ID")
    commands.add_parser("export", parents=[repo], help="accepted items not yet exported -> one batch in the inbox")
    args = parser.parse_args(argv)
    root, engine = getattr(args, "repo", Path(".")), None
    try:
        engine = open_store(database_url(root))
        if args.command == "list":
            found = items(engine, None if args.status == "all" else args.status)
            for item in found:
                print(describe(item))
            if not found:
                print(f"no {'' if args.status == 'all' else args.status + ' '}feedback items", file=sys.stderr)
        elif args.command == "show":
            item = get(engine, args.id)
            print(_show(item))
            if args.png:
                from PIL import Image
                with atomic_path(args.png) as tmp:
                    Image.fromarray(item.image).save(tmp, format="PNG")
                print(f"wrote {args.png}")
        elif args.command in ("accept", "reject"):
            (accept if args.command == "accept" else reject)(engine, args.ids)
            print(f"{args.command}ed {', '.join(f'#{i}' for i in sorted(set(args.ids)))}")
        else:
            inbox = root / params.load(root / paths.PARAMS).intake.inbox
            path, n = export(engine, inbox)
            print(f"exported {n} items to {path}" if path else "nothing to export: no accepted items "
                  "that are not exported yet")
    except (FeedbackError, params.ParamsError, OSError, sa.exc.SQLAlchemyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if engine is not None:
            engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
