"""The benchmark's own virtualenvs: one per peer library, never the project's runtime deps.

Each peer gets bench/.venvs/<name>, built from PyPI with pinned versions, so a run names
exactly what it measured. celeriac itself runs from the project's .venv (editable install).
arq needs its own venv: arq 0.28 wants redis-py < 6 while kombu 5.7 needs >= 6.4.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENVS = BENCH / ".venvs"
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"

#: What each venv holds (pip requirement specs). hiredis goes wherever redis-py >= 6 is
#: used so every Redis client parses replies with the same C parser celeriac uses.
REQUIREMENTS: dict[str, list[str]] = {
    "celery": ["celery[redis]==5.7.0", "redis>=6.4", "hiredis"],
    "dramatiq": ["dramatiq[redis]==2.2.1", "hiredis"],
    "rq": ["rq==2.12.0", "hiredis"],
    "huey": ["huey==3.5.4", "redis>=6.4", "hiredis"],
    "arq": ["arq==0.28.0"],
    "tools": ["matplotlib==3.11.2", "py-spy==0.4.3"],
}

#: The distributions whose versions a run records, per venv.
RECORDED = {
    "celery": ["celery", "kombu", "redis", "hiredis", "amqp"],
    "dramatiq": ["dramatiq", "redis", "hiredis"],
    "rq": ["rq", "redis", "hiredis"],
    "huey": ["huey", "redis", "hiredis"],
    "arq": ["arq", "redis"],
    "celeriac": ["celeriac", "redis", "hiredis", "amqp"],
}


def python_for(name: str) -> Path:
    """The interpreter that runs library `name` (celeriac: the project's .venv)."""
    if name == "celeriac":
        return PROJECT_PYTHON
    return VENVS / name / "bin" / "python"


def ensure(name: str, quiet: bool = True) -> Path:
    """Create or update bench/.venvs/<name> when its requirements changed; return its python."""
    if name == "celeriac":
        return PROJECT_PYTHON
    specs = REQUIREMENTS[name]
    venv = VENVS / name
    stamp = venv / ".bench-installed"
    digest = hashlib.sha256(json.dumps(specs).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return python_for(name)
    print(f"[bench] installing {name}: {' '.join(specs)}", file=sys.stderr, flush=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    if quiet:
        pip.append("-q")
    subprocess.run([*pip, *specs], check=True)
    stamp.write_text(digest)
    return python_for(name)


def versions(name: str) -> dict[str, str]:
    """Installed versions of the distributions that matter for library `name`."""
    code = (
        "import json, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = version(d)\n"
        "    except PackageNotFoundError: pass\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run([str(python_for(name)), "-c", code, *RECORDED.get(name, [name])],
                            capture_output=True, text=True, check=True, env={**os.environ})
    return json.loads(result.stdout)


if __name__ == "__main__":
    for venv_name in sys.argv[1:] or list(REQUIREMENTS):
        ensure(venv_name, quiet=False)
        print(venv_name, versions(venv_name) if venv_name in RECORDED else "")
