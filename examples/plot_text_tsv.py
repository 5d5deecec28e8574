"""
Text from a TSV file: 20 Newsgroups-LT
======================================

A text source is a folder with ``train.tsv`` and ``test.tsv`` (``label<TAB>text`` per line,
optionally gzipped). Here: 20 Newsgroups, made long-tailed at imbalance factor 100, a fastText-style
bag of embeddings (``text_bag``) trained from scratch for 10 epochs, then its classifier re-trained
with each method, one seed (about a minute on two CPU cores).

Data: ``20newsgroups/`` in ``../shared/data`` next to the repository (``train.tsv.gz`` and
``test.tsv.gz``); elsewhere, set ``OTREWEIGHT_DATA`` to the folder that holds it. Any folder of
your own in the same format works as ``data.source``.
"""
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from otreweight.compare import run_comparison
from otreweight.config import load_config, resolve_config_path

here = Path(globals().get("__file__", "examples/x.py")).resolve().parent
repo = next(p for p in (here, *here.parents) if (p / "pyproject.toml").exists())  # the repository
data = Path(os.environ.get("OTREWEIGHT_DATA") or repo.parent / "shared" / "data")
folder = data / "20newsgroups"
if not folder.exists():
    raise SystemExit(f"{folder} not found: set OTREWEIGHT_DATA to the folder holding 20newsgroups/")


def show(rows):
    """The comparison's main columns: test balanced accuracy and many / medium / few (%)."""
    print(f"{'method':<22}{'bal.acc':>9}{'many':>8}{'medium':>8}{'few':>8}")
    for r in rows:
        cells = [r[f"{k}_mean"] for k in ("balanced_accuracy", "many", "medium", "few")]
        print(f"{r['method']:<22}" + "".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (9, 8, 8, 8))))

out = Path(tempfile.mkdtemp(prefix="otreweight-text-"))
cfg = load_config(resolve_config_path("20newsgroups_lt_if100"), [
    f"data.source={folder}", f"output_dir={out / 'run'}", "stage1.epochs=10", "threads=1", "progress=false",
])
methods = ["ce", "cb", "logit_adjust_posthoc", "crt", "ot", "ot-no-meta-ce"]
result = run_comparison(cfg, methods=methods, seeds=[0], mode="decoupled", method_sets=["*.epochs=5"],
                        output=out / "compare", log=lambda *a: None)
show(result["rows"])  # the whole table: result["files"]["md"] (compare.md)

# %%
# Balanced accuracy against the accuracy on the few-shot classes (fewer than 20 training
# documents): where the methods differ most.
rows = result["rows"]
fig, ax = plt.subplots(figsize=(6, 3.6))
for r in rows:
    ax.scatter(r["few_mean"], r["balanced_accuracy_mean"], s=40)
    ax.annotate(r["method"], (r["few_mean"], r["balanced_accuracy_mean"]), fontsize=8,
                xytext=(4, 3), textcoords="offset points")
ax.set_xlabel("few-shot classes: test accuracy (%)")
ax.set_ylabel("test balanced accuracy (%)")
ax.set_title("20 Newsgroups-LT IF 100, text_bag, seed 0")
ax.margins(0.15)
fig.tight_layout()
plt.show()
