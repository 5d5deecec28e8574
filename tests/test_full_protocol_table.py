"""benchmarks/full_protocol_table.py on a small comparison folder written by hand: the numbers of its
columns (mean ± population std, per seed, the paired t interval against cb, the scored-epoch spans)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("full_protocol_table", ROOT / "benchmarks" / "full_protocol_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_stage(folder: Path, best: float, last: float, tests: list) -> None:
    """``final.json`` and ``metrics.jsonl`` of a stage; ``tests[e]`` is epoch e+1's test score or None."""
    folder.mkdir(parents=True)
    (folder / "final.json").write_text(json.dumps({
        "best": {"balanced_accuracy": best}, "last": {"balanced_accuracy": last},
        "seconds_per_epoch": 2.0, "seconds": 2.0 * len(tests)}))
    rows = [{"epoch": e + 1, **({"test": {"balanced_accuracy": t}} if t is not None else {})}
            for e, t in enumerate(tests)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_columns_from_a_three_seed_comparison(tmp_path, capsys):
    plan = [{"name": "ce", "stage": "stage1"}, {"name": "cb", "method": "cb"}, {"name": "ot", "method": "ot"}]
    (tmp_path / "compare.json").write_text(json.dumps({"plan": plan}))
    cb = {0: 0.60, 1: 0.62, 2: 0.64}
    ot = {0: 0.63, 1: 0.66, 2: 0.65}  # paired differences +3, +4, +1
    for s in (0, 1, 2):
        seed = tmp_path / f"seed_{s}"
        # stage 1 of seed 0 scored on test at epochs 1-2 and 4 only; the others at every epoch
        write_stage(seed / "stage1", 0.5, 0.5, [0.4, 0.45, None, 0.52] if s == 0 else [0.4, 0.5, 0.5, 0.5])
        write_stage(seed / "stage2_cb", cb[s], cb[s], [cb[s], cb[s]])
        write_stage(seed / "stage2_ot", ot[s], ot[s] - 0.01, [ot[s], ot[s] + 0.01])
        if s < 2:
            (seed / "results.json").write_text("{}")
    extra = tmp_path / "whole" / "stage2_ot_full"
    write_stage(extra, 0.70, 0.69, [0.70])
    assert load().main([str(tmp_path), f"ot_full=1:{extra}"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| method")}
    assert rows["ot"][1] == "64.67 ± 1.25" and rows["ot"][2] == "63.00, 66.00, 65.00"
    assert rows["ot"][4] == "65.67 ± 1.25 (every epoch)"  # the best scored test epoch of each seed, averaged
    # +2.67, sample std 1.53, 95 % t interval 2.67 ± 4.303 * 1.53 / sqrt(3)
    assert rows["ot"][5] == "+2.67 ± 1.53 [-1.13, +6.46], within noise"
    assert rows["cb"][5] == "reference" and rows["ce"][5].startswith("-12.00 ± 2.00")
    assert rows["ce"][4].startswith("50.67 ± 0.94 (seed 0: epochs 1-2, 4 of 4; seed 1: every epoch")
    assert rows["ot_full"][1] == "70.00" and rows["ot_full"][5] == "+8.00"  # seed 1's cb: one pair
    assert rows["ot"][8].startswith("81.87")


def test_a_method_that_did_not_run_is_said(tmp_path, capsys):
    (tmp_path / "compare.json").write_text(json.dumps({"plan": [{"name": "cb", "method": "cb"}]}))
    (tmp_path / "seed_0").mkdir()
    assert load().main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| cb | not run |" in out and "Seeds finished: none" in out


@pytest.mark.parametrize("spans", [[0.4, None, None], [None, 0.4, 0.5]])
def test_scored_epoch_ranges(tmp_path, spans):
    write_stage(tmp_path / "s", 0.5, 0.5, spans)
    best, text = load().watched(tmp_path / "s")
    assert text == {0: "epochs 1 of 3", 1: "epochs 2-3 of 3"}[spans.index(next(t for t in spans if t))]
    assert best == pytest.approx(100 * max(t for t in spans if t is not None))
