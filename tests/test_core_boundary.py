"""The core never names its shells: no module under ``ecrec/`` imports ``deployments`` or
``training`` (the top-level Ray packages), by statement or by string, and ``ecrec --help`` loads
neither torch nor ray. The shells reach the core's command line through the ``ecrec.commands``
entry points in pyproject.toml."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELLS = ("deployments", "training")
# a shell's module or file named in a string: `training.sequence`, "deployments/app.py", "training:x";
# not `ecrec.learning.x` or `ecrec/learning/` (the core's own package)
NAMED = re.compile(r"(?<![\w./])(?:%s)(?:\.[A-Za-z_]|/|:[A-Za-z_])" % "|".join(SHELLS))


def shell_references(source: str) -> list[tuple[int, str]]:
    """(line, what) for every import of a shell and every string constant that names one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in SHELLS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in SHELLS:
            found.append((node.lineno, f"from {node.module} import ..."))
        elif isinstance(node, ast.Call):  # import_module("training"), find_spec("deployments")
            found += [(a.lineno, repr(a.value)) for a in node.args
                      if isinstance(a, ast.Constant) and a.value in SHELLS]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and NAMED.search(node.value):
            found.append((node.lineno, repr(node.value[:80])))
    return sorted(found)


def test_the_check_finds_each_way_of_naming_a_shell():
    bad = ('import training.sequence\nfrom deployments.cli import register\nimport deployments\n'
           'importlib.import_module("training.sequence")\nimportlib.import_module("deployments")\n'
           'def f():\n    """wired by deployments/routes_chat.py"""\n')
    assert [line for line, _ in shell_references(bad)] == [1, 2, 3, 4, 5, 7]
    good = ('from ecrec.learning.datasets import load_marc\nfrom . import training\n'
            'x = "see ecrec/learning/augment.py"\nreport["training"] = 1\ny = "training. Then"\n')
    assert shell_references(good) == []


def test_no_core_module_names_a_shell():
    offenders = {str(p.relative_to(ROOT)): refs for p in sorted((ROOT / "ecrec").rglob("*.py"))
                 if (refs := shell_references(p.read_text(encoding="utf-8")))}
    assert offenders == {}, offenders


def test_help_loads_neither_torch_nor_ray():
    code = ("import sys\nfrom ecrec.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    *help_text, loaded = done.stdout.strip().splitlines()
    assert loaded == "[]", loaded
    # the shells' commands are offered through the entry points (the usage line's {choices})
    choices = set(re.search(r"\{([^}]*)\}", "\n".join(help_text)).group(1).replace("\n", "").replace(" ", "").split(","))
    assert {"index", "serve", "train", "train-sequence", "retrain"} <= choices, choices
