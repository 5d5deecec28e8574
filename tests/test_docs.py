"""The documentation: every config key, CLI argument and registry option has a line of meaning, the
reference pages are generated from the code, and the site builds with warnings as errors (the
gallery examples are not run here; ``make docs`` runs them)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import otr_reference  # noqa: E402


def test_every_key_flag_and_option_has_a_line_of_meaning():
    assert otr_reference.missing_meanings() == []


def test_the_meaning_check_catches_a_key_without_one(monkeypatch):
    rows = otr_reference.config_rows()
    monkeypatch.setattr(otr_reference, "config_rows", lambda: rows + [("data", "data.new_key", "int", "0", "")])
    assert otr_reference.missing_meanings() == ["config key data.new_key"]


def test_numpydoc_parameters_are_read():
    doc = """Summary.

    Parameters
    ----------
    a, b : int
        First sentence. Second sentence.
    c : {"x", "y"}
        Choice; ``d`` mixes things (0.5).

    Returns
    -------
    int
    """
    got = otr_reference.numpydoc_params(doc)
    assert got["a"] == got["b"] == "First sentence."
    assert got["c"] == "Choice"
    assert got["d"] == "``d`` mixes things (0.5)."


def test_reference_pages_list_what_the_code_defines(tmp_path):
    from otreweight.cli import build_parser
    from otreweight.config import DataConfig, yaml_fields
    from otreweight.methods import METHODS
    from otreweight.models import MODELS

    pages = {p.name: p.read_text() for p in otr_reference.write_pages(tmp_path)}
    for f in yaml_fields(DataConfig):
        assert f"`data.{f.name}`" in pages["config.md"]
    assert "`stage2[i].method`" in pages["config.md"] and "`log`" in pages["config.md"]
    for name in ("demo", "train", "evaluate", "compare", "report"):
        assert f"## `otreweight {name}`" in pages["cli.md"]
    assert "`--method-set METHOD.KEY=VALUE`" in pages["cli.md"]
    for name in METHODS.names() + MODELS.names():
        assert f"### `{name}`" in pages["registries.md"], name
    assert "| `eps` | `0.1` |" in pages["registries.md"]  # the OT method lists its re-weighter's options
    assert build_parser().prog == "otreweight"


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in
                            ("sphinx", "myst_parser", "pydata_sphinx_theme", "sphinx_gallery", "numpydoc")),
                    reason="the docs extra is not installed (pip install 'otreweight[docs]')")
def test_docs_build_with_warnings_as_errors(tmp_path):
    """The whole site, -W --keep-going, gallery pages made but not executed (about a minute on 2 cores)."""
    env = dict(os.environ, OTREWEIGHT_DOCS_GALLERY="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-E",
                           "-d", str(tmp_path / "doctrees"), str(ROOT / "docs"), str(tmp_path / "html")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    html = tmp_path / "html"
    for page in ("index", "getting_started", "results", "reproducing", "benchmarks", "changelog",
                 "reference/generated/config", "reference/generated/cli", "reference/generated/registries",
                 "reference/api", "auto_examples/index", "guides/text"):
        assert (html / f"{page}.html").stat().st_size > 0, page
    assert "class_summary" in (html / "reference" / "api.html").read_text()
