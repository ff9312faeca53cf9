"""Every stage lists in `deps` each project module its command imports, directly or not, and no
other project module.

An import missing from `deps` means an edit there does not re-run the stage; a module in `deps`
that the command never imports re-runs the stage for nothing. The imports are read from the code
(every `import`/`from` statement, function-local ones included), not from a list. The packages'
__init__ files (and digits/quiet.py, which they run) are left out on purpose: they only set
TensorFlow's log level and hold back its start-up lines, which no output depends on, so editing
them re-runs nothing.
"""
import ast
import re

import pytest
import yaml

from conftest import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PACKAGES = ("tasks", "flows", "digits")


def module_file(name: str):
    path = ROOT / (name.replace(".", "/") + ".py")
    return path if path.exists() else None


def imports(path) -> set[str]:
    """Project modules named by the import statements of one file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from tasks import io, paths` names modules; `from digits.io import LABEL` a module too
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and module_file(n)}
    return found


def closure(module: str) -> set[str]:
    """The files of `module` and of every project module it imports, transitively."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imports(module_file(name))
    return {str(module_file(n).relative_to(ROOT)) for n in seen if not n.endswith("__init__")}


def test_the_import_reader_follows_function_local_and_transitive_imports():
    # train imports schedules only inside functions, and model imports params at the top
    assert {"digits/schedules.py", "digits/model.py", "digits/params.py"} <= closure("tasks.train")
    assert "tasks/train.py" not in closure("tasks.predict")


def code_deps(spec: dict) -> tuple[set[str], set[str]]:
    """(project modules the stage's command imports, project modules its deps list)."""
    cmd = spec["cmd"] if isinstance(spec["cmd"], str) else " ".join(spec["cmd"])
    modules = re.findall(r"python -m ([\w.]+)", cmd)
    assert modules, f"no `python -m <module>` in the cmd {cmd!r}"
    deps = {d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]}
    listed = {d for d in deps if d.endswith(".py") and d.split("/")[0] in PACKAGES}
    return set().union(*(closure(m) for m in modules)), listed


def test_an_extra_or_a_missing_module_is_found():
    needed, listed = code_deps({"cmd": "python -m tasks.score",
                                "deps": ["tasks/score.py", "digits/io.py", "tasks/plots.py", "data/answer_key"]})
    assert needed - listed == {"digits/cli.py", "digits/paths.py"}
    assert listed - needed == {"tasks/plots.py"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_module_its_command_imports_and_no_other(stage):
    needed, listed = code_deps(STAGES[stage].get("do", STAGES[stage]))     # a foreach stage: its template
    assert needed - listed == set(), f"stage {stage}: imports missing from its deps"
    assert listed - needed == set(), f"stage {stage}: deps its command does not import (re-runs for nothing)"
