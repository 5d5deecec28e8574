"""Command line: ``otreweight <command> [options]``; ``otreweight <command> --help`` for each."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


from ._errors import OTReweightError
from .utils import parse_assignment


def _parse_kv(items: list[str]) -> dict:
    """``["eps=0.05", "init=uniform"]`` -> ``{"eps": 0.05, "init": "uniform"}`` (values parsed as YAML)."""
    return dict(parse_assignment(item, "--ot") for item in items or [])


def _int_list(text: str) -> tuple:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _name_list(text: str) -> tuple:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="otreweight",
        description="Imbalanced classification with per-example weights learned by optimal transport "
        "(Guo et al., NeurIPS 2022), with the standard baselines beside it.",
    )
    parser.add_argument("--version", action="version", version=f"otreweight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="command")

    for add in (_add_demo, _add_train, _add_evaluate, _add_compare, _add_split, _add_data, _add_report):
        add(sub)
    return parser


def _add_demo(sub) -> None:
    from .demo import DemoConfig

    demo = sub.add_parser(
        "demo",
        help="OT re-weighting beside the baselines on scikit-learn's digits made long-tailed (< 1 min on a CPU)",
        description="Make scikit-learn's digits long-tailed, train an MLP with cross-entropy (stage 1), then "
        "re-train its classifier on the frozen backbone with each method (stage 2), over several seeds. "
        "Prints test metrics at the validation-selected epoch, mean +- std over seeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = DemoConfig()
    demo.add_argument("--seeds", type=_int_list, default=d.seeds, help="comma-separated seeds (long-tail sampling and training)")
    demo.add_argument("--imbalance-factor", type=float, default=d.imbalance_factor, help="IF = n_max / n_min of the exponential profile")
    demo.add_argument("--methods", type=_name_list, default=d.methods,
                      help="comma-separated stage-2 methods: any registered method (ce, focal, cb, cb_focal, cb_resample, "
                      "ldam_drw, balanced_softmax, logit_adjust, logit_adjust_posthoc, crt, mwnet, l2rw, ot), "
                      "ot-no-meta-ce (OT without its meta-set cross-entropy term), ot-no-step (OT's loss "
                      "without any OT step), ot-kl / ot-cc (the solved kl_regularized / class_conditional "
                      "objectives, see docs/ot_weights.md), ot-cc-cb (class_conditional weights with cb's loss), "
                      "ot-envelope (the envelope gradient of the converged entropic value: ot before it became "
                      "the authors' update) or cb+meta (class-balanced "
                      "re-weighting trained on train + meta set)")
    demo.add_argument("--stage1-epochs", type=int, default=d.stage1_epochs, help="epochs of stage 1 (plain CE, whole network)")
    demo.add_argument("--stage2-epochs", type=int, default=d.stage2_epochs, help="epochs of stage 2 (classifier only)")
    demo.add_argument("--ot", metavar="KEY=VALUE", action="append", default=[],
                      help="option of the OT method, repeatable, e.g. --ot init=uniform --ot meta_ce=0 "
                      "(keys: init, beta, eps, cost, alpha, label_scale, steps, lr, weighting, targets, meta_ce, tol, max_iter, solver, "
                      "objective, scope, lam)")
    demo.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (the demo's MLP is fastest on one)")
    demo.add_argument("--progress", action="store_true", help="show a progress bar per epoch")
    demo.add_argument("--json", metavar="PATH", help="also write per-seed results as JSON to PATH")
    demo.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    demo.add_argument("--output", metavar="DIR", help="keep each seed's run folder (config, metrics, checkpoints) "
                      "under DIR/seed_<s> (default: a temporary folder, removed afterwards)")


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train",
        help="run a YAML-configured experiment: long-tailed split, stage 1, stage-2 variants, report",
        description="Run stage 1 (plain CE) and every stage-2 variant of a config on its data source. "
        "Writes per-epoch metrics, atomic checkpoints, test metrics at the validation-selected and last "
        "epoch, and a Markdown report into the config's output_dir.",
    )
    train.add_argument("--config", required=True, help="a YAML file, or the name of a shipped config (e.g. cifar10_lt_if100)")
    train.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                       help="override a config value, repeatable: --set stage1.epochs=15 --set stage2.*.epochs=5 "
                       "--set data.source=path/to/folder --set stage2.0.options.init=uniform")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in output_dir")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--no-report", action="store_true", help="do not write report.md and figures")


def _add_evaluate(sub) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="score a saved model (a stage's model.json) on a data source",
        description="Load a stage's model (model.json + model.safetensors; loading runs no code) and report accuracy, balanced accuracy, many/medium/few and the "
        "geometric mean of recalls on a data source's test (or train) split.",
    )
    ev.add_argument("checkpoint", help="a stage's model.json (or its folder, or an old best.pt) written by "
                    "`otreweight train`")
    ev.add_argument("--data", required=True, help="cifar10, cifar100, an image folder or archive, or a .npz file")
    ev.add_argument("--root", default="data", help="folder of the CIFAR archives")
    ev.add_argument("--split", default="test", choices=("test", "train"), help="the split of the data source to score")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ev.add_argument("--no-download", action="store_true", help="never download a missing CIFAR archive")
    ev.add_argument("--json", metavar="PATH", help="also write the metrics as JSON")
    ev.add_argument("--prior", metavar="PRIOR",
                    help="a deployment class prior to score under: uniform, train (the model's training frequencies), "
                    "estimate (EM of Saerens et al. 2002 on the scored split, unlabelled) or a file of one number per "
                    "class (YAML/JSON list, a class-name mapping, or numbers separated by spaces); adds "
                    "prior_accuracy = sum over classes of prior x per-class accuracy")
    ev.add_argument("--adjust-to-prior", action="store_true",
                    help="correct the predictions toward --prior by logit adjustment: logits + log(prior) - "
                    "log(model prior)")
    ev.add_argument("--model-prior", default="train", choices=("train", "uniform"),
                    help="the prior the model's scores were trained under (train: plain cross-entropy; uniform: a "
                    "balanced method, e.g. cb, logit_adjust, ot), for --adjust-to-prior and --prior estimate")


def _add_compare(sub) -> None:
    cmp_ = sub.add_parser(
        "compare",
        help="OT re-weighting vs the baselines on identical splits over seeds: Markdown/CSV table and a plot",
        description="Run stage 1 (plain CE) once per seed, then every method on the same long-tailed split "
        "(each the way its paper trains it, within the config's budget; see --print-plan), select each model "
        "on the validation split, and write compare.md, compare.csv and compare.png: test accuracy, balanced "
        "accuracy, many/medium/few and seconds per epoch, mean +- std over seeds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cmp_.add_argument("--config", required=True, help="a YAML file, or the name of a shipped config (e.g. cifar10_lt_if100)")
    cmp_.add_argument("--methods", type=_name_list, default=None,
                      help="comma-separated methods (default: ce,focal,cb,ldam_drw,balanced_softmax,logit_adjust_posthoc,"
                      "crt,mwnet,l2rw,ot; also cb_focal, cb_resample, logit_adjust, any registered method, the named OT "
                      "variants ot-no-meta-ce, ot-no-step, ot-kl, ot-cc, ot-cc-cb, ot-envelope; with "
                      "--preset ablation: the ablation names, all by default)")
    cmp_.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="comma-separated seeds (split and training)")
    cmp_.add_argument("--preset", default="baselines", choices=("baselines", "ablation"),
                      help="baselines: the methods side by side; ablation: OT with one option changed at a time "
                      "(cost, meta targets, initialisation, meta-CE term, OT steps)")
    cmp_.add_argument("--mode", default="paper", choices=("paper", "decoupled"),
                      help="paper: end-to-end losses train from scratch with the stage-1 recipe; decoupled: they "
                      "re-train the classifier of the stage-1 backbone with OT's stage-2 recipe (cheap)")
    cmp_.add_argument("--meta-in-train", action="store_true",
                      help="add the meta set to the training data of every method that does not use it (stage 1 too)")
    cmp_.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                      help="override a config value, repeatable (as in `otreweight train`): --set stage1.epochs=15")
    cmp_.add_argument("--method-set", metavar="METHOD.KEY=VALUE", action="append", default=[], dest="method_sets",
                      help="override one method's stage settings, repeatable: --method-set ldam_drw.epochs=100 "
                      "--method-set mwnet.options.meta_lr=1e-4 --method-set '*.batch_size=64'")
    cmp_.add_argument("--output", help="output folder (default: the config's output_dir + _compare or _ablation)")
    cmp_.add_argument("--resume", action="store_true", help="continue an interrupted comparison in --output")
    cmp_.add_argument("--which", default="best", choices=("best", "last"),
                      help="report the validation-selected epoch (best) or the last one")
    cmp_.add_argument("--print-plan", action="store_true", help="print how each method would be run, and exit")
    cmp_.add_argument("--reference", metavar="METHOD", default=None,
                      help="the method every other is compared with, seed by seed (default: cb when compared, else "
                      "the first method): paired difference in test balanced accuracy, its mean, std and 95%% t "
                      "interval over seeds, and a verdict - better / worse when the interval excludes 0, within "
                      "noise when it contains 0")


def _config_arguments(parser) -> None:
    """``--config`` and ``--set`` of the commands that read a config without training it."""
    parser.add_argument("--config", required=True, help="a YAML file, or the name of a shipped config")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
                        help="override a config value, repeatable (as in `otreweight train`)")


def _add_split(sub) -> None:
    spl = sub.add_parser(
        "split", help="write the exact long-tailed split a run of a config uses, as a file",
        description="Write every example of the config's data source with its role (train, meta, val, test, "
        "unused), id, label, class, path and sha256, and a header with the data checksum and the config's data "
        "section. data.split_file: <file> makes a run use it instead of drawing.")
    _config_arguments(spl)
    spl.add_argument("--output", required=True, help="the split file to write (e.g. split.tsv)")


def _add_data(sub) -> None:
    data = sub.add_parser("data", help="check a data source against a split file (`otreweight data verify`)")
    data_sub = data.add_subparsers(dest="data_command", metavar="subcommand",
                                   help="verify: check a data folder, list or archive against a split file")
    ver = data_sub.add_parser(
        "verify", help="check a data folder, list, archive or file against a split file",
        description="Compare the config's data source with a split file: missing and extra files, files under "
        "another class, changed bytes, per-class counts. One line per problem and exit status 2 if any; "
        "a one-line summary and 0 otherwise.")
    _config_arguments(ver)
    ver.add_argument("--split-file", help="the split file (default: the config's data.split_file)")


def _add_report(sub) -> None:
    rep = sub.add_parser("report", help="(re)write report.md and figures for a run folder",
                         description="Write report.md with PNG figures for a run folder of `otreweight train`.")
    rep.add_argument("run_dir", help="a run folder written by `otreweight train` (its output_dir)")


def cmd_train(args) -> int:
    from .config import load_config, resolve_config_path
    from .run import run_experiment

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    if args.print_config:
        from .config import dump_config

        print(dump_config(cfg), end="")
        return 0
    run_experiment(cfg, resume=args.resume, log=print)  # under torchrun: one process per rank, rank 0 writes
    from . import distributed

    if not args.no_report and distributed.is_main():
        from .report import write_report

        print(f"report: {write_report(cfg.output_dir)}")
    return 0


def cmd_compare(args) -> int:
    from . import distributed
    from .compare import plan_comparison, run_comparison
    from .config import load_config, resolve_config_path

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    if args.print_plan:
        plan = plan_comparison(cfg, args.methods, args.preset, args.mode, args.meta_in_train, args.method_sets)
        keys = ("method", "start", "trainable", "epochs", "batch_size", "lr", "options", "meta_in_train")
        from .compare import _transductive, reference_method

        reference_method(plan, args.reference)
        for v in plan:
            d = v.to_dict()
            desc = "the stage-1 model (stage1 settings)" if "method" not in d else "  ".join(
                f"{k}={d[k]}" for k in keys if k in d)
            print(f"{v.name:<22} {desc}" + ("  (transductive)" if _transductive(v) else ""))
        return 0
    result = run_comparison(
        cfg, args.methods, args.seeds, args.preset, args.mode, args.meta_in_train, args.method_sets,
        args.output, args.resume, args.which, log=print, reference=args.reference,
    )  # under torchrun: every rank runs every method, rank 0 writes the tables and prints them
    if distributed.is_main():
        print(result["files"]["md"].read_text(), end="")
    return 0


def cmd_evaluate(args) -> int:
    import json

    from .run import evaluate_checkpoint
    from .summary import METRICS

    _check_json_target(args.json)
    m = evaluate_checkpoint(args.checkpoint, args.data, args.root, args.split, args.device, not args.no_download,
                            prior=args.prior, adjust=args.adjust_to_prior, model_prior=args.model_prior)
    for key in (*METRICS, "prior_accuracy"):
        if key == "prior_accuracy" and key not in m:
            continue
        v = m.get(key)
        print(f"{key:>18}: {'-' if v is None else f'{100 * v:.2f}'}")
    if "prior" in m:
        how = "predictions adjusted toward it" if m["adjusted"] else "predictions as the model gives them"
        print(f"{'prior':>18}: {' '.join(f'{v:.4f}' for v in m['prior'])} ({m['prior_source']}; {how})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(m, fh, indent=2)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(args.run_dir))
    return 0


def _check_json_target(path) -> None:
    """``--json PATH`` must be writable before the work starts."""
    if not path:
        return
    p = Path(path).expanduser().absolute()
    if not p.parent.is_dir():
        raise OTReweightError(f"--json {path}: folder {p.parent} does not exist; create it first")
    if p.is_dir():
        raise OTReweightError(f"--json {path} is a folder; give a file name")
    if not os.access(p.parent, os.W_OK):
        raise OTReweightError(f"--json {path}: folder {p.parent} is not writable")


def cmd_demo(args) -> int:
    from .demo import DemoConfig, print_table, results_json, run_demo
    from .summary import format_table

    for name, v in (("--stage1-epochs", args.stage1_epochs), ("--stage2-epochs", args.stage2_epochs)):
        if v < 1:
            raise OTReweightError(f"{name} must be >= 1, got {v}")
    if args.threads < 1:
        raise OTReweightError(f"--threads must be >= 1, got {args.threads}")
    if not args.seeds:
        raise OTReweightError("--seeds needs at least one seed")
    cfg = DemoConfig(
        seeds=args.seeds, imbalance_factor=args.imbalance_factor, methods=args.methods,
        stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs, device=args.device,
        progress=args.progress, threads=args.threads, ot_options=_parse_kv(args.ot),
    )
    _check_json_target(args.json)
    result = run_demo(cfg, output=args.output)
    if args.markdown:
        print(format_table(result["rows"], markdown=True))
    else:
        print_table(result)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(results_json(result))
    return 0


def cmd_split(args) -> int:
    from .config import load_config, resolve_config_path
    from .run import export_split

    cfg = load_config(resolve_config_path(args.config), args.overrides)
    res = export_split(cfg, args.output)
    sp = res["split"]
    print(f"{res['path']}: train {len(sp.train)}, meta {len(sp.meta)}, val {int(sp.val_counts.sum())} examples; "
          f"sha256 {res['sha256']} (data sha256 {res['data_sha256']})")
    return 0


def cmd_data(args) -> int:
    from .config import load_config, resolve_config_path
    from .run import verify_data

    if args.data_command != "verify":
        raise OTReweightError("usage: otreweight data verify --config <config> [--split-file <file>]")
    cfg = load_config(resolve_config_path(args.config), args.overrides)
    problems, summary = verify_data(cfg, args.split_file)
    for line in problems:
        print(line)
    if problems:
        return 2
    print(summary)
    return 0


COMMANDS = {"split": cmd_split, "data": cmd_data, "demo": cmd_demo, "train": cmd_train, "evaluate": cmd_evaluate, "report": cmd_report, "compare": cmd_compare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except (OTReweightError, OSError) as err:  # OSError: disk full, permissions, read-only (the API raises them)
        from . import distributed
        from .outputs import os_error_line

        # under torchrun: one line, from rank 0 (another rank's only when it met an error of its own)
        line = distributed.error_line(str(err) if isinstance(err, OTReweightError) else os_error_line(err))
        if line is not None:
            print(f"otreweight: error: {line}", file=sys.stderr)
        distributed.exit_if_launched(2)
        return 2
    except KeyboardInterrupt:
        print("otreweight: interrupted", file=sys.stderr)
        return 130
    finally:
        from . import distributed

        distributed.finish()  # leave the process group of a run under torchrun (nothing otherwise)


if __name__ == "__main__":
    sys.exit(main())
