"""atomic_path: the destination changes only when the block finishes; nothing temporary is left."""
import pytest

from digits.io import atomic_path


def test_a_failed_file_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "metrics.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="stage failed"):
        with atomic_path(dest) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("stage failed")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_folder_write_leaves_the_old_folder_and_no_temporary(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "index.html").write_text("old")
    with pytest.raises(RuntimeError, match="stage failed"):
        with atomic_path(dest, directory=True) as tmp:
            (tmp / "index.html").write_text("half-written")
            (tmp / "new.json").write_text("{}")
            raise RuntimeError("stage failed")
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in dest.iterdir()] == ["index.html"] and (dest / "index.html").read_text() == "old"


def test_a_finished_folder_write_replaces_the_old_folder_whole(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "stale.html").write_text("old")
    with atomic_path(dest, directory=True) as tmp:
        (tmp / "index.html").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert [p.name for p in dest.iterdir()] == ["index.html"] and (dest / "index.html").read_text() == "new"
