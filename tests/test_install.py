"""A plain (non-editable) install puts one package, `digits`, into site-packages, with the drawing
page's files, and its commands work there from any directory; the stages and flows run from the
repository and are never installed under their generic names."""
import os
import subprocess
import sys
import zipfile

from model_fixture import build_wheel


def test_the_wheel_holds_only_the_digits_package_and_its_commands_run_from_it(tmp_path):
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"digits"}, names
    assert {"digits/static/index.html", "digits/static/app.js", "digits/recognize.py"} <= set(names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "digits-recognize = digits.commands:recognize" in entry and "digits-serve = digits.commands:serve" in entry

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = ("import importlib.util as u, digits, digits.commands as c; "
             "print(digits.__file__); print(c.repository()); "
             "print(u.find_spec('tasks'), u.find_spec('flows'), u.find_spec('app'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=os.environ | {"PYTHONPATH": str(site)},
                         check=True, capture_output=True, text=True).stdout.split("\n")
    assert out[0] == str(site / "digits" / "__init__.py")
    assert out[1] == "None"                             # no repository: the current folder's params and models
    assert out[2] == "None None None"
    helped = subprocess.run([sys.executable, "-c", "from digits.commands import recognize; recognize(['--help'])"],
                            cwd=elsewhere, env=os.environ | {"PYTHONPATH": str(site)}, capture_output=True, text=True)
    assert helped.returncode == 0 and "usage: digits-recognize" in helped.stdout, helped.stderr
