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

Sections read like mappings too (``cfg["stage1"]["lr"]``), so code and notebooks written against
the earlier dict config keep working; :meth:`Section.to_dict` is the plain YAML form.
"""
from __future__ import annotations

import copy
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Union

import yaml

from ._errors import OTReweightError, check_choice
from .utils import load_yaml, parse_assignment

# Field metadata: RECIPE = copied between comparison variants; RESUME = a checkpoint must agree;
# RUN = set by the run for every stage (seed, thresholds), not a key of a stage's YAML.
RECIPE = {"recipe": True, "resume": True}
RESUME = {"resume": True}
RUN = {"run": True}
RUN_RESUME = {"run": True, "resume": True}

TRAINABLE = ("all", "classifier")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "linear")
SELECT_METRICS = ("accuracy", "balanced_accuracy", "gmean")
AMP_MODES = ("auto", "bf16", "none")
LR_SCALINGS = ("none", "linear", "sqrt")
PROFILES = ("exp", "step", "given")
STARTS = ("stage1", "scratch")
LOGGERS = ("tensorboard",)


# ----------------------------------------------------------------------------- type checks
def _type_name(hint) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return f"a list of {_type_name(args[0])[2:]}s" if args else "a list"
    if origin is list:
        inner = args[0] if args else None
        return f"a list of {inner.__name__} mappings" if is_dataclass(inner) else "a list"
    if origin is dict or hint is dict or is_dataclass(hint):
        return "a mapping"
    return getattr(hint, "__name__", str(hint))


def _fail(key: str, value, hint) -> OTReweightError:
    what = "a mapping" if isinstance(value, dict) else ("a list" if isinstance(value, list) else repr(value))
    return OTReweightError(f"{key} must be {_type_name(hint)}, got {what}")


def coerce(value, hint, key: str):
    """``value`` checked against the type ``hint`` (integral floats become ints, a list of
    numbers a tuple); a one-line :class:`OTReweightError` naming ``key`` otherwise."""
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except OTReweightError:
                pass
        raise _fail(key, value, hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _fail(key, value, hint)
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(key, value, hint)
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value  # ints stay ints (as written), both are numbers
        raise _fail(key, value, hint)
    if hint is str:
        if isinstance(value, str):
            return value
        raise _fail(key, value, hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, hint)
        return tuple(coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _fail(key, value, hint)
        inner = args[0]
        if is_dataclass(inner):
            return [v if isinstance(v, inner) else build(inner, v, f"{key}.{i}") for i, v in enumerate(value)]
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _fail(key, value, hint)
        return dict(value)
    if is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, key)
    return value


def yaml_fields(cls) -> list:
    """The fields of a config dataclass that are keys of its YAML section."""
    return [f for f in fields(cls) if not f.metadata.get("run")]


def build(cls, data, key: str = ""):
    """An instance of the config dataclass ``cls`` from a mapping, every value type-checked."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _fail(key or cls.__name__, data, cls)
    known = {f.name: f for f in yaml_fields(cls)}
    unknown = [k for k in data if k not in known]
    if unknown:
        where = f"{key}." if key else ""
        raise OTReweightError(
            f"unknown config key {where + str(unknown[0])!r}; known keys here: {', '.join(known)}"
        )
    hints = typing.get_type_hints(cls)
    kw = {name: coerce(v, hints[name], f"{key}.{name}" if key else name) for name, v in data.items()}
    return cls(**kw)


class Section:
    """Mapping-style access to a config dataclass, and its plain YAML form."""

    def __getitem__(self, key: str):
        if key not in self:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value) -> None:
        if key not in self:
            raise KeyError(key)
        setattr(self, key, value)

    def __contains__(self, key) -> bool:
        return key in {f.name for f in yaml_fields(type(self))}

    def get(self, key: str, default=None):
        return self[key] if key in self else default

    def keys(self) -> list[str]:
        return [f.name for f in yaml_fields(type(self))]

    def to_dict(self) -> dict:
        """The section as plain YAML-ready values (tuples become lists; nested sections dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in yaml_fields(type(self))}

    def copy(self):
        return copy.deepcopy(self)

    def __eq__(self, other) -> bool:
        """Equal to the same section with equal fields, or to its plain mapping (a loaded YAML)."""
        if isinstance(other, dict):
            return self.to_dict() == _plain(other)
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self))

    __hash__ = None


def _plain(v):
    if isinstance(v, Section):
        return v.to_dict()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _check_fields(obj, prefix: str = "") -> None:
    """Type-check every field of a dataclass instance in place (for objects built in Python)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        object.__setattr__(obj, f.name, coerce(getattr(obj, f.name), hints[f.name], prefix + f.name))


def check_progress(value) -> None:
    """``progress`` is true, false or ``"auto"`` (a bar when stderr is a terminal)."""
    if value not in (True, False, "auto"):
        raise OTReweightError(f"progress must be true, false or auto, got {value!r}")


def check_loggers(value) -> tuple[str, ...]:
    """``log``: a logger name or a list of them, as a tuple; a missing package is refused in one line."""
    names = (value,) if isinstance(value, str) else tuple(value)
    for name in names:
        check_choice("logger (config key log)", name, LOGGERS)
        if name == "tensorboard":
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise OTReweightError("log: tensorboard needs the tensorboard package; "
                                      "pip install 'otreweight[tensorboard]' or remove log")
    return names


# ----------------------------------------------------------------------------- the sections
@dataclass(eq=False)
class FitConfig(Section):
    """Hyper-parameters of one training run (one stage); the one definition of the stage fields.

    The learning rate follows ``lr * factor(epoch)``: linear warm-up ``(e+1)/warmup_epochs`` for
    the first ``warmup_epochs``, then

    * ``schedule="step"``: ``lr_factors[i]`` from epoch ``milestones[i]`` on (absolute multipliers,
      e.g. ``milestones=(160, 180), lr_factors=(0.01, 1e-4)``); milestones below 1 are fractions of
      ``epochs`` (``(0.8, 0.9)`` is 160 and 180 of 200 epochs, and scales with a budget);
    * ``schedule="cosine"``: ``(1 + cos(pi t)) / 2`` with ``t = (e - warmup) / (epochs - warmup)``.
    * ``schedule="linear"``: ``1 - t`` (the transformers fine-tuning schedule, stepped per epoch).

    ``optimizer`` is SGD (``momentum``, ``nesterov``) or AdamW (``weight_decay`` decoupled).
    """

    epochs: int = field(default=30, metadata=RECIPE)
    """Training epochs of the stage (0: the stage trains nothing)."""
    batch_size: int = field(default=128, metadata=RECIPE)
    """Training examples per step (per process under torchrun)."""
    optimizer: str = field(default="sgd", metadata=RECIPE)
    """sgd (momentum, nesterov) or adamw (decoupled weight_decay)."""
    lr: float = field(default=0.1, metadata=RECIPE)
    """Base learning rate, multiplied by the schedule's factor each epoch."""
    momentum: float = field(default=0.9, metadata=RECIPE)
    """SGD momentum."""
    nesterov: bool = field(default=False, metadata=RECIPE)
    """Nesterov momentum for SGD."""
    weight_decay: float = field(default=5e-4, metadata=RECIPE)
    """Weight decay (L2 for SGD, decoupled for AdamW)."""
    schedule: str = field(default="step", metadata=RECIPE)
    """Learning-rate schedule after the warm-up: step (milestones), cosine or linear decay."""
    warmup_epochs: int = field(default=0, metadata=RECIPE)
    """Epochs of linear learning-rate warm-up at the start."""
    milestones: tuple[float, ...] = field(default=(), metadata=RECIPE)
    """Epochs (or fractions of epochs below 1) where the step schedule changes the factor."""
    lr_factors: tuple[float, ...] = field(default=(), metadata=RECIPE)
    """Learning-rate factor from each milestone on (absolute, e.g. [0.01, 0.0001])."""
    accumulate_steps: int = field(default=1, metadata=RECIPE)
    """Micro-batches per optimiser step (gradient accumulation): the effective batch is processes x batch_size x accumulate_steps."""
    lr_scaling: str = field(default="none", metadata=RECIPE)
    """none, linear or sqrt: scale lr from reference_batch to the effective batch (resolved into the saved config)."""
    reference_batch: int = field(default=0, metadata=RECIPE)
    """The effective batch lr was set for, with lr_scaling linear or sqrt (0: no scaling)."""
    trainable: str = field(default="all", metadata=RESUME)
    """all: the whole network trains; classifier: the backbone is frozen, only the linear classifier trains."""
    select_metric: str = field(default="balanced_accuracy", metadata=RESUME)
    """Validation metric that selects the best epoch (the saved model)."""
    eval_batch_size: int = 256  # ResNet-32 on 2 CPU cores: 433 images/s at 256, 268 at 1024
    """Examples per forward pass when evaluating or computing features."""
    channels_last: bool | None = None  # None: on when the modality asks for it (images)
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, off elsewhere; "bf16" (emulated, ~6x slower, on CPUs without bf16 instructions); "none"
    compile: bool = False  # torch.compile the backbone's training forward
    # Set by the run for every stage:
    seed: int = field(default=0, metadata=RUN_RESUME)
    progress: bool | str = field(default="auto", metadata=RUN)
    many_threshold: int = field(default=100, metadata=RUN)
    few_threshold: int = field(default=20, metadata=RUN)
    # several processes (torchrun), whole-network stages: batch norm over the global batch
    # (torch.nn.SyncBatchNorm, CUDA only) instead of each process's part of it
    sync_batchnorm: bool = field(default=False, metadata=RUN_RESUME)

    def validate(self, prefix: str = "") -> "FitConfig":
        """Types first (one line per wrong value), then ranges and choices."""
        _check_fields(self, prefix)
        check_choice("trainable part", self.trainable, TRAINABLE)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("lr schedule", self.schedule, SCHEDULES)
        if self.epochs < 0:
            raise OTReweightError(f"epochs must be an integer >= 0, got {self.epochs}")
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise OTReweightError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise OTReweightError(f"warmup_epochs must be an integer >= 0, got {self.warmup_epochs}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise OTReweightError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.lr <= 0:
            raise OTReweightError(f"lr must be > 0, got {self.lr}")
        if len(self.milestones) != len(self.lr_factors):
            raise OTReweightError("milestones and lr_factors must have the same length")
        if self.accumulate_steps < 1:
            raise OTReweightError(f"accumulate_steps must be an integer >= 1, got {self.accumulate_steps}")
        check_choice("lr scaling", self.lr_scaling, LR_SCALINGS)
        if self.reference_batch < 0:
            raise OTReweightError(f"reference_batch must be an integer >= 0, got {self.reference_batch}")
        if self.lr_scaling != "none" and self.reference_batch == 0:
            raise OTReweightError(f"lr_scaling: {self.lr_scaling} scales lr from the batch it was set for; give "
                                  f"{prefix}reference_batch (e.g. 256)")
        check_choice("selection metric", self.select_metric, SELECT_METRICS)
        check_choice("amp mode", self.amp, AMP_MODES)
        check_progress(self.progress)
        return self

    def effective_batch(self, world_size: int = 1) -> int:
        """Examples per optimiser step: processes x ``batch_size`` x ``accumulate_steps``."""
        return int(world_size) * self.batch_size * self.accumulate_steps

    def scaled(self, world_size: int = 1) -> "FitConfig":
        """This stage with ``lr_scaling`` resolved: ``lr`` times ``effective / reference_batch``
        (``linear``) or its square root (``sqrt``), ``lr_scaling`` then ``none``; unchanged when it
        is ``none`` already (so resolving twice changes nothing)."""
        if self.lr_scaling == "none":
            return self
        ratio = self.effective_batch(world_size) / self.reference_batch
        factor = ratio if self.lr_scaling == "linear" else math.sqrt(ratio)
        return replace(self, lr=self.lr * factor, lr_scaling="none")

    def batch_line(self, name: str, world_size: int = 1, base: "FitConfig | None" = None) -> str:
        """One line for the log and the saved config: the effective batch and the learning rate used."""
        line = (f"{name}: effective batch {world_size} process(es) x {self.batch_size} x {self.accumulate_steps} "
                f"accumulation = {self.effective_batch(world_size)}, lr {self.lr:g}")
        if base is not None and base.lr_scaling != "none":
            line += f" ({base.lr_scaling} scaling of lr {base.lr:g} set for batch {base.reference_batch})"
        return line

    def milestone_epochs(self) -> list[int]:
        """Milestones in epochs; a milestone below 1 is a fraction of ``epochs`` (0.8 of 200 = 160)."""
        return [int(round(m * self.epochs)) if m < 1 else int(m) for m in self.milestones]

    def lr_factor(self, epoch: int) -> float:
        """The multiplier of ``lr`` in ``epoch`` (0-based)."""
        if epoch < self.warmup_epochs:
            return (epoch + 1) / self.warmup_epochs
        if self.schedule == "cosine":
            span = max(1, self.epochs - self.warmup_epochs)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (epoch - self.warmup_epochs) / span)))
        if self.schedule == "linear":  # linear decay after the warm-up, the transformers fine-tuning schedule
            span = max(1, self.epochs - self.warmup_epochs)
            return max(0.0, 1.0 - (epoch - self.warmup_epochs) / span)
        factor = 1.0
        for m, f in zip(self.milestone_epochs(), self.lr_factors):
            if epoch >= m:
                factor = f
        return factor

    def to_dict(self) -> dict:
        """Every field, the run-level ones included (what a checkpoint stores)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def fit_config(self, seed: int, progress: bool | str, many_threshold: int, few_threshold: int,
                   sync_batchnorm: bool = False) -> "FitConfig":
        """The loop's :class:`FitConfig` of this stage, with the run-level fields filled in."""
        kw = {f.name: getattr(self, f.name) for f in fields(FitConfig) if not f.metadata.get("run")}
        return FitConfig(**kw, seed=seed, progress=progress, many_threshold=many_threshold,
                         few_threshold=few_threshold, sync_batchnorm=sync_batchnorm)


def recipe_keys() -> tuple[str, ...]:
    """The stage fields a comparison copies from one variant's recipe to another."""
    return tuple(f.name for f in fields(FitConfig) if f.metadata.get("recipe"))


def resume_keys() -> tuple[str, ...]:
    """The stage fields a checkpoint must agree on before ``--resume`` continues it."""
    return tuple(f.name for f in fields(FitConfig) if f.metadata.get("resume"))


class _StageSection:
    """A stage as a YAML section: ``to_dict`` without the run-level fields (seed, thresholds), which
    the run fills in (:meth:`FitConfig.fit_config`)."""

    def to_dict(self) -> dict:
        return Section.to_dict(self)


@dataclass(eq=False)
class Stage1Config(_StageSection, FitConfig):
    """Stage 1: plain cross-entropy on the whole network (LDAM-DRW's CIFAR recipe by default)."""

    epochs: int = field(default=200, metadata=RECIPE)
    weight_decay: float = field(default=2e-4, metadata=RECIPE)
    warmup_epochs: int = field(default=5, metadata=RECIPE)
    milestones: tuple[float, ...] = field(default=(0.8, 0.9), metadata=RECIPE)
    lr_factors: tuple[float, ...] = field(default=(0.01, 0.0001), metadata=RECIPE)
    checkpoint: str | None = None  # a stage's model.json (or folder) to load instead of training ({seed} is filled in by compare)
    meta_in_train: bool = False
    """Add the meta set to stage 1's training data."""


@dataclass(eq=False)
class Stage2Config(_StageSection, FitConfig):
    """One stage-2 variant: a registered ``method`` with its ``options``, from stage 1 or scratch."""

    name: str = "ot_classifier"
    """Name of the variant: its folder is stage2_<name>."""
    method: str = "ot"
    """A registered method (reference/registries) or a named OT variant."""
    options: dict = field(default_factory=dict)
    """Options of the method (see its entry in the registries page)."""
    epochs: int = field(default=90, metadata=RECIPE)
    batch_size: int = field(default=16, metadata=RECIPE)
    lr: float = field(default=2e-5, metadata=RECIPE)
    nesterov: bool = field(default=True, metadata=RECIPE)
    trainable: str = field(default="classifier", metadata=RESUME)
    meta_in_train: bool = False
    """Add the meta set to the training data of a method that does not use it."""
    start: str = "stage1"
    """stage1: start from the stage-1 model; scratch: a freshly initialised model."""


@dataclass(eq=False)
class DataConfig(Section):
    """Where the data come from, how the long-tailed split is drawn and how inputs are prepared."""

    source: str = "cifar10"
    """A registered source (cifar10, text, image_list, ...) or a path: a folder, archive, .npz or text folder."""
    root: str = "data"
    """Folder of the data (CIFAR archives, MNIST IDX files, point clouds, the image root)."""
    download: bool = True
    """Allow downloading a missing CIFAR archive."""
    cache_dir: str | None = None
    """Where decoded arrays, tokens and features are cached (null: the default cache folder)."""
    imbalance_factor: float = 100
    """IF = largest / smallest training class of the long-tailed profile."""
    profile: str = "exp"
    """Long-tail profile: exp (exponential), step (half the classes rare) or given (keep the data's own counts)."""
    allow_cut: bool = False  # exp / step may cut a pool more imbalanced than imbalance_factor (else: profile given)
    n_meta_per_class: int = 10
    """Balanced meta examples per class, drawn before the long tail (OT's targets)."""
    n_val_per_class: int = 20
    """Balanced validation examples per class, drawn before the long tail (model selection)."""
    n_max: int | None = None
    """Training examples of the largest class (null: what the pool gives after meta and validation)."""
    class_order: str | list | None = None  # profile rank -> class: null = label order; "count" = largest pool first
    normalize: bool | str = True  # per-channel statistics of the training split; "imagenet": ImageNet's; false: none
    augment: str = "pad_crop_flip"  # random_resized_crop: ImageNet-style, per example in the loader workers
    """Training augmentation: none, pad_crop_flip (CIFAR, on the device), point_cloud, or random_resized_crop (ImageNet-style, in the loader workers)."""
    pad: int = 4
    """Padding of the pad-crop-flip augmentation, in pixels."""
    flip: bool = True
    """Random horizontal flips in the image augmentations."""
    # large images (torchvision transforms v2 in the workers): evaluation resizes the shorter side to
    # resize_size (null: crop_size / 0.875, 256 for 224) and centre-crops crop_size; training with
    # augment random_resized_crop takes RandomResizedCrop(crop_size, crop_scale) + flip (+ colour jitter)
    crop_size: int | None = None  # null: no resize / crop (224 when augment is random_resized_crop)
    """Side of the square crop of ImageNet-style transforms (null: no resize or crop; 224 with random_resized_crop)."""
    resize_size: int | None = None
    """Shorter side before the evaluation centre crop (null: crop_size / 0.875)."""
    crop_scale: tuple[float, ...] = (0.08, 1.0)
    """[min, max] area fraction of the random-resized crops."""
    color_jitter: float = 0.0
    """Strength of the colour jitter of random_resized_crop (0: none)."""
    many_threshold: int = 100
    """Classes with more training examples than this are 'many' in the metrics."""
    few_threshold: int = 20
    """Classes with fewer training examples than this are 'few' in the metrics."""
    modality_options: dict = field(default_factory=dict)  # e.g. tokens: max_length, vocab_size, tokenizer
    image_size: tuple[int, ...] | None = None  # [H, W]: resize every image of a folder source (bilinear)
    source_options: dict = field(default_factory=dict)  # passed to the source, e.g. n_points for point clouds
    loader: str = "auto"  # memory: on the device; stream: DataLoader workers; auto: memory if it fits
    num_workers: int | None = None  # stream path: worker processes (None: the usable cores, at most 8)
    bucket_by_length: bool = False  # sequences (tokens): training batches of documents of similar length
    split_file: str | None = None  # a split written by `otreweight split`: used instead of drawing (checked against the data)

    def validate(self) -> "DataConfig":
        _check_fields(self, "data.")
        check_choice("augmentation", self.augment, _augment_names())
        check_choice("data loader", self.loader, ("auto", "memory", "stream"))
        if isinstance(self.normalize, str) and self.normalize not in ("imagenet", "train"):
            raise OTReweightError(f"data.normalize must be true, false or imagenet, got {self.normalize!r}")
        if self.normalize == "train":
            object.__setattr__(self, "normalize", True)
        if self.augment == "random_resized_crop" and self.crop_size is None:
            object.__setattr__(self, "crop_size", 224)
        for name in ("crop_size", "resize_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise OTReweightError(f"data.{name} must be a positive integer or null, got {v}")
        if self.crop_size is not None and self.resize_size is not None and self.resize_size < self.crop_size:
            raise OTReweightError(f"data.resize_size ({self.resize_size}) is smaller than data.crop_size "
                                  f"({self.crop_size}); the centre crop must fit in the resized image")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise OTReweightError(f"data.crop_scale must be [min, max] with 0 < min <= max <= 1, got "
                                  f"{list(self.crop_scale)}")
        if not 0 <= self.color_jitter <= 1:
            raise OTReweightError(f"data.color_jitter must be in [0, 1], got {self.color_jitter}")
        if self.augment == "random_resized_crop" and self.loader == "memory":
            raise OTReweightError("data.augment: random_resized_crop transforms each image in the loader workers; "
                                  "use data.loader: stream or auto")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise OTReweightError(f"data.image_size must be [H, W] with two positive integers, got {list(self.image_size)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise OTReweightError(f"data.num_workers must be an integer >= 0 or null, got {self.num_workers}")
        check_choice("long-tail profile", self.profile, PROFILES)
        for name in ("n_meta_per_class", "n_val_per_class", "pad", "many_threshold", "few_threshold"):
            if getattr(self, name) < 0:
                raise OTReweightError(f"data.{name} must be an integer >= 0, got {getattr(self, name)}")
        if isinstance(self.class_order, str) and self.class_order != "count":
            raise OTReweightError(f"data.class_order must be null, count or a list of class indices, got "
                                  f"{self.class_order!r}")
        if self.n_max is not None and self.n_max < 1:
            raise OTReweightError(f"data.n_max must be an integer >= 1 or null, got {self.n_max}")
        return self


def _augment_names() -> list[str]:
    """``none`` and the ``data.augment`` values of the modalities registered when a config is checked
    (a plug-in's included; the config module itself imports nothing of the data package)."""
    from .data.modalities import augment_names

    return augment_names()


@dataclass(eq=False)
class ModelConfig(Section):
    """A registered model (:data:`otreweight.models.MODELS`) and its options."""

    name: str = "resnet32"
    """A registered model (resnet32, mlp, text_bag, pointnet, hf/<name>, timm/<name>, ...)."""
    options: dict = field(default_factory=dict)
    """Options of the model (see its entry in the registries page)."""
    # shorthand for options.pretrained (timm/<name>, hf/<name>): folded into options when set
    pretrained: bool | None = None


@dataclass(eq=False)
class RunConfig(Section):
    """A whole run: data, model, stage 1 and the stage-2 variants."""

    name: str = "run"
    """Name of the run (in reports and tables)."""
    output_dir: str = "runs/run"
    """Folder of the run's files (config, split, stages, report)."""
    seed: int = 0
    """Seed of the long-tailed split and of training."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    threads: int | None = None
    """torch CPU threads (null: torch's default)."""
    progress: bool | str = "auto"
    """Progress bars: auto (only when stderr is a terminal; a plain line per epoch otherwise), true or false."""
    log: tuple[str, ...] | str = ()
    """Per-epoch loggers: tensorboard (or a list of names); events under <output_dir>/tensorboard/<stage>."""
    checkpoint_every: int = 1  # epochs between checkpoints (and at each stage's end); 0: none, no --resume
    # frozen-backbone features on disk for other runs: auto = <cache>/features when stage 1 trains only
    # the classifier (a frozen pretrained backbone, the same in every run) or is loaded from a
    # checkpoint; off; or a folder
    feature_store: str | bool = "auto"  # YAML's off / on are booleans: false = "off", true = "auto"
    """Frozen-backbone features kept on disk for the next run and seed: auto (when the backbone is frozen or loaded), off, or a folder."""
    # the stored features' dtype: float32 (exact) or float16 (half the disk / memory; rounded in every run)
    feature_dtype: str = "float32"
    # under torchrun: whole-network stages normalise batch norm over the global batch
    # (torch.nn.SyncBatchNorm; CUDA devices only, refused on the CPU); one process: no effect
    sync_batchnorm: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: list[Stage2Config] = field(default_factory=list)

    def batch_scaled(self, world_size: int = 1) -> "RunConfig":
        """A copy with every stage's ``lr_scaling`` resolved for ``world_size`` processes
        (:meth:`FitConfig.scaled`): what a run saves in its ``config.yaml`` and trains with."""
        out = self.copy()
        out.stage1 = self.stage1.scaled(world_size)
        out.stage2 = [v.scaled(world_size) for v in self.stage2]
        return out

    def stage_fit(self, stage: FitConfig, seed: int | None = None) -> FitConfig:
        """The loop's config of ``stage`` in this run (its seed, progress bar and thresholds)."""
        return stage.fit_config(self.seed if seed is None else seed, self.progress, self.data.many_threshold,
                                self.data.few_threshold, self.sync_batchnorm)

    def validate(self) -> "RunConfig":
        """Check every type, name and number early, before any data is loaded or any epoch is run."""
        from .methods import create_method
        from .models import MODELS

        _check_fields(self)
        check_progress(self.progress)
        object.__setattr__(self, "log", check_loggers(self.log))
        if isinstance(self.feature_store, bool):
            object.__setattr__(self, "feature_store", "auto" if self.feature_store else "off")
        check_choice("feature dtype", self.feature_dtype, ("float32", "float16"))
        if self.checkpoint_every < 0:
            raise OTReweightError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every}")
        if self.threads is not None and self.threads < 1:
            raise OTReweightError(f"threads must be an integer >= 1 or null, got {self.threads}")
        if not 0 <= self.seed < 2**63:
            raise OTReweightError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed}")
        self.data.validate()
        factory = MODELS.get(self.model.name)
        if self.model.pretrained is not None:
            import inspect

            if "pretrained" not in inspect.signature(factory).parameters:
                raise OTReweightError(f"model {self.model.name!r} has no pretrained weights to load; remove "
                                      "model.pretrained (timm/<name> and hf/<name> models have them)")
            opts = dict(self.model.options or {})
            if opts.get("pretrained", self.model.pretrained) != self.model.pretrained:
                raise OTReweightError("model.pretrained and model.options.pretrained disagree; set one of them")
            opts["pretrained"] = self.model.pretrained
            object.__setattr__(self.model, "options", opts)
            object.__setattr__(self.model, "pretrained", None)
        names = [v.name for v in self.stage2]
        if len(set(names)) != len(names):
            raise OTReweightError(f"stage-2 variant names must be unique, got {names}")
        self.stage_fit(self.stage1).validate("stage1.")
        for i, v in enumerate(self.stage2):
            _check_fields(v, f"stage2.{i}.")
            create_method(v.method, **(v.options or {}))
            check_choice(f"start of stage-2 variant {v.name!r}", v.start, STARTS)
            self.stage_fit(v).validate(f"stage2.{i}.")
        return self


# ----------------------------------------------------------------------------- loading
def config_dir() -> Path:
    """The folder of the ready configs shipped with the package."""
    return Path(__file__).parent / "configs"


def resolve_config_path(name, relative_to: Path | None = None) -> Path:
    """A config path as given (or relative to ``relative_to``), or a shipped config's name."""
    p = Path(name)
    candidates = [p] if p.is_absolute() else ([relative_to / p] if relative_to else []) + [p]
    for c in candidates:
        if c.is_file():
            return c
    shipped = config_dir() / (str(name) if str(name).endswith(".yaml") else f"{name}.yaml")
    if shipped.is_file():
        return shipped
    alt = Path("configs") / p.name
    if alt.is_file():
        return alt
    names = sorted(q.stem for q in config_dir().glob("*.yaml"))
    raise OTReweightError(f"config {str(name)!r} not found; give a path or one of: {', '.join(names)}")


def read_config_file(path, _seen: tuple = ()) -> dict:
    """The mapping of a YAML config file with its ``base:`` chain merged in (the file wins)."""
    p = Path(path)
    if not p.exists():
        raise OTReweightError(f"config file {p} does not exist; see configs/ for examples")
    key = str(p.resolve())
    if key in _seen:
        raise OTReweightError(f"config file {p} names itself through its base: chain; remove the loop")
    try:
        user = load_yaml(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise OTReweightError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise OTReweightError(f"config file {p} is not UTF-8 text") from None
    if not isinstance(user, dict):
        raise OTReweightError(f"config file {p} must hold a mapping at the top level")
    base = user.pop("base", None)
    if base is None:
        return user
    if not isinstance(base, str):
        raise OTReweightError(f"base in {p} must be a path or a shipped config name, got {base!r}")
    parent = read_config_file(resolve_config_path(base, p.parent), _seen + (key,))
    return merge(parent, user)


def merge(base: dict, override: dict) -> dict:
    """``override`` on top of ``base``: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        if isinstance(out.get(k), dict) and isinstance(v, dict) and k != "options":
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def set_dotted(cfg: dict, dotted: str, value) -> None:
    """Set ``a.b.c`` (``*`` or an index inside lists) in a nested mapping; unknown keys refused."""
    parts = dotted.split(".")
    targets = [cfg]
    for i, part in enumerate(parts[:-1]):
        nxt = []
        for t in targets:
            if isinstance(t, list):
                if part == "*":
                    nxt.extend(t)
                    continue
                if not part.isdigit() or int(part) >= len(t):
                    raise OTReweightError(f"--set {dotted}: {part!r} is not an index of a list of {len(t)}")
                nxt.append(t[int(part)])
            elif isinstance(t, dict):
                if part not in t:
                    raise OTReweightError(f"--set {dotted}: unknown key {'.'.join(parts[: i + 1])!r}")
                if t[part] is None and part == "options":
                    t[part] = {}
                nxt.append(t[part])
            else:
                raise OTReweightError(f"--set {dotted}: {'.'.join(parts[:i])!r} holds a value, not a section")
        targets = nxt
    for t in targets:
        if isinstance(t, list):
            raise OTReweightError(f"--set {dotted}: give a list index or * before the last key")
        if not isinstance(t, dict):
            raise OTReweightError(f"--set {dotted}: {'.'.join(parts[:-1])!r} holds a value, not a section")
        if parts[-1] not in t and not (len(parts) >= 2 and parts[-2] in ("options", "modality_options", "source_options")):
            raise OTReweightError(f"--set {dotted}: unknown key {dotted!r}")
        t[parts[-1]] = value


def _full_dict(user: dict) -> dict:
    """Defaults with the user's mapping on top (stage-2 variants filled from their defaults)."""
    user = dict(user)
    stage2 = user.pop("stage2", [])
    if stage2 is None:
        stage2 = []
    if not isinstance(stage2, list):
        raise OTReweightError("config key 'stage2' must be a list of stage-2 variants")
    defaults = RunConfig().to_dict()
    for k, v in user.items():
        if k not in defaults:
            raise OTReweightError(f"unknown config key {k!r}; known keys here: {', '.join(defaults)}")
        if isinstance(defaults[k], dict) and k != "options":
            if not isinstance(v, dict):
                raise _fail(k, v, dict)
            for sub in v:
                if sub not in defaults[k]:
                    raise OTReweightError(
                        f"unknown config key {k + '.' + str(sub)!r}; known keys here: {', '.join(defaults[k])}"
                    )
    out = merge(defaults, user)
    s2_default = Stage2Config().to_dict()
    variants = []
    for i, v in enumerate(stage2):
        if v is not None and not isinstance(v, dict):
            raise _fail(f"stage2.{i}", v, dict)
        unknown = [k for k in (v or {}) if k not in s2_default]
        if unknown:
            raise OTReweightError(
                f"unknown config key 'stage2[{i}].{unknown[0]}'; known keys here: {', '.join(s2_default)}"
            )
        variants.append(merge(s2_default, v or {}))
    out["stage2"] = variants
    return out


def load_config(path=None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file at ``path`` (with its ``base:`` chain), then ``KEY=VALUE``
    overrides (values parsed as YAML); type-checked and validated."""
    user = read_config_file(path) if path is not None else {}
    raw = _full_dict(user)
    for item in overrides or []:
        key, value = parse_assignment(item, "--set")
        set_dotted(raw, key, value)
        if key == "stage2" and isinstance(raw["stage2"], list):  # variants given whole: fill their defaults
            raw["stage2"] = _full_dict({"stage2": raw["stage2"]})["stage2"]
    if not isinstance(raw.get("stage2"), list):
        raise _fail("stage2", raw.get("stage2"), list[Stage2Config])
    return build(RunConfig, raw).validate()


def as_run_config(cfg) -> RunConfig:
    """A :class:`RunConfig` from itself or from a plain mapping (type-checked and validated)."""
    if isinstance(cfg, RunConfig):  # rebuilt: a caller may have put plain mappings into it
        cfg = _plain(cfg)
    if isinstance(cfg, dict):
        return build(RunConfig, _full_dict(cfg)).validate()
    raise OTReweightError(f"a run config must be a RunConfig or a mapping, got {type(cfg).__name__}")


class _ConfigDumper(yaml.SafeDumper):
    """PyYAML's safe dumper writing a config section as its plain mapping (a subclass: PyYAML's
    own ``SafeDumper``, and every other user's ``yaml.safe_dump``, stay untouched)."""


_ConfigDumper.add_multi_representer(Section, lambda dumper, v: dumper.represent_dict(v.to_dict()))


def dump_config(cfg) -> str:
    """The resolved config (or any of its sections, or a mapping holding them) as YAML: what is
    saved as ``config.yaml`` beside a run."""
    return yaml.dump(cfg.to_dict() if isinstance(cfg, Section) else cfg, Dumper=_ConfigDumper, sort_keys=False)


__all__ = ["DataConfig", "FitConfig", "ModelConfig", "RunConfig", "Stage1Config", "Stage2Config", "as_run_config",
           "config_dir", "dump_config", "load_config", "read_config_file", "recipe_keys", "resolve_config_path",
           "resume_keys"]
