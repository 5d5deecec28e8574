"""The CIFAR-10-LT IF 100 protocol on one GPU in one command: stage 1 (200 epochs) and the stage-2 methods, 3 seeds.

    python benchmarks/gpu_protocol.py --data ../shared/data/cifar10-jpeg.tar.gz --budget-min 12 \\
        [--compile] [--seeds 0,1,2] [--out runs/gpu_protocol]

It runs ``otreweight compare`` (config ``cifar10_lt_if100``, ``--mode decoupled``: stage 1 trained
once per seed, then every method re-trains or scores on its frozen backbone at the config's stage-2
length) for ce, cb, crt, balanced_softmax, logit_adjust_posthoc, ot (the authors' update) and
ot-cc-cb, with the data and its augmentation on the device (the in-memory loader), bf16 autocast,
channels_last and optionally ``torch.compile`` of the backbone. The comparison runs in a child
process; when ``--budget-min`` is spent the child is stopped (SIGINT, then SIGKILL) and the command
exits with status 3 after printing how far it got. Every stage checkpoints each epoch, so running
the same command again resumes exactly where it stopped.

It writes ``<out>/gpu_protocol.md`` (and ``.json``): the comparison's table (test metrics at the
validation-selected epoch, mean +- std over seeds), the wall time of every stage of every seed, the
device and the software versions. ``--smoke`` runs the same code path on the CPU at a tiny size
(2 + 1 epochs, 8 x 8 images; the test suite runs it), so a bug is found before GPU time is spent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

METHODS = "ce,cb,crt,balanced_softmax,logit_adjust_posthoc,ot,ot-cc-cb"


def overrides(args) -> list[str]:
    """The ``--set`` values of the comparison: device, precision, layout, compile, and the data."""
    sets = [f"device={args.device}", "progress=false", f"data.source={args.data}", "watch_test=true"]
    sets += [f"stage1.amp={args.amp}", "stage1.channels_last=true"]
    sets.append(f"stage1.compile={str(args.compile).lower()}")
    if args.smoke:  # the same path at a tiny size: 2 epochs of stage 1, 1 of every stage 2, small batches
        sets += ["stage1.epochs=2", "stage1.batch_size=32", "stage1.warmup_epochs=0", "stage1.eval_batch_size=64",
                 "stage2.*.epochs=1", "stage2.*.eval_batch_size=64", "data.imbalance_factor=4", "data.n_meta_per_class=3",
                 "data.n_val_per_class=4", "threads=1"]
    return sets + list(args.overrides)


def compare_command(args) -> list[str]:
    cmd = [sys.executable, "-m", "otreweight", "compare", "--config", args.config, "--methods", args.methods,
           "--seeds", args.seeds, "--mode", "decoupled", "--output", str(args.out / "compare"), "--resume"]
    for s in overrides(args):
        cmd += ["--set", s]
    # every compared stage-2 method: bf16 autocast and channels_last, as stage 1
    sets = [f"*.amp={args.amp}", "*.channels_last=true"]
    if args.smoke and "crt" in args.methods.split(","):
        sets.append("crt.epochs=1")
    for s in sets + args.method_sets:
        cmd += ["--method-set", s]
    return cmd


def run_with_budget(cmd: list[str], budget_s: float, log_path: Path) -> tuple[int, float]:
    """Run ``cmd``, its output appended to ``log_path`` and echoed; stop it when ``budget_s`` is spent.
    Returns (status, seconds): status 3 when the budget stopped it."""
    t0 = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        # SIGINT restored in the child: a shell starts a background job with SIGINT ignored, and the
        # budget's stop would otherwise wait 30 s for the SIGKILL
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = t0 + budget_s
        stopped = False
        os.set_blocking(proc.stdout.fileno(), False)
        while proc.poll() is None:
            line = proc.stdout.readline()
            if line:
                log.write(line)
                print(line, end="", flush=True)
                continue
            if time.perf_counter() > deadline and not stopped:
                stopped = True
                print(f"gpu_protocol: the budget of {budget_s / 60:.1f} min is spent; stopping (resumable)", flush=True)
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.2)
        rest = proc.stdout.read() or ""
        log.write(rest)
        print(rest, end="", flush=True)
    return (3 if stopped else proc.returncode), time.perf_counter() - t0


def stage_times(compare_dir: Path) -> list[dict]:
    """The wall time of every finished stage of every seed (from its ``final.json``)."""
    rows = []
    for seed_dir in sorted(compare_dir.glob("seed_*")):
        for final in sorted(seed_dir.glob("*/final.json")):
            data = json.loads(final.read_text())
            metrics = final.parent / "metrics.jsonl"
            epochs = sum(1 for line in metrics.read_text().splitlines() if line.strip()) if metrics.exists() else None
            rows.append({"seed": seed_dir.name.removeprefix("seed_"), "stage": final.parent.name, "epochs": epochs,
                         "seconds": round(float(data.get("seconds", 0.0)), 1),
                         "seconds_per_epoch": round(float(data.get("seconds_per_epoch", 0.0)), 2)})
    return rows


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), name)
    except OSError:
        pass
    return f"CPU ({name}, {os.cpu_count()} cores)"


def write_report(args, status: int, seconds: float) -> dict:
    import torch

    import otreweight

    compare_dir = args.out / "compare"
    table = (compare_dir / "compare.md").read_text() if (compare_dir / "compare.md").exists() else ""
    times = stage_times(compare_dir)
    report = {"device": device_name(args.device), "torch": torch.__version__, "otreweight": otreweight.__version__,
              "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]), "finished": status == 0,
              "wall_seconds_this_call": round(seconds, 1), "stages": times}
    (args.out / "gpu_protocol.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# CIFAR-10-LT IF 100 protocol on {report['device']}", "",
             f"torch {report['torch']}, otreweight {report['otreweight']}; command: `{report['command']}`", "",
             "Finished." if status == 0 else "NOT finished (budget spent or failed): rerun the same command to resume.",
             "", table, "", "| seed | stage | epochs | seconds | s/epoch |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['stage']} | {r['epochs']} | {r['seconds']} | {r['seconds_per_epoch']} |" for r in times]
    lines += ["", f"Total of the stages: {sum(r['seconds'] for r in times):.1f} s; this call: {seconds:.1f} s."]
    (args.out / "gpu_protocol.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the CIFAR-10 source: cifar-10-python.tar.gz's folder, or the JPEG "
                    "class-folder archive (../shared/data/cifar10-jpeg.tar.gz)")
    ap.add_argument("--config", default="cifar10_lt_if100")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget-min", type=float, default=12.0, help="stop (resumably) after this many minutes")
    ap.add_argument("--compile", action="store_true", help="torch.compile the backbone (stage 1)")
    ap.add_argument("--amp", default="bf16", choices=("bf16", "none"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, default=Path("runs/gpu_protocol"))
    ap.add_argument("--set", action="append", default=[], dest="overrides", help="extra config override")
    ap.add_argument("--method-set", action="append", default=[], dest="method_sets")
    ap.add_argument("--smoke", action="store_true", help="the same code path on the CPU at a tiny size")
    args = ap.parse_args(argv)
    if args.smoke:
        args.device = "cpu"
    elif args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("gpu_protocol.py: error: no CUDA device here; run with --smoke to check the code path on the CPU, "
                  "or --device cpu", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    status, seconds = run_with_budget(compare_command(args), args.budget_min * 60, args.out / "gpu_protocol.log")
    report = write_report(args, status, seconds)
    word = {0: "finished", 3: "stopped at its budget (run it again to resume)"}.get(status, f"failed (status {status})")
    print(f"gpu_protocol: {word} after {seconds:.1f} s on {report['device']}; "
          f"table and times in {args.out / 'gpu_protocol.md'}", flush=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
