"""The typed config of a run: one set of dataclasses, loaded from YAML, overridden with ``--set``.

A run is a :class:`RunConfig`::

    RunConfig                  name, output_dir, seed, device, threads, progress
      data:   DataConfig       source, split (imbalance factor, profile, meta / validation sizes), inputs
      model:  ModelConfig      registered model name and its options
      stage1: Stage1Config     FitConfig fields + checkpoint, meta_in_train
      stage2: [Stage2Config]   FitConfig fields + name, method, options, start, meta_in_train

The fields of a training stage are written once, in :class:`FitConfig` (the training loop's own
config). Their metadata say which are part of a method's *recipe* (copied between variants by
``compare``) and which a checkpoint must agree on before ``--resume`` may continue it, so YAML
loading, ``--set``, resume checks and comparison recipes all read the same definition.

Loading (:func:`load_config`): the dataclass defaults, then the YAML file and the files it names
with ``base:`` (a path relative to the file, or a shipped config name; children override their
base key by key, a list replaces the base's list), then ``--set KEY=VALUE`` overrides (the value
parsed as YAML; ``stage2.*.epochs=5`` sets every variant, ``stage2.0.options.eps=0.05`` one).
Every value is then checked against its field's type: a wrong one is one line naming the key, the
value and what is expected (``stage1.epochs must be an integer, got 'ten'``).

Fields are attributes (``cfg.stage1.lr``); :meth:`Section.to_dict` is the plain YAML form. Reading
a section like a mapping (``cfg["stage1"]["lr"]``), kept for code written against the earlier dict
config, is deprecated (a :class:`DeprecationWarning`) and goes in 0.5.
"""
from .fields import (AMP_MODES, LOGGERS, LR_SCALINGS, OPTIMIZERS, PROFILES, RECIPE, RESUME, RUN, RUN_RESUME,
                     SCHEDULES, SELECT_METRICS, STARTS, TRAINABLE, Section, build, coerce, yaml_fields)
from .files import (as_run_config, config_dir, dump_config, load_config, merge, read_config_file,
                    resolve_config_path, set_dotted)
from .sections import (DataConfig, FitConfig, ModelConfig, RunConfig, Stage1Config, Stage2Config, recipe_keys,
                       resume_keys)

__all__ = ["AMP_MODES", "LOGGERS", "LR_SCALINGS", "OPTIMIZERS", "PROFILES", "RECIPE", "RESUME", "RUN", "RUN_RESUME",
           "SCHEDULES", "SELECT_METRICS", "STARTS", "TRAINABLE", "Section", "build", "coerce", "merge", "set_dotted",
           "yaml_fields",
           "DataConfig", "FitConfig", "ModelConfig", "RunConfig", "Stage1Config", "Stage2Config", "as_run_config",
           "config_dir", "dump_config", "load_config", "read_config_file", "recipe_keys", "resolve_config_path",
           "resume_keys"]
