"""
CIFAR-10-LT: ``compare`` at a tiny budget
=========================================

The CIFAR-10-LT protocol (exponential profile, imbalance factor 100, a balanced meta set and a
balanced validation split drawn first, the whole balanced test set) with every method re-training
the classifier of the same frozen stage-1 network, selected on the validation split. The budget
is cut to run in about a minute on two CPU cores: at most 400 training images per class, a small
CNN trained for 6 epochs, 5 epochs per stage-2 method (batch 128, learning rate 0.1; ``ot`` in the
authors' recipe, batch 16, learning rate 2e-5), one seed. The numbers are therefore far from
the literature's; the comparison is what the example shows.

Data: the CIFAR-10 JPEG copy ``cifar10-jpeg.tar.gz`` (class folders in an archive, 60,000 images,
decoded once and cached). The example looks for it in ``../shared/data`` next to the repository;
elsewhere, set ``OTREWEIGHT_DATA`` to the folder that holds it. The official
``cifar-10-python.tar.gz`` works the same way with ``data.source=cifar10`` and ``data.root``.

The command line equivalent::

    otreweight compare --config cifar10_lt_if100 --set data.source=../shared/data/cifar10-jpeg.tar.gz \\
        --methods ce,cb,crt,ot,ot-cc-cb --seeds 0 --mode decoupled --set data.n_max=400 ...
"""
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from otreweight.compare import run_comparison
from otreweight.config import load_config, resolve_config_path

here = Path(globals().get("__file__", "examples/x.py")).resolve().parent
repo = next(p for p in (here, *here.parents) if (p / "pyproject.toml").exists())  # the repository
data = Path(os.environ.get("OTREWEIGHT_DATA") or repo.parent / "shared" / "data")
archive = data / "cifar10-jpeg.tar.gz"
if not archive.exists():
    raise SystemExit(f"{archive} not found: set OTREWEIGHT_DATA to the folder holding cifar10-jpeg.tar.gz")


def show(rows):
    """The comparison's main columns: test balanced accuracy and many / medium / few (%)."""
    print(f"{'method':<22}{'bal.acc':>9}{'many':>8}{'medium':>8}{'few':>8}")
    for r in rows:
        cells = [r[f"{k}_mean"] for k in ("balanced_accuracy", "many", "medium", "few")]
        print(f"{r['method']:<22}" + "".join(f"{'-' if v is None else f'{v:.1f}':>{w}}" for v, w in zip(cells, (9, 8, 8, 8))))

out = Path(tempfile.mkdtemp(prefix="otreweight-c10-"))
cfg = load_config(resolve_config_path("cifar10_lt_if100"), [
    f"data.source={archive}", "data.n_max=400", "data.augment=none", f"output_dir={out / 'run'}",
    "model.name=small_cnn", "model.options.width=16", "stage1.epochs=6", "stage1.warmup_epochs=1",
    "stage1.batch_size=64", "threads=1", "progress=false",
])
result = run_comparison(cfg, methods=["ce", "cb", "crt", "ot", "ot-cc-cb"], seeds=[0], mode="decoupled",
                        method_sets=["*.epochs=5", "*.batch_size=128", "*.lr=0.1",  # the baselines' recipe
                                     "ot.batch_size=16", "ot.lr=2e-5"],  # the authors' recipe for ot
                        output=out / "compare", log=lambda *a: None)
show(result["rows"])  # the whole table: result["files"]["md"] (compare.md)

# %%
# Per method: test balanced accuracy and the accuracy on the many-shot classes (more than 100
# training images) and the few-shot ones (fewer than 20; with at most 400 per class the rarest have 4).
rows = result["rows"]
names = [r["method"] for r in rows]
fig, ax = plt.subplots(figsize=(7, 3.4))
for k, (key, label) in enumerate([("balanced_accuracy", "balanced"), ("many", "many"), ("few", "few")]):
    vals = [r[f"{key}_mean"] or 0.0 for r in rows]
    ax.bar([i + 0.27 * (k - 1) for i in range(len(rows))], vals, width=0.27, label=label)
ax.set_xticks(range(len(rows)), names)
ax.set_ylabel("test accuracy (%)")
ax.set_title("CIFAR-10-LT IF 100, tiny budget, seed 0")
ax.legend(ncols=3, fontsize=8)
fig.tight_layout()
plt.show()
