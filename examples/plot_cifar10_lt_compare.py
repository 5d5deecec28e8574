"""
CIFAR-10-LT: ``compare`` at a tiny budget
=========================================

The CIFAR-10-LT protocol (exponential profile, imbalance factor 100, a balanced meta set and a
balanced validation split drawn first, the whole balanced test set) with every method re-training
the classifier of the same frozen stage-1 network, selected on the validation split. The budget
is cut to run in about a minute on two CPU cores: at most 300 training images per class, a small
CNN trained for 4 epochs, 5 epochs per stage-2 method, one seed. The numbers are therefore far from
the literature's; the comparison is what the example shows.

Data: the CIFAR-10 JPEG copy ``cifar10-jpeg.tar.gz`` (class folders in an archive, 60,000 images,
decoded once and cached). The example looks for it in ``../shared/data`` next to the repository;
elsewhere, set ``OTREWEIGHT_DATA`` to the folder that holds it. The official
``cifar-10-python.tar.gz`` works the same way with ``data.source=cifar10`` and ``data.root``.

The command line equivalent::

    otreweight compare --config cifar10_lt_if100 --set data.source=../shared/data/cifar10-jpeg.tar.gz \\
        --methods ce,cb,crt,ot,ot-cc-cb --seeds 0 --mode decoupled --set data.n_max=300 ...
"""
import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from otreweight.compare import run_comparison
from otreweight.config import load_config, resolve_config_path

here = Path(globals().get("__file__", "examples/plot_cifar10_lt_compare.py")).resolve().parent
data = Path(os.environ.get("OTREWEIGHT_DATA") or here.parent.parent / "shared" / "data")
archive = data / "cifar10-jpeg.tar.gz"
if not archive.exists():
    raise SystemExit(f"{archive} not found: set OTREWEIGHT_DATA to the folder holding cifar10-jpeg.tar.gz")

out = Path(tempfile.mkdtemp(prefix="otreweight-c10-"))
cfg = load_config(resolve_config_path("cifar10_lt_if100"), [
    f"data.source={archive}", "data.n_max=300", "data.augment=none", f"output_dir={out / 'run'}",
    "model.name=small_cnn", "model.options.width=16", "stage1.epochs=4", "stage1.warmup_epochs=1",
    "stage1.batch_size=64", "threads=1", "progress=false",
])
result = run_comparison(cfg, methods=["ce", "cb", "crt", "ot", "ot-cc-cb"], seeds=[0], mode="decoupled",
                        method_sets=["*.epochs=5"], output=out / "compare", log=lambda *a: None)
print(result["files"]["md"].read_text())

# %%
# Per method: test balanced accuracy and the accuracy on the many- and medium-shot classes
# (CIFAR-10-LT with at most 300 images per class has no class under 20, so "few" is empty).
rows = result["rows"]
names = [r["method"] for r in rows]
fig, ax = plt.subplots(figsize=(7, 3.4))
for k, (key, label) in enumerate([("balanced_accuracy", "balanced"), ("many", "many"), ("medium", "medium")]):
    vals = [r[f"{key}_mean"] or 0.0 for r in rows]
    ax.bar([i + 0.27 * (k - 1) for i in range(len(rows))], vals, width=0.27, label=label)
ax.set_xticks(range(len(rows)), names)
ax.set_ylabel("test accuracy (%)")
ax.set_title("CIFAR-10-LT IF 100, tiny budget, seed 0")
ax.legend(ncols=3, fontsize=8)
fig.tight_layout()
plt.show()
