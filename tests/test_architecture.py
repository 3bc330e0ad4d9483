"""The architecture holds: the import contracts in pyproject.toml, and no model stack in the CPU processes.

`lint-imports` checks the static import graph (ARCHITECTURE.md, "The rooms"); the subprocess test checks
what a fresh ingress/runner process really has in `sys.modules` after importing its modules, and names
who imported a heavy package first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The model stack: only model replicas load these (inside their deployment's `__init__`).
HEAVY = ("torch", "transformers", "demucs", "onnxruntime", "diffusers")
CPU_MODULES = ("deployments.ingress", "deployments.runner")

# Runs in a fresh interpreter: a meta-path finder notes the stack of the first import of each heavy
# package (it finds nothing itself, so the import goes on as usual), then the CPU modules are imported.
_PROBE = """
import importlib.abc, json, sys, traceback

HEAVY = set({heavy!r})
importers = {{}}


class _Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in importers:
            frames = [f for f in traceback.extract_stack()[:-1] if not f.filename.startswith("<frozen")]
            importers[top] = [f"{{f.filename}}:{{f.lineno}}: {{f.line}}" for f in frames[-12:]]
        return None


sys.meta_path.insert(0, _Spy())
for module in {modules!r}:
    __import__(module)
loaded = sorted(HEAVY & {{name.partition(".")[0] for name in sys.modules}})
print(json.dumps({{"loaded": loaded, "importers": {{m: importers.get(m, []) for m in loaded}}}}))
"""


def test_cpu_processes_import_no_model_stack() -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    probe = _PROBE.format(heavy=HEAVY, modules=CPU_MODULES)
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"importing {', '.join(CPU_MODULES)} failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = []
    for module in report["loaded"]:
        lines.append(f"{module} imported by:")
        lines.extend(f"    {frame}" for frame in report["importers"][module] or ["(stack not recorded)"])
    assert not report["loaded"], (
        f"{', '.join(CPU_MODULES)} load the model stack {report['loaded']}:\n" + "\n".join(lines)
    )


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run(
        [str(lint_imports), "--no-logo", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"lint-imports exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
