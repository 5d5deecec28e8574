"""benchmarks/gpu_protocol.py --smoke: the GPU protocol's code path on the CPU at a tiny size, its
time budget (stopped, then resumed by the same command) and its report."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("gpu_protocol", ROOT / "benchmarks" / "gpu_protocol.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_smoke_stops_at_its_budget_then_resumes_to_the_table(tiny_npz, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    gp = load()
    args = ["--smoke", "--data", str(tiny_npz), "--out", str(tmp_path), "--seeds", "0", "--methods", "ce,cb,ot"]
    assert gp.main(args + ["--budget-min", "0.05"]) == 3  # 3 s: stopped inside stage 1, resumable
    assert "NOT finished" in (tmp_path / "gpu_protocol.md").read_text()
    assert gp.main(args + ["--budget-min", "5"]) == 0
    report = json.loads((tmp_path / "gpu_protocol.json").read_text())
    assert report["finished"] and report["device"].startswith("CPU")
    assert {r["stage"] for r in report["stages"]} == {"stage1", "stage2_cb", "stage2_ot"}
    assert {r["stage"]: r["epochs"] for r in report["stages"]} == {"stage1": 2, "stage2_cb": 1, "stage2_ot": 1}
    # the test split scored every epoch: the best-over-epochs figure beside the validation-selected table
    assert "Best test balanced accuracy over the epochs" in (tmp_path / "compare" / "compare.md").read_text()
    md = (tmp_path / "gpu_protocol.md").read_text()
    assert "| ot |" in md and "| cb |" in md and "Finished." in md
    # the settings that make it the GPU path: bf16 autocast and channels_last in every stage
    cfg = (tmp_path / "compare" / "seed_0" / "config.yaml").read_text()
    assert cfg.count("amp: bf16") >= 3 and cfg.count("channels_last: true") >= 3


def test_refuses_without_cuda_in_one_line(capsys):
    import torch

    if torch.cuda.is_available():
        return
    assert load().main(["--data", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA device" in err[0] and "--smoke" in err[0]


def test_the_child_can_be_interrupted_when_the_command_runs_in_the_background(tmp_path):
    """A shell starts a background job with SIGINT ignored; the child still gets SIGINT, so the budget's
    stop is a KeyboardInterrupt in the comparison, not a SIGKILL 30 s later."""
    import signal
    import sys

    gp = load()
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = "import signal; print('handler', signal.getsignal(signal.SIGINT).__name__)"
        status, _ = gp.run_with_budget([sys.executable, "-c", code], 60, tmp_path / "log.txt")
    finally:
        signal.signal(signal.SIGINT, before)
    assert status == 0 and "handler default_int_handler" in (tmp_path / "log.txt").read_text()
