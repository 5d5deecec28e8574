"""The sections of a run's config: :class:`FitConfig` (a training stage), the stage sections,
:class:`DataConfig`, :class:`ModelConfig` and :class:`RunConfig`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from .._errors import OTReweightError, check_choice, is_number
from .fields import (AMP_MODES, LR_SCALINGS, OPTIMIZERS, PROFILES, RECIPE, RESUME, RUN, RUN_RESUME, SCHEDULES,
                     SELECT_METRICS, STARTS, TRAINABLE, Section, _check_fields, _plain, check_loggers, check_progress)

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
    amp: str = "auto"  # "auto": bf16 autocast on CUDA, off elsewhere; "bf16" (about 2x faster per step on CPUs with AMX / AVX-512 BF16, ~6x slower where emulated); "none"
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
            if not is_number(value, low=0):
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
    from ..data.modalities import augment_names

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
    watch_test: bool = False
    """Score the test split after every epoch too, into metrics.jsonl (reported only: final.json's test_selected is the best epoch on test, what papers report; never used for selection)."""
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
        from ..methods import create_method
        from ..models import MODELS

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


