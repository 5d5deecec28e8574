"""Compare two output folders of benchmarks/must_not_move.sh: every ``final.json`` and the demo's
``demo.json`` (times left out), and every ``.npz`` file (predictions, OT weights) array by array.

    python benchmarks/compare_outputs.py OUT_BEFORE OUT_AFTER

Prints each file that differs (and the keys that do) and a count; exits 1 if anything differs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _strip(o):
    """``o`` without its timing entries (any key naming seconds)."""
    if isinstance(o, dict):
        return {k: _strip(v) for k, v in o.items() if "second" not in k}
    if isinstance(o, list):
        return [_strip(v) for v in o]
    return o


def main(argv=None) -> int:
    a, b = (Path(p) for p in (argv or sys.argv[1:]))
    bad = n = 0
    for fa in sorted(a.rglob("final.json")) + sorted(a.glob("demo.json")):
        fb = b / fa.relative_to(a)
        n += 1
        if not fb.exists():
            print("missing", fb)
            bad += 1
            continue
        ja, jb = _strip(json.loads(fa.read_text())), _strip(json.loads(fb.read_text()))
        if ja != jb:
            bad += 1
            print("DIFFERS", fa.relative_to(a))
            for k in sorted(set(ja) | set(jb)) if isinstance(ja, dict) and isinstance(jb, dict) else []:
                if ja.get(k) != jb.get(k):
                    print("   ", k, str(ja.get(k))[:150], "|", str(jb.get(k))[:150])
    print(f"{n} JSON files compared, {bad} differ")
    m = bad_npz = 0
    for fa in sorted(a.rglob("*.npz")):
        fb = b / fa.relative_to(a)
        m += 1
        if not fb.exists():
            print("missing", fb)
            bad_npz += 1
            continue
        x, y = np.load(fa), np.load(fb)
        if set(x.files) != set(y.files) or any(not np.array_equal(x[k], y[k]) for k in x.files):
            bad_npz += 1
            print("DIFFERS", fa.relative_to(a))
    print(f"{m} npz files compared, {bad_npz} differ")
    return 1 if bad or bad_npz else 0


if __name__ == "__main__":
    sys.exit(main())
