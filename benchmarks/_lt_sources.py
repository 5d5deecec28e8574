"""Data and CPU-budget configs shared by benchmarks/posthoc.py and benchmarks/regimes.py.

Every data set is an in-memory source handed to :func:`otreweight.compare.run_plan` (``dataset=``):

* ``mnist``: the official MNIST IDX files (../shared/data/mnist) as 28x28x1 uint8 images;
  ``small_cnn`` (width 16), exponential profile IF 100 with ``n_max`` 2,000 (about 4,400 training
  images), 12 stage-1 epochs (SGD 0.05, batch 64), the whole 10,000-image test set;
* ``news``: 20 Newsgroups (../shared/data/20newsgroups, train.tsv.gz / test.tsv.gz), IF 100, the
  shipped ``20newsgroups_lt_if100`` config (``text_bag``, 60 stage-1 epochs);
* ``cifar``: the CIFAR-10 JPEG archive (../shared/data/cifar10-jpeg.tar.gz), IF 100, ``small_cnn``
  width 16 without augmentation, 6 stage-1 epochs (the CPU budget);
* ``digits``: scikit-learn's digits as in ``otreweight demo`` (MLP, IF 20).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from otreweight.config import as_run_config
from otreweight.experiment import load_config

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
CONFIGS = HERE.parent / "configs"


def mnist_dataset(root=SHARED / "mnist"):
    from otreweight.data.sources import ArrayDataset
    from otreweight.data.sources.points import _idx_file, _read_idx

    root = Path(root)
    x = _read_idx(_idx_file(root, "train-images-idx3-ubyte"), 3)[..., None]
    y = _read_idx(_idx_file(root, "train-labels-idx1-ubyte"), 1).astype(np.int64)
    xt = _read_idx(_idx_file(root, "t10k-images-idx3-ubyte"), 3)[..., None]
    yt = _read_idx(_idx_file(root, "t10k-labels-idx1-ubyte"), 1).astype(np.int64)
    return ArrayDataset(np.array(x), y, np.array(xt), yt, [str(c) for c in range(10)],
                        f"mnist:{root}")


def news_dataset(root=SHARED / "20newsgroups"):
    from otreweight.data.sources import load_dataset

    return load_dataset(str(root))


def cifar_dataset(path=SHARED / "cifar10-jpeg.tar.gz"):
    from otreweight.data.sources import load_dataset

    return load_dataset(str(path))


def digits_dataset():
    from otreweight.demo import digits_dataset as d

    return d()


DATASETS = {"mnist": mnist_dataset, "news": news_dataset, "cifar": cifar_dataset, "digits": digits_dataset}

# stage-2 recipe of every classifier-only method (the OT variant of the config is its reference)
STAGE2 = ["*.epochs=8", "*.batch_size=64", "*.lr=0.05", "ot.batch_size=64", "ot.lr=0.01"]


def base_config(name: str, out, threads: int = 1, stage1_epochs: int | None = None) -> dict:
    """The CPU-budget run config of data set ``name`` (see the module docstring)."""
    common = [f"output_dir={out}", "progress=false", f"threads={threads}", "checkpoint_every=0"]
    if name in ("mnist", "cifar"):
        e = stage1_epochs or (12 if name == "mnist" else 6)
        width = 16
        sets = [f"data.source={name}", "data.augment=none", "model.name=small_cnn", f"model.options.width={width}",
                f"stage1.epochs={e}", "stage1.batch_size=64", "stage1.lr=0.05", "stage1.warmup_epochs=1",
                "stage1.weight_decay=5e-4", "stage2=[]"]
        if name == "mnist":
            sets += ["data.n_max=2000"]
        cfg = load_config(CONFIGS / "cifar10_lt_if100.yaml", sets + common).to_dict()
        # the reference OT variant: the authors' classifier-only settings, this budget's recipe
        cfg["stage2"] = [ot_variant()]
        return as_run_config(cfg)
    if name == "news":
        e = stage1_epochs or 60
        cfg = load_config(CONFIGS / "20newsgroups_lt_if100.yaml",
                          ["data.source=20newsgroups", f"stage1.epochs={e}"] + common).to_dict()
        cfg["stage2"] = [ot_variant()]
        return as_run_config(cfg)
    if name == "digits":
        from otreweight.demo import DemoConfig, demo_run_config

        cfg = demo_run_config(DemoConfig(threads=threads), 0, {}, out).to_dict()
        cfg.update(threads=threads, checkpoint_every=0)
        cfg["stage2"] = [ot_variant()]
        return as_run_config(cfg)
    raise SystemExit(f"unknown data set {name!r}; choose among {', '.join(DATASETS)}")


def ot_variant() -> dict:
    return {"name": "ot_classifier", "method": "ot", "trainable": "classifier", "epochs": 8, "batch_size": 64,
            "lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
            "options": {"targets": "prototype", "init": "class_balanced", "eps": 0.1, "cost": "combined",
                        "meta_ce": 10.0}}
