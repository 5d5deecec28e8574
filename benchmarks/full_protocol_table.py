"""The table of the CIFAR-10-LT IF 100 full-protocol section of BENCHMARKS.md, from a comparison folder.

    python benchmarks/full_protocol_table.py runs/full_bf16/compare

Per method and seed: test balanced accuracy (= top-1 on the balanced test set) at the
validation-selected epoch and at the last epoch; the best test score over the epochs that were
scored on test (``watch_test``; reported only, never used for selection, with the epochs it covers);
the paired difference to ``cb`` at the validation-selected epoch; seconds per epoch and in all. The
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


def main(argv=None) -> int:
    root = Path((argv or sys.argv[1:])[0])
    plan = json.loads((root / "compare.json").read_text())["plan"]
    seeds = sorted(int(p.name.removeprefix("seed_")) for p in root.glob("seed_*"))
    print("| method | test bal. acc, val-selected | test bal. acc, last epoch | best test over the scored epochs "
          "(reported only) | vs cb, paired (val-selected) | s/epoch | s | published (test-selected) |")
    print("|---|---|---|---|---|---|---|---|")
    for v in plan:
        stage = "stage1" if v.get("stage") == "stage1" else f"stage2_{v['name']}"
        best, last, watch, diff, spe, sec = [], [], [], [], [], []
        for s in seeds:
            sdir = root / f"seed_{s}" / stage
            if not (sdir / "final.json").exists():
                continue
            f = json.loads((sdir / "final.json").read_text())
            best.append(100 * f["best"]["balanced_accuracy"])
            last.append(100 * f["last"]["balanced_accuracy"])
            w, span = watched(sdir)
            if w is not None:
                watch.append((w, span))
            cb = root / f"seed_{s}" / "stage2_cb" / "final.json"
            if cb.exists():
                diff.append(best[-1] - 100 * json.loads(cb.read_text())["best"]["balanced_accuracy"])
            spe.append(f["seconds_per_epoch"])
            sec.append(f["seconds"])
        if not best:
            print(f"| {v['name']} | not run | | | | | | |")
            continue

        def ms(xs, d=2):
            return f"{statistics.mean(xs):.{d}f}" + (f" ± {statistics.pstdev(xs):.{d}f}" if len(xs) > 1 else "")

        w = (ms([x for x, _ in watch]) + f" ({watch[0][1]})") if watch else "-"
        pub = PUBLISHED.get(v["name"])
        print(f"| {v['name']} | {ms(best)} | {ms(last)} | {w} | {('+' if statistics.mean(diff) > 0 else '') + ms(diff) if v['name'] != 'cb' else 'reference'} | "
              f"{ms(spe, 1)} | {ms(sec, 0)} | {f'{pub[1]:.2f} ({pub[0]})' if pub else '-'} |")
    print(f"\nSeeds: {', '.join(map(str, seeds))}. LDAM-DRW as published (test-selected): {LDAM_DRW:.2f}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
