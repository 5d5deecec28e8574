"""
MNIST digits as point sets
==========================

PointNet's MNIST experiment, long-tailed: each digit becomes a 2-D point set (the coordinates of
its pixels brighter than 128; 64 points per digit here), the classes follow an exponential profile
at imbalance factor 100 with at most 200 training digits per class, a small PointNet is trained for
3 epochs with the point-cloud augmentation, then its classifier is re-trained with each method.
One seed, about a minute on two CPU cores.

Data: ``mnist/`` (the official IDX files, gzipped) in ``../shared/data`` next to the repository;
elsewhere, set ``OTREWEIGHT_DATA`` to the folder that holds it. The conversion to point sets runs
once and is cached.

``ot`` and ``ot-cc`` also train on the balanced meta set (10 digits per class) through their
meta-set cross-entropy term, which ``cb`` and ``crt`` do not see: at this budget that term is most
of their lead (see "Does OT re-weighting help?").
"""
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from otreweight.compare import run_comparison
from otreweight.config import load_config, resolve_config_path
from otreweight.data.sources import load_dataset

here = Path(globals().get("__file__", "examples/x.py")).resolve().parent
repo = next(p for p in (here, *here.parents) if (p / "pyproject.toml").exists())  # the repository
data = Path(os.environ.get("OTREWEIGHT_DATA") or repo.parent / "shared" / "data")
mnist = data / "mnist"
if not mnist.exists():
    raise SystemExit(f"{mnist} not found: set OTREWEIGHT_DATA to the folder holding mnist/ (the IDX files)")

sets = [f"data.root={mnist}", "data.source_options.n_points=64", "data.n_max=200", "model.options.widths=[32,64,128]",
        "stage1.epochs=3", "threads=1", "progress=false"]

def show(rows):
    """The comparison's main columns: test balanced accuracy and many / medium / few (%)."""
    print(f"{'method':<22}{'bal.acc':>9}{'many':>8}{'medium':>8}{'few':>8}")
    for r in rows:
        cells = [r[f"{k}_mean"] for k in ("balanced_accuracy", "many", "medium", "few")]
        print(f"{r['method']:<22}" + "".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (9, 8, 8, 8))))

out = Path(tempfile.mkdtemp(prefix="otreweight-points-"))
cfg = load_config(resolve_config_path("mnist_points_lt_if100"), sets + [f"output_dir={out / 'run'}"])

# %%
# A few training digits as the network sees them.
ds = load_dataset("mnist_points", root=str(mnist), n_points=64)
fig, axes = plt.subplots(1, 6, figsize=(8, 1.6))
for ax, i in zip(axes, range(6)):
    p = np.asarray(ds.x_train[i])
    ax.scatter(p[:, 0], p[:, 1], s=4)
    ax.set_title(str(ds.classes[int(ds.y_train[i])]), fontsize=9)
    ax.set_aspect("equal")
    ax.axis("off")
plt.show()

# %%
# The comparison, every method re-training the classifier of the same frozen PointNet.
result = run_comparison(cfg, methods=["ce", "cb", "crt", "ot", "ot-cc"], seeds=[0], mode="decoupled",
                        method_sets=["*.epochs=8"], output=out / "compare", log=lambda *a: None)
show(result["rows"])  # the whole table: result["files"]["md"] (compare.md)
rows = result["rows"]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar([r["method"] for r in rows], [r["balanced_accuracy_mean"] for r in rows], color="#2a9d8f")
ax.set_ylabel("test balanced accuracy (%)")
ax.set_title("MNIST point sets, IF 100, seed 0")
fig.tight_layout()
plt.show()
