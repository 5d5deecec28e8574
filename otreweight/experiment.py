"""The public entry points of a config-driven run (the code lives in :mod:`otreweight.run`)."""
from .config import RunConfig, load_config, resolve_config_path
from .run import evaluate_checkpoint, export_split, load_model, run_experiment, verify_data

__all__ = ["RunConfig", "evaluate_checkpoint", "export_split", "load_config", "load_model", "resolve_config_path",
           "run_experiment", "verify_data"]
