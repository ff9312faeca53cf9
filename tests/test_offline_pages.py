"""The run's HTML pages work offline: headless Chromium (Debian's, /usr/bin/chromium or $CHROMIUM,
driven by Playwright as in test_browser.py) opens them from file:// with the network cut off: the
context is offline and a route aborts, and records, every request that is not file://.

- The validate stage's Great Expectations Data Docs, built from small synthetic CSVs: the index
  lists the train and test validation results (bootstrap-table fills that table from a script, so
  an empty table means the scripts did not load), styled, with Font Awesome's icons.
- A `dvc plots show -o` page, from a scratch git + DVC repository holding one CSV plot and this
  project's .dvc/config and HTML template: the Vega plot is drawn (coloured marks on its canvas).

Also, without a browser: the vendored files match their sha256 and .dvc/plots.html is the one
tasks/vendor/update.py builds from them.

No Chromium is a failure, not a skip: `make test` installs it (apt-get install chromium) when missing."""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ROOT, kaggle_frame
from tasks import validate

RESULTS = "#Validation-Results table tbody tr"          # the index's Validation Results tab

# Pixels whose channels differ by more than 60: plot marks (DVC's palette), not grey axes or text.
COLOURED_PIXELS = """canvas => {
    if (!canvas.width || !canvas.height) return 0;
    const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4)
        if (d[i + 3] > 0 && Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) n++;
    return n;
}"""


@pytest.fixture
def offline(browser):
    """A page with the network cut off: .page, .remote (the requests it made that were not for a
    file, data: or blob: URL) and .errors (its uncaught script errors)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_offline(True)
    tab = SimpleNamespace(page=context.new_page(), remote=[], errors=[])

    def route(r):
        if r.request.url.startswith("file:"):
            r.continue_()
        else:
            tab.remote.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    tab.page.on("request", lambda r: r.url.startswith(("file:", "data:", "blob:")) or tab.remote.append(r.url))
    tab.page.on("pageerror", lambda e: tab.errors.append(str(e)))
    yield tab
    context.close()


@pytest.mark.integration
def test_data_docs_index_lists_the_validation_results_offline(offline, tmp_path):
    kaggle_frame(20).to_csv(tmp_path / "train.csv", index=False)
    kaggle_frame(5, label=False).to_csv(tmp_path / "test.csv", index=False)
    validate.validate({validate.TRAIN: tmp_path / "train.csv", validate.TEST: tmp_path / "test.csv"},
                      tmp_path / "report")
    site = tmp_path / "report" / "docs"
    for file in [*site.glob("**/*.html"), *site.glob("static/styles/*.css")]:   # no page of the site
        assert not validate.REMOTE.findall(file.read_text()), file               # fetches from the network

    page = offline.page
    page.goto((site / "index.html").as_uri())
    page.wait_for_selector(f"{RESULTS} a", timeout=15_000)
    suites = sorted(page.locator(f"{RESULTS} td:last-child").all_inner_texts())
    assert suites == ["test-column-profile", "test-table", "train-column-profile", "train-table"]
    assert page.locator(f"{RESULTS} .fa-check-circle").count() == 4                 # all four passed
    page.evaluate("document.fonts.ready")
    fonts = page.evaluate("[...document.fonts].filter(f => f.status === 'loaded').map(f => f.family)")
    assert "Font Awesome 6 Free" in fonts                                            # the icons drawn
    assert page.evaluate("getComputedStyle(document.querySelector('nav.navbar')).display") == "flex"  # Bootstrap's
    assert offline.remote == [] and offline.errors == []


def dvc(repo: Path, *args: str, env: dict) -> None:
    proc = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.integration
def test_a_dvc_plot_renders_offline(offline, tmp_path):
    import configobj
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                        "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache")}
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    dvc(repo, "init", "-q", env=env)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")           # this project's config
    template = configobj.ConfigObj(str(ROOT / ".dvc" / "config"))["plots"]["html_template"]
    shutil.copy(ROOT / ".dvc" / template, repo / ".dvc" / template)           # and its HTML template
    (repo / "loss.csv").write_text("step,loss\n" + "".join(f"{i},{1 / (i + 1):.3f}\n" for i in range(20)))
    (repo / "dvc.yaml").write_text("plots:\n  - loss.csv:\n      x: step\n      y: loss\n")
    dvc(repo, "plots", "show", "-o", str(tmp_path / "elsewhere"), env=env)   # the page outside the repository
    page = tmp_path / "elsewhere" / "index.html"
    assert "<script src" not in page.read_text()

    offline.page.goto(page.as_uri())
    offline.page.wait_for_selector(".vega-embed canvas", timeout=15_000)       # vega-embed's default renderer
    offline.page.wait_for_function(f"({COLOURED_PIXELS})(document.querySelector('.vega-embed canvas')) > 200",
                                   timeout=10_000)
    assert offline.remote == [] and offline.errors == []


def test_vendored_files_match_their_hashes_and_the_plots_template_is_built_from_them():
    spec = importlib.util.spec_from_file_location("vendor_update", ROOT / "tasks" / "vendor" / "update.py")
    update = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update)
    assert update.check() == []
    targets = {f"{name}@{version}/{path}" for (name, version), (files, _) in update.PACKAGES.items() for path in files}
    assert set(validate.DOCS_ASSETS.values()) <= targets                    # every asset the Data Docs use
