"""Stage-1 training throughput on CIFAR-10-LT: one process against N under torchrun (gloo, CPU).

    python benchmarks/ddp_cpu.py --data ../shared/data/cifar10-jpeg.tar.gz --threads 2
    torchrun --nproc_per_node=2 benchmarks/ddp_cpu.py --data ../shared/data/cifar10-jpeg.tar.gz --threads 1

Builds the CIFAR-10-LT IF 100 split of ``configs/cifar10_lt_if100.yaml`` (``--n-max`` caps the
largest class, for a short measurement), then trains ResNet-32 with plain CE for ``--epochs``
epochs through :func:`otreweight.fit` with per-process batch ``--batch`` (the global batch is
``--batch`` x processes) and prints, from rank 0, the training images per second of every epoch
(training examples / the epoch's seconds, validation included), the seconds of one evaluation of the
test split (sharded over the ranks, logits gathered) and the OT sync volume per step.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from otreweight import FitConfig, create_method, distributed as dist
from otreweight.config import load_config
from otreweight.run import Prepared, build_model
from otreweight.data.sources import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64, help="per process")
    ap.add_argument("--n-max", type=int, default=1000)
    ap.add_argument("--json", help="also write the result here (rank 0)")
    ap.add_argument("--eval-whole", action="store_true",
                    help="also time the test evaluation with every rank running the whole split (unsharded)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dist.init("cpu")
    cfg = load_config("configs/cifar10_lt_if100.yaml", [f"data.source={args.data}", f"data.n_max={args.n_max}",
                                                         "device=cpu", "progress=false"])
    t0 = time.perf_counter()
    prep = Prepared(cfg.data, cfg.seed, cfg.model.name, load_dataset(cfg.data.source, lazy=False), torch.device("cpu"))
    load_s = time.perf_counter() - t0
    torch.manual_seed(0)
    model = build_model(cfg.model.name, cfg.model.options, len(prep.classes), prep.model_kwargs())
    fit_cfg = FitConfig(epochs=args.epochs, batch_size=args.batch, lr=0.1, progress=False)
    from otreweight import fit

    res = fit(model, create_method("ce"), prep.train, prep.val, config=fit_cfg, device="cpu", augment=prep.augment)
    n = len(prep.train)
    # evaluation of the test split in shares (each rank predicts its contiguous share, the logits
    # are gathered in id order): the forward passes of one process split over the ranks
    from otreweight import predict_logits

    dist.barrier()
    t0 = time.perf_counter()
    logits = predict_logits(model, prep.test, 256, prep.modality.channels_last, shard=True)
    eval_s = time.perf_counter() - t0
    n_test = int(logits.shape[0])
    whole_s = None
    if args.eval_whole:  # as before the sharding: every rank evaluates the whole split
        dist.barrier()
        t0 = time.perf_counter()
        whole = predict_logits(model, prep.test, 256, prep.modality.channels_last)
        dist.barrier()
        whole_s = time.perf_counter() - t0
        assert torch.allclose(whole, logits, atol=1e-5)
    out = {"processes": dist.world_size(), "threads_per_process": args.threads, "train_images": n,
           "batch_per_process": args.batch, "global_batch": args.batch * dist.world_size(),
           "epoch_seconds": [round(r["seconds"], 2) for r in res.history],
           "images_per_s": [round(n / r["seconds"], 1) for r in res.history], "data_seconds": round(load_s, 1),
           "test_images": n_test, "test_eval_seconds": round(eval_s, 2),
           "test_eval_images_per_s": round(n_test / eval_s, 1),
           **({"test_eval_whole_per_rank_seconds": round(whole_s, 2)} if whole_s is not None else {}),
           # the OT sync of one step (method ot): ids (int64), labels (int64) and float32 features of
           # every rank's part, all-gathered: what each rank receives per step
           "ot_sync_bytes_per_step": (args.batch * (8 + 8 + 4 * model.classifier.in_features)
                                      * (dist.world_size() - 1) + 8 * dist.world_size()) if dist.world_size() > 1 else 0}
    if dist.is_main():
        print(json.dumps(out))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2)
    prep.close()
    dist.finish()


if __name__ == "__main__":
    main()
