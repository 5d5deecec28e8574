"""The table of the CIFAR-10-LT IF 100 full-protocol section of BENCHMARKS.md, from a comparison folder.

    python benchmarks/full_protocol_table.py runs/full_bf16/compare [ot_full=0:runs/otfull/seed_0/stage2_ot_full]

Per method and seed: test balanced accuracy (= top-1 on the balanced test set) at the
validation-selected epoch and at the last epoch; the best test score over the epochs that were
scored on test (``watch_test``; reported only, never used for selection, with the epochs it covers);
the paired difference to ``cb`` at the validation-selected epoch (mean, sample std and 95 % t
interval over the seeds, as ``compare`` reports it); seconds per epoch and in all. The
published numbers (selected on the test set) are printed beside them.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# ResNet-32, CIFAR-10-LT IF 100, top-1 (%), as published (see docs/reproducing.md)
PUBLISHED = {"ce": ("CE, re-run in 'Bag of Tricks'", 70.36), "cb": ("CB focal, ibid.", 75.20),
             "crt": ("cRT, ibid.", 74.99), "balanced_softmax": ("Balanced Softmax, ibid.", 77.54),
             "logit_adjust_posthoc": ("logit adjustment (loss), its release", 77.89),
             "ot": ("OT re-weighting, the paper as quoted", 81.87)}
LDAM_DRW = 77.03


def watched(stage_dir: Path) -> tuple[float | None, str]:
    """The best test balanced accuracy over the epochs scored on test, and which epochs those were."""
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    scored = [r for r in rows if "test" in r]
    if not scored:
        return None, "-"
    best = max(r["test"]["balanced_accuracy"] for r in scored)
    if len(scored) == len(rows):
        return 100 * best, "every epoch"
    runs, start = [], scored[0]["epoch"]  # the scored epochs as ranges, e.g. 1-18, 161-200
    for prev, cur in zip(scored, scored[1:] + [None]):
        if cur is None or cur["epoch"] != prev["epoch"] + 1:
            runs.append(f"{start}-{prev['epoch']}" if prev["epoch"] != start else str(start))
            start = cur["epoch"] if cur is not None else start
    return 100 * best, f"epochs {', '.join(runs)} of {rows[-1]['epoch']}"


def _ms(xs, d=2) -> str:
    """Mean ± population std over seeds (the convention of every table of the project)."""
    return f"{statistics.mean(xs):.{d}f}" + (f" ± {statistics.pstdev(xs):.{d}f}" if len(xs) > 1 else "")


def _paired(diffs: list) -> str:
    """Mean ± sample std of the per-seed differences to cb, with the 95 % t interval (3 seeds or more)."""
    from otreweight.compare import paired_stats

    st = paired_stats(diffs)
    text = f"{st['diff_mean']:+.2f}"
    if st["diff_std"] is not None:
        text += f" ± {st['diff_std']:.2f} [{st['ci_low']:+.2f}, {st['ci_high']:+.2f}], {st['verdict']}"
    return text


def _row(name: str, stage_dirs: dict, root: Path, published) -> str:
    """One method's row from its stage folder of each seed, ``{seed: folder}``."""
    best, last, watch, diff, spe, sec, per = [], [], [], [], [], [], []
    for s, sdir in stage_dirs.items():
        if not (sdir / "final.json").exists():
            continue
        f = json.loads((sdir / "final.json").read_text())
        best.append(100 * f["best"]["balanced_accuracy"])
        last.append(100 * f["last"]["balanced_accuracy"])
        per.append(f"{best[-1]:.2f}")
        w, span = watched(sdir)
        if w is not None:
            watch.append((s, w, span))
        cb = root / f"seed_{s}" / "stage2_cb" / "final.json"
        if cb.exists():
            diff.append(best[-1] - 100 * json.loads(cb.read_text())["best"]["balanced_accuracy"])
        spe.append(f["seconds_per_epoch"])
        sec.append(f["seconds"])
    if not best:
        return f"| {name} | not run | | | | | | | |"
    spans = sorted({span for _, _, span in watch})
    if spans == ["every epoch"]:
        covered = "every epoch"
    else:
        covered = "; ".join(f"seed {s}: {span}" for s, _, span in watch)
    w = f"{_ms([x for _, x, _ in watch])} ({covered})" if watch else "-"
    ref = "reference" if name == "cb" else (_paired(diff) if diff else "-")
    pub = f"{published[1]:.2f} ({published[0]})" if published else "-"
    return (f"| {name} | {_ms(best)} | {', '.join(per)} | {_ms(last)} | {w} | {ref} | {_ms(spe, 1)} | "
            f"{_ms(sec, 0)} | {pub} |")


def main(argv=None) -> int:
    """``full_protocol_table.py COMPARE_DIR [NAME=SEED:STAGE_DIR ...]``: the table, one row per method of
    the comparison, then one row per extra stage run outside it (e.g. the whole-network OT stage of one
    seed, trained from that seed's stage-1 model; compared with that seed's cb)."""
    args = list(argv or sys.argv[1:])
    root = Path(args[0])
    plan = json.loads((root / "compare.json").read_text())["plan"]
    seeds = sorted(int(p.name.removeprefix("seed_")) for p in root.glob("seed_*"))
    print("| method | test bal. acc, val-selected | per seed | test bal. acc, last epoch | best test over the scored "
          "epochs (reported only) | vs cb, paired (val-selected): mean ± sd [95 % t interval] | s/epoch | s | "
          "published (test-selected) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in plan:
        stage = "stage1" if v.get("stage") == "stage1" else f"stage2_{v['name']}"
        print(_row(v["name"], {s: root / f"seed_{s}" / stage for s in seeds}, root, PUBLISHED.get(v["name"])))
    for extra in args[1:]:
        name, _, where = extra.partition("=")
        seed, _, path = where.partition(":")
        print(_row(name, {int(seed): Path(path)}, root, None))
    done = [s for s in seeds if (root / f"seed_{s}" / "results.json").exists()]
    print(f"\nSeeds finished: {', '.join(map(str, done)) or 'none'}. LDAM-DRW as published (test-selected): {LDAM_DRW:.2f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
