"""Config-driven runs: data source -> long-tailed split -> stage 1 -> stage-2 variants -> outputs.

The run layer, in the order a run goes through it:

* :mod:`~otreweight.run.prepare` - the source opened, the split drawn (or read from a split file),
  the modality's statistics and the loaders (:class:`~otreweight.run.prepare.Prepared`);
* :mod:`~otreweight.run.bundle` - the model built for the data's inputs, its card, read back;
* :mod:`~otreweight.run.stage` - one stage trained into its folder (:class:`~otreweight.run.stage.StageResult`
  is its ``final.json``);
* :mod:`~otreweight.run.experiment` - checks, the output folder and lock, stage 1 and every stage-2 variant;
* :mod:`~otreweight.run.evaluate` - a saved model scored on a data source.

Output folder layout::

    <output_dir>/
      config.yaml            resolved config
      split.json             per-class train / meta / val / test counts, thresholds
      stage1/                one folder per stage (stage1, stage2_<name>)
        metrics.jsonl        one line per epoch (train loss, lr, validation metrics, seconds)
        checkpoint.pt        written atomically every epoch: everything needed to resume
        model.safetensors    the validation-selected model's weights (safetensors: loading runs no code)
        model.json           its card: what rebuilds and scores it, the config, data fingerprint, metrics
        final.json           test metrics at the validation-selected and the last epoch
        predictions.npz      test labels and predictions (best and last)
        weights.npz          OT stages (the method's artifacts): learned and initial per-example scores,
                             class-balanced weights
      results.json           every stage's final.json
      report.md, figures/    the report (``otreweight report``)

``--resume`` continues every unfinished stage from its checkpoint and skips finished ones; a
stage-1 checkpoint (``stage1.checkpoint``) can seed any number of stage-2 runs.

Per stage, ``meta_in_train: true`` adds the meta set to the training data of a method that does not
use it (``uses_meta = False``), so no method is starved of the labelled examples the meta-learners
see; ids stay ``0..N+M-1`` and the many/medium/few groups keep the long-tailed split's counts. A
stage-2 variant with ``start: scratch`` trains a freshly initialised model (the same
initialisation as stage 1) instead of starting from the stage-1 model: the end-to-end baselines.
"""
from .bundle import build_model, load_model
from .evaluate import evaluate_checkpoint
from .experiment import run_experiment
from .prepare import Prepared, export_split, verify_data
from .stage import StageResult

__all__ = ["Prepared", "StageResult", "build_model", "evaluate_checkpoint", "export_split", "load_model",
           "run_experiment", "verify_data"]
