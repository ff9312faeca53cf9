"""Fetch the vendored web assets from the npm registry and build DVC's plots page template from them.

    python tasks/vendor/update.py            # download the pinned tarballs, check each file's sha256,
                                             # write tasks/vendor/<package>@<version>/..., rebuild .dvc/plots.html
    python tasks/vendor/update.py --template # rebuild .dvc/plots.html from the files already here (no network)
    python tasks/vendor/update.py --check    # files match their sha256 and the template is up to date (no network)
    python tasks/vendor/update.py --table    # the README's table, from PACKAGES

To change a version, edit PACKAGES and run it: a file whose sha256 differs is not written, and its new
hash is printed for PACKAGES and the README. Only this script downloads; the pipeline, `dvc plots`
and the tests read the committed files.
"""
import argparse
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TEMPLATE = ROOT / ".dvc" / "plots.html"   # .dvc/config: [plots] html_template = plots.html
REGISTRY = "https://registry.npmjs.org"

# (package, version): {path inside the package: sha256}, license as package.json declares it
PACKAGES = {
    # dvc plots (inlined into .dvc/plots.html) and Data Docs pages
    ("vega", "5.33.1"): ({
        "build/vega.min.js": "463f3db6a40b20e9747b4ed38f37ed0add508838f9141b1cf8366784b07b30c8",
    }, "BSD-3-Clause"),
    ("vega-lite", "5.23.0"): ({
        "build/vega-lite.min.js": "58c27358e26f2d319cf62f45bc17a4c8362f08645001df2ec8d341eee4097c7f",
        "LICENSE": "f618900fd0d64046963b29f40590cdd1e341a2f41449f99110d82fd81fea808c",
    }, "BSD-3-Clause"),
    ("vega-embed", "6.29.0"): ({
        "build/vega-embed.min.js": "12d02acfbe3ec59ef9a37dd4822a2e04e2961b5bbb671bbe661d2221715b99da",
        "LICENSE": "32df67148f0fc3db0eb9e263a7b75d07f1eb14c61955005a4a39c6918d10d137",
    }, "BSD-3-Clause"),
    # Great Expectations Data Docs (tasks/validate.py copies these into the site)
    ("jquery", "3.7.1"): ({
        "dist/jquery.min.js": "fc9a93dd241f6b045cbff0481cf4e1901becd0e12fb45166a8f17f95823f0b1a",
        "LICENSE.txt": "d4db9ebe6f29f5168eac45ad713f055623ac5d0dcd5ba92da23d650ae012020d",
    }, "MIT"),
    ("popper.js", "1.12.9"): ({
        "dist/umd/popper.min.js": "a52f7aa54d7bcaafa056ee0a050262dfc5694ae28dee8b4cac3429af37ff0d66",
    }, "MIT"),
    ("bootstrap", "4.3.1"): ({
        "dist/css/bootstrap.min.css": "60b19e5da6a9234ff9220668a5ec1125c157a268513256188ee80f2d2c8d8d36",
        "dist/js/bootstrap.min.js": "0a34a87842c539c1f4feec56bba982fd596b73500046a6e6fe38a22260c6577b",
        "LICENSE": "074d99b8c25d13649dac52080900ee8c8d2373d07ea3f4fb67bd2bf79aa8cc72",
    }, "MIT"),
    ("bootstrap-table", "1.19.1"): ({
        "dist/bootstrap-table.min.css": "643f536f6982af4d7287af23f89ad457dd7e4a82f9c695330a112b0881c30a4a",
        "dist/bootstrap-table.min.js": "06a571a9beb50bd5ddd60517159775dfec1f3e798fff38fb117ae2350dc9ba9d",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
            "be4e0c0d11f9319f1ad191f7447a38f755728bbaa10903e469f367441ba79ae2",
        "dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
            "111f68d31d1bdd714f9503bf5f4e162e0739c363e4ff2feef950d39e78266ffc",
        "LICENSE": "fb50e42cb539382385f8d66572fef8ec08a34dd7dc00ba7a5ce0668d225dc35b",
    }, "MIT"),
    ("bootstrap-datepicker", "1.9.0"): ({
        "dist/css/bootstrap-datepicker.min.css": "b22c8ea45fe905650f8087108b5ed32c1923bcd80d400adc9b0241f18be40208",
        "dist/js/bootstrap-datepicker.min.js": "6ea55ea86749ee1fe560fabac6b3effd81b33046fa74dc657e24d41d28110a9f",
        "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    }, "Apache-2.0"),
    ("@forevolve/bootstrap-dark", "1.1.0"): ({
        "dist/css/bootstrap-prefers-dark.min.css": "424070f1f798087a68c110a776228f9eaae5406df143940faa67d77344293ac8",
        "LICENSE": "43be5d79d2ec3d6d876e1874d27506cbe55024b18afc55f1fc830aaaedc0313d",
    }, "MIT"),
    ("@fortawesome/fontawesome-free", "6.6.0"): ({
        "css/all.min.css": "e5e202e3c899507992952533f57b634722b69b34241d271963559d31aa33ef81",
        "webfonts/fa-brands-400.woff2": "c411f11975d26eb04cd2aa3c071181d4b18e489f1fb97060d4176a3531dfb36e",
        "webfonts/fa-regular-400.woff2": "c732f106e91bc618767fbac8e2c7b27e5c736d477b2bb4fb83f597a43198c33c",
        "webfonts/fa-solid-900.woff2": "1f0189e087fcefbf654fad74a3a06668b782c01353a61d5c0b7f0bf23e33c020",
        "webfonts/fa-v4compatibility.woff2": "2aca24b35bd41474dcc5e7fb5f11ec43fa06e3ac1d0035ad41108fa6b30b0871",
        "LICENSE.txt": "9b914eae88817d63b576eab5aafde7068c7a1abae125d7cdfb034f1da43a9afc",
    }, "CSS MIT, fonts OFL-1.1, icons CC-BY-4.0"),
}
VEGA = [("vega", "5.33.1", "build/vega.min.js"), ("vega-lite", "5.23.0", "build/vega-lite.min.js"),
        ("vega-embed", "6.29.0", "build/vega-embed.min.js")]

# dvc-render's page (dvc_render/html.py) with the three scripts inline instead of its CDN <script>
# tags: the page is one self-contained file wherever `dvc plots show/diff -o` writes it. No
# {scripts} placeholder, so the CDN tags dvc-render would put there are left out.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- Built by tasks/vendor/update.py from tasks/vendor/: %(versions)s (BSD-3-Clause). -->
%(scripts)s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def tarball_url(name: str, version: str) -> str:
    return f"{REGISTRY}/{name}/-/{name.split('/')[-1]}-{version}.tgz"


def local(name: str, version: str, path: str) -> Path:
    return HERE / f"{name}@{version}" / path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch() -> bool:
    ok = True
    for (name, version), (files, _) in PACKAGES.items():
        url = tarball_url(name, version)
        print(f"fetching {url}")
        with urllib.request.urlopen(url, timeout=60) as response:
            tar = tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz")
        for path, want in files.items():
            data = tar.extractfile(f"package/{path}").read()
            if sha256(data) != want:
                print(f"  {name}@{version}/{path}: sha256 {sha256(data)}, PACKAGES says {want}: not written")
                ok = False
                continue
            target = local(name, version, path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return ok


def template() -> str:
    scripts, versions = [], []
    for name, version, path in VEGA:
        js = local(name, version, path).read_text(encoding="utf-8")
        # Inside <script>, "</script" would end the element early; the page's placeholders must
        # occur only where dvc-render is meant to fill them.
        assert "</script" not in js.lower() and "<!--" not in js, f"{name}: cannot be inlined as is"
        assert not any(p in js for p in ("{plot_divs}", "{scripts}", "{refresh_tag}")), name
        scripts.append(f"    <script>/* {name}@{version}/{path} */\n{js}\n    </script>")
        versions.append(f"{name} {version}")
    return PAGE % {"versions": ", ".join(versions), "scripts": "\n".join(scripts)}


def check() -> list[str]:
    problems = []
    for (name, version), (files, _) in PACKAGES.items():
        for path, want in files.items():
            file = local(name, version, path)
            if not file.exists():
                problems.append(f"{file.relative_to(ROOT)}: missing")
            elif sha256(file.read_bytes()) != want:
                problems.append(f"{file.relative_to(ROOT)}: sha256 differs from PACKAGES")
    if not problems and (not TEMPLATE.exists() or TEMPLATE.read_text(encoding="utf-8") != template()):
        problems.append(f"{TEMPLATE.relative_to(ROOT)}: out of date (python tasks/vendor/update.py --template)")
    return problems


def table() -> str:
    rows = ["| package | version | license | file | sha256 |", "|---|---|---|---|---|"]
    for (name, version), (files, lic) in PACKAGES.items():
        for path, digest in files.items():
            rows.append(f"| [{name}]({tarball_url(name, version)}) | {version} | {lic} | `{path}` | `{digest}` |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--template", action="store_true", help="only rebuild .dvc/plots.html")
    mode.add_argument("--check", action="store_true", help="verify files and template, no network")
    mode.add_argument("--table", action="store_true", help="print the README's table")
    args = parser.parse_args()
    if args.table:
        print(table())
        return 0
    if args.check:
        problems = check()
        print("\n".join(problems) or "vendored files and .dvc/plots.html are up to date")
        return 1 if problems else 0
    if not args.template and not fetch():
        return 1
    TEMPLATE.write_text(template(), encoding="utf-8")
    print(f"wrote {TEMPLATE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
