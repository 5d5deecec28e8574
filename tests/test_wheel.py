"""The package as users install it: ``python -m build`` (sdist, then the wheel from the sdist), ``twine
check``, the wheel installed (not editable) into a fresh virtual environment that reuses this
environment's torch and other dependencies (no download), then ``otreweight --version`` and a one-seed
demo run from a folder outside the source tree.

Marked ``wheel`` (about a minute on 2 CPU cores): ``pytest -m "not wheel"`` leaves it out.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import otreweight

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.wheel


def _run(cmd, cwd, env, timeout=300):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_wheel_builds_installs_and_runs_outside_the_source_tree(tmp_path):
    pytest.importorskip("build")
    pytest.importorskip("twine")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"
    # the sources as a fresh clone has them (no build folders, no egg-info), so the source tree stays untouched
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "otreweight", src / "otreweight", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    # --no-isolation: build with the setuptools installed here (nothing is downloaded)
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], tmp_path, env)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    assert f"otreweight-{otreweight.__version__}-py3-none-any.whl" == wheels[0].name
    out = _run([sys.executable, "-m", "twine", "check", "--strict", *wheels, *sdists], tmp_path, env)
    assert out.count("PASSED") == 2, out

    # a fresh venv; this environment's packages (torch, POT, ...) reached through a .pth file, whose
    # plain path does not run this environment's .pth files (so its editable otreweight stays out)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    vpy = venv / "bin" / "python"
    site = Path(_run([vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).strip())
    (site / "_reuse_parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", vpy, "install", "--no-deps", "--no-index", "--no-compile",
          "--quiet", wheels[0]], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([vpy, "-c", "import otreweight; print(otreweight.__file__)"], elsewhere, env).strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the source tree
    exe = venv / "bin" / "otreweight"
    assert _run([exe, "--version"], elsewhere, env).strip() == f"otreweight {otreweight.__version__}"
    table = _run([exe, "demo", "--seeds", "0", "--stage1-epochs", "20", "--stage2-epochs", "5", "--methods", "ce,cb,ot"],
                 elsewhere, env)
    rows = {line.split()[0] for line in table.splitlines() if line.strip()}
    assert {"stage1-ce", "ce", "cb", "ot"} <= rows, table
    # the shipped configs travel in the wheel
    cfg = _run([exe, "train", "--config", "cifar10_lt_if100", "--print-config"], elsewhere, env)
    assert "imbalance_factor: 100" in cfg
    assert list(elsewhere.iterdir()) == []  # nothing written where it ran
