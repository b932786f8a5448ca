"""The run configuration: one TOML file, parsed once into typed, frozen objects and validated
before any work starts. Stages receive their own section, never the raw dict."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import tomli_w
import tomllib
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import StylepressError

BUILTIN_STYLES = ("sketch", "watercolor", "oil", "cartoon")

# TOML already types its values: refuse "10" for a number and true for an integer.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths resolve against the config file's folder."""
    if value is None:
        return None
    base = (info.context or {}).get("base", Path.cwd())
    return (base / value.expanduser()).resolve()


def _known_styles(styles: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
    """Built-in style names, or style folders resolved against the config's folder."""
    resolved = []
    for style in styles:
        if style in BUILTIN_STYLES:
            resolved.append(style)
            continue
        folder = _resolve(Path(style), info)
        if not folder.is_dir():
            raise ValueError(
                f"{style!r} is neither a built-in style ({', '.join(BUILTIN_STYLES)}) nor a folder"
            )
        resolved.append(str(folder))
    if len(set(resolved)) != len(resolved):
        raise ValueError("a style is listed twice")
    return tuple(resolved)


class DataConfig(_Section):
    photos: Path
    val_photos: Path | None = None
    styles: tuple[Str, ...] = Field(("sketch",), min_length=1, max_length=16)
    resolution: Int = Field(256, ge=32, le=4096, multiple_of=4)
    min_size: Int = Field(64, ge=8)  # photos with a shorter side are skipped with a warning

    _resolve_paths = field_validator("photos", "val_photos")(_resolve)

    @field_validator("photos", "val_photos")
    @classmethod
    def _is_folder(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"folder not found: {value}")
        return value

    _styles = field_validator("styles")(_known_styles)


class ModelConfig(_Section):
    # "resnet" (trained here), or a published family imported from `weights` instead of trained:
    # cyclegan-resnet | pix2pix-unet | animegan2 | fast-neural-style | module:PKG.MOD:FACTORY
    arch: Str = Field("resnet", pattern=r"^(resnet|cyclegan-resnet|pix2pix-unet|animegan2|fast-neural-style|"
                                        r"module:[\w.]+:\w+)$")
    weights: Path | None = None  # the checkpoint to import (safetensors, or a weights-only state dict)
    options: dict[str, int | float | bool | str] = {}  # the family's constructor options
    pretrained: Str | None = None  # a bundled teacher (`stylepress models`) instead of training one
    ngf: Int = Field(64, ge=1, le=1024)
    n_blocks: Int = Field(9, ge=0, le=64)
    norm: Literal["instance", "batch", "none"] = "instance"
    residual: Bool = False  # output = clamp(photo + G(photo)): learn the change, not the whole image
    # With residual: the photo passes through a per-style scale and shift of its luma and chroma
    # (models.layers.ColourSkip), so a style can drop or change the photo's colours (a grey sketch).
    colour_skip: Bool = False
    # With colour_skip: the skip also splits the photo into a blur and its fine detail, each scaled
    # per style, so a style can drop the photo's texture (oil's smooth paint; ColourSkip's `detail`).
    detail_skip: Bool = False
    # PatchGAN discriminator
    ndf: Int = Field(64, ge=1, le=1024)
    d_layers: Int = Field(3, ge=1, le=6)
    d_spectral_norm: Bool = False

    _resolve_weights = field_validator("weights")(_resolve)

    @field_validator("weights")
    @classmethod
    def _is_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @model_validator(mode="after")
    def _weights_iff_imported(self) -> ModelConfig:
        if (self.weights is None) != (self.arch == "resnet"):
            raise ValueError(f"arch {self.arch!r}: an imported arch needs model.weights, and only one takes it")
        if self.pretrained is not None:
            if self.weights is not None:
                raise ValueError("give model.pretrained or model.weights, not both")
            if _bundled(self.pretrained).kind != "teacher":
                raise ValueError(f"pretrained {self.pretrained!r} is a student: the run's teacher must be a teacher")
        if self.colour_skip and not self.residual:
            raise ValueError("model.colour_skip shapes the residual's skip path: it needs model.residual = true")
        if self.detail_skip and not self.colour_skip:
            raise ValueError("model.detail_skip splits the colour skip's photo: it needs model.colour_skip = true")
        return self


class TrainConfig(_Section):
    steps: Int = Field(2000, ge=1)
    batch_size: Int = Field(4, ge=1, le=1024)
    crop: Int = Field(0, ge=0, multiple_of=4)  # training crop size; 0 = data.resolution
    lr: Float = Field(2e-4, gt=0, le=1.0)
    beta1: Float = Field(0.5, ge=0, lt=1)
    beta2: Float = Field(0.999, ge=0, lt=1)
    lambda_style: Float = Field(10.0, ge=0)
    lambda_content: Float = Field(1.0, ge=0)
    lambda_adv: Float = Field(1.0, ge=0)
    gram_weight: Float = Field(1.0, ge=0)  # weight of the Gram term inside L_style
    gan_loss: Literal["lsgan", "hinge"] = "lsgan"
    decay_from: Float = Field(0.5, ge=0, le=1)  # linear LR decay to 0 over the last half of steps
    ema_decay: Float = Field(0.999, ge=0, lt=1)
    val_every: Int = Field(200, ge=1)
    val_images: Int = Field(0, ge=0)  # cap on val photos used per validation; 0 = all
    checkpoint_every: Int = Field(200, ge=1)
    patience: Int = Field(10, ge=0)  # validations without improvement before stopping; 0 = never
    log_every: Int = Field(10, ge=1)
    amp: Bool = True  # mixed precision on CUDA; ignored on CPU
    device: Str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")


class CompressConfig(_Section):
    # The student: the teacher pruned (torch-pruning), or a fresh mobile generator (depthwise-separable
    # blocks, resize + conv upsampling: every layer INT8-capable) as wide as the MACs target allows.
    student: Literal["pruned", "mobile"] = "pruned"
    # How much to prune: target_macs ("2.8G", at the serving resolution) or ratio (torch-pruning's
    # pruning_ratio, the fraction of channels removed; for a mobile student, MACs x (1 - ratio)^2).
    # Neither: ratio 0.5.
    target_macs: Str | None = Field(None, pattern=r"^\d+(\.\d+)?[KMGT]?$")
    ratio: Float | None = Field(None, gt=0, lt=1)
    importance: Literal["l1", "l2", "taylor"] = "l1"
    global_pruning: Bool = False
    iterative_steps: Int = Field(1, ge=1, le=100)
    round_to: Int = Field(8, ge=1, le=256)  # channel multiple, for fast kernels
    ignored: tuple[Str, ...] = ()  # layer names never pruned, e.g. "blocks.0.conv1.conv"
    distill_steps: Int = Field(2000, ge=0)
    batch_size: Int = Field(4, ge=1, le=1024)
    lr: Float = Field(2e-4, gt=0, le=1.0)
    lambda_l1: Float = Field(1.0, ge=0)  # output vs teacher output
    lambda_ssim: Float = Field(1.0, ge=0)  # 1 - SSIM(output, teacher output)
    # MSE of 1x1-adapted student features to the teacher's. Off by default: at 20x on the CycleGAN
    # protocol, weight 1 cost 3.5 dB (sketch) and 4 dB (oil) after 300 steps (docs/results.md, Compression).
    lambda_feat: Float = Field(0.0, ge=0)
    lambda_adv: Float = Field(0.0, ge=0)  # GAN term with the teacher's discriminator (0: off)
    ema_decay: Float = Field(0.999, ge=0, lt=1)
    val_every: Int = Field(200, ge=1)
    checkpoint_every: Int = Field(200, ge=1)
    log_every: Int = Field(10, ge=1)
    device: Str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$")

    @field_validator("ratio")
    @classmethod
    def _one_of(cls, ratio: float | None, info: ValidationInfo) -> float | None:
        if ratio is not None and info.data.get("target_macs") is not None:
            raise ValueError("give target_macs or ratio, not both")
        return ratio

    @property
    def target_macs_value(self) -> float | None:
        if self.target_macs is None:
            return None
        scale = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(self.target_macs[-1], 1)
        return float(self.target_macs.rstrip("KMGT")) * scale


class Int8Config(_Section):
    calibration: Path | None = None  # folder of portraits; default: the training photos
    samples: Int = Field(32, ge=1, le=4096)  # calibration images, through serving preprocessing
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    percentile: Float = Field(99.999, gt=90, le=100)  # for method = "percentile"
    min_psnr_db: Float = Field(35.0, ge=0)  # int8 vs fp32 on val portraits; below it, layers fall back
    min_ssim: Float = Field(0.98, ge=0, le=1)  # the same, for SSIM
    max_fallback: Int = Field(8, ge=0)  # most Conv/ConvTranspose layers kept in float
    val_images: Int = Field(8, ge=1)  # val portraits the PSNR/SSIM check runs on

    _resolve_paths = field_validator("calibration")(_resolve)


class TensorRTConfig(_Section):
    # The optimization profile: batch and square resolution (multiples of 4), min <= opt <= max.
    min_batch: Int = Field(1, ge=1)
    opt_batch: Int = Field(1, ge=1)
    max_batch: Int = Field(8, ge=1)
    min_resolution: Int = Field(128, ge=32, multiple_of=4)
    opt_resolution: Int | None = Field(None, ge=32, multiple_of=4)  # default: the serving resolution
    max_resolution: Int = Field(512, ge=32, multiple_of=4)
    workspace_mib: Int = Field(4096, ge=64)


class ExportConfig(_Section):
    opset: Int = Field(18, ge=17, le=20)  # TensorRT 10 and 11 parse opsets up to 20
    parity_tolerance: Float = Field(1e-4, gt=0)  # max |ONNX Runtime - PyTorch| on val portraits
    precisions: tuple[Literal["fp32", "fp16", "int8"], ...] = Field(("fp32", "fp16", "int8"), min_length=1)
    fp16_min_psnr_db: Float = Field(40.0, ge=0)  # fp16 vs fp32 on val portraits; a miss: left out of selection
    # ONNX Runtime's CPU execution provider for checks, benchmarks and serving; None: OpenVINO
    # where its build of onnxruntime is installed, else the default CPU provider.
    cpu_provider: Literal["openvino", "default"] | None = None
    # OpenVINO's float layers (all of fp32 and fp16 models, what int8 keeps in float) in bf16 where
    # the CPU has it natively ("auto", OpenVINO's own default there), or always f32. Each exported
    # precision's quality check then measures its bf16 output against fp32; an fp32 whose bf16
    # output is below bf16_min_psnr_db fails like an int8 below its target.
    cpu_float_precision: Literal["auto", "f32", "bf16"] = "auto"
    bf16_min_psnr_db: Float = Field(40.0, ge=0)
    int8: Int8Config = Int8Config()
    tensorrt: TensorRTConfig = TensorRTConfig()

    @field_validator("precisions")
    @classmethod
    def _has_fp32(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "fp32" not in value:
            raise ValueError("must include fp32 (the reference the others are checked against)")
        return tuple(dict.fromkeys(value))


class AlertsConfig(_Section):
    """Thresholds of the Prometheus alerts `stylepress deploy` writes (serving/monitoring.py)."""
    error_ratio: Float = Field(0.01, gt=0, lt=1)  # failed requests / all requests, per model and reason
    queue_ms: Float | None = Field(None, gt=0)  # queue time per request; None: the served p50 at concurrency 1
    pending: Int | None = Field(None, ge=1)  # pending requests; None: 2 x max_batch_size x instances
    cpu: Float = Field(0.9, gt=0, le=1)  # nv_cpu_utilization (0-1)
    window: Str = Field("5m", pattern=r"^[0-9]+[smh]$")  # the rate() window
    hold: Str = Field("5m", pattern=r"^[0-9]+[smh]$")  # how long a breach lasts before it fires (Prometheus `for`)


class ServingConfig(_Section):
    model_name: Str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=64)  # default: name
    model: Literal["auto", "teacher", "student"] = "auto"  # auto: the student when there is one
    # auto: int8 when it met its quality target and measured faster than fp32 (export/quant.json)
    precision: Literal["auto", "fp32", "fp16", "int8"] = "auto"
    resolution: Int | None = Field(None, ge=32, le=4096, multiple_of=4)  # serving size; default data.resolution
    max_batch_size: Int = Field(8, ge=1, le=256)
    instances: Int = Field(1, ge=1, le=64)
    max_queue_delay_us: Int = Field(2000, ge=0)
    # cpu: the CPU Triton runtime (Python backend + ONNX Runtime); onnxruntime: Triton's ONNX Runtime
    # backend; onnxruntime-tensorrt: the same on a GPU with its TensorRT accelerator; tensorrt: an
    # engine built by `stylepress export` on a GPU host (tensorrt_plan).
    target: Literal["cpu", "onnxruntime", "onnxruntime-tensorrt", "tensorrt"] = "cpu"
    kind: Literal["cpu", "gpu"] = "cpu"  # instance kind for the onnxruntime target
    max_bytes: Int = Field(20 * 1024 * 1024, ge=1024)  # upload limit per image
    max_pixels: Int = Field(40_000_000, ge=1024)  # decoded-pixel limit per image
    # What the server returns when a request names no FORMAT (png: lossless, zlib level 1)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    output_quality: Int | None = Field(None, ge=1, le=100)  # jpeg/webp; None: 92 / 90
    alerts: AlertsConfig = AlertsConfig()


class BenchConfig(_Section):
    repeats: Int = Field(50, ge=3)  # timed runs per point, after warm-up (or budget_s of them, at least 3)
    budget_s: Float = Field(2.0, gt=0)  # a point stops at `repeats` runs or after this long, whichever is first
    threads: Int = Field(2, ge=1)  # threads per in-process variant
    # latency points per variant besides batch 1 at the serving size (square images)
    resolutions: tuple[Annotated[int, Strict(), Field(ge=32, le=4096, multiple_of=4)], ...] = (256, 512)
    batches: tuple[Annotated[int, Strict(), Field(ge=1, le=256)], ...] = (1, 8)
    # fastest: the lowest p50 among variants meeting the quality gates; quality: the best PSNR
    # within gates.max_p95_ms
    objective: Literal["fastest", "quality"] = "fastest"


class GatesConfig(_Section):
    """Checked by `stylepress build` on the selected variant; a failure exits with code 3."""
    min_psnr_db: Float = Field(30.0, ge=0)  # PSNR to the teacher's fp32 output on val portraits
    min_ssim: Float = Field(0.9, ge=0, le=1)
    max_p95_ms: Float | None = Field(None, gt=0)  # batch 1 at the serving size
    min_speedup_vs_teacher: Float | None = Field(None, gt=0)  # p50 ratio, both timed in the same run
    min_throughput: Float | None = Field(None, gt=0)  # images/s, batch 1


class ParamRange(_Section):
    """One searched setting: a range (`low`..`high`, on a log scale with `log = true`) or `choices`."""
    low: Float | Int | None = None
    high: Float | Int | None = None
    log: Bool = False
    choices: tuple[Str | Bool | Int | Float, ...] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _range_or_choices(self) -> ParamRange:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give low and high, or choices")
        if self.choices is None and not self.low < self.high:
            raise ValueError("low must be below high")
        if self.log and self.choices is None and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def values(self) -> tuple:
        """The values that bound it: checked against the section's own validation."""
        return self.choices if self.choices is not None else (self.low, self.high)


def _space(**ranges: dict) -> dict[str, ParamRange]:
    return {k: ParamRange(**v) for k, v in ranges.items()}


# What `stylepress tune` searches by default. λ_adv has a floor: the GAN term must not vanish.
TRAIN_SPACE = _space(lr={"low": 5e-5, "high": 1e-3, "log": True},
                     lambda_style={"low": 1.0, "high": 30.0, "log": True},
                     lambda_content={"low": 0.01, "high": 3.0, "log": True},
                     lambda_adv={"low": 0.003, "high": 0.3, "log": True},
                     gram_weight={"low": 0.1, "high": 10.0, "log": True},
                     gan_loss={"choices": ("lsgan", "hinge")},
                     ema_decay={"low": 0.99, "high": 0.9995},
                     decay_from={"low": 0.2, "high": 0.9})
COMPRESS_SPACE = _space(importance={"choices": ("l1", "l2", "taylor")},
                        round_to={"choices": (4, 8, 16)},
                        global_pruning={"choices": (False, True)},
                        lr={"low": 5e-5, "high": 2e-3, "log": True},
                        lambda_l1={"low": 0.1, "high": 10.0, "log": True},
                        lambda_ssim={"low": 0.1, "high": 10.0, "log": True})
# Settings a trial's budget and bookkeeping fix, never searched.
UNSEARCHED = {"steps", "distill_steps", "val_every", "val_images", "checkpoint_every", "log_every", "patience",
              "device", "amp", "target_macs", "ratio", "ignored"}
MIN_LAMBDA_ADV = 1e-3


class TuneSpace(_Section):
    train: dict[str, ParamRange] = TRAIN_SPACE
    compress: dict[str, ParamRange] = COMPRESS_SPACE

    @field_validator("train", "compress")
    @classmethod
    def _known_settings(cls, space: dict[str, ParamRange], info: ValidationInfo) -> dict[str, ParamRange]:
        section = TrainConfig if info.field_name == "train" else CompressConfig
        for key, rng in space.items():
            if key not in section.model_fields or key in UNSEARCHED:
                raise ValueError(f"{key}: unknown key (not a searchable [{info.field_name}] setting)")
            for value in rng.values():
                try:
                    section.model_validate({key: value})
                except ValidationError as exc:
                    raise ValueError(f"{key}: {value!r}: {exc.errors()[0]['msg']}") from None
        adv = space.get("lambda_adv") if info.field_name == "train" else None
        if adv is not None and min(adv.values()) < MIN_LAMBDA_ADV:
            raise ValueError(f"lambda_adv: the GAN term needs a floor: every value >= {MIN_LAMBDA_ADV}")
        return space


class TuneConfig(_Section):
    """`stylepress tune`: Optuna's TPE over [tune.space.<stage>], median pruning made patient."""
    trials: Int = Field(20, ge=1)
    steps: Int = Field(300, ge=1)  # each trial's budget: train.steps or compress.distill_steps
    val_every: Int = Field(50, ge=1)  # a validation, reported to the pruner, every this many steps
    sampler: Literal["tpe", "random"] = "tpe"
    startup_trials: Int = Field(5, ge=0)  # trials before TPE models the space and the pruner may prune
    prune_warmup: Int = Field(1, ge=0)  # validations of a trial before it may be pruned
    # A trial is pruned only when it is below the median of earlier trials at the same step AND its last
    # patience + 1 validations did not beat its own earlier best by more than min_delta_db: GAN curves
    # are noisy, and a trial still setting new bests is not cut. patience 0 = the median rule alone.
    patience: Int = Field(1, ge=0)
    min_delta_db: Float = Field(0.05, ge=0)
    space: TuneSpace = TuneSpace()


class TransferConfig(_Section):
    """`stylepress transfer`: adapt a trained generator to new styles or a new photo set."""
    # Styles to add (built-in names or style folders). None: adapt the model's styles named in
    # [data] styles to `photos`.
    add_styles: tuple[Str, ...] = Field((), max_length=16)
    photos: Path | None = None  # train on these photos instead of [data] photos
    # style: only the new styles' norm rows train (old styles' outputs stay bit-identical);
    # decoder: + the last `decoder_layers` convolutions; full: the whole generator;
    # lora: rank-`lora_rank` adapters on the convolutions, merged into the weights at the end.
    mode: Literal["style", "decoder", "full", "lora"] = "style"
    steps: Int = Field(1000, ge=1)
    lr: Float = Field(1e-3, gt=0, le=1.0)  # norm rows and adapters; the discriminator keeps [train] lr
    lr_scale: Float = Field(0.1, gt=0, le=1.0)  # decoder/full: shared weights train at lr * lr_scale
    init: Str = "mean"  # new rows start as the mean of the existing rows, or as the named style's
    decoder_layers: Int = Field(3, ge=1)
    freeze_d: Int = Field(2, ge=0)  # FreezeD: the teacher discriminator's first layers stay fixed
    lora_rank: Int = Field(4, ge=1, le=256)
    lora_alpha: Float = Field(4.0, gt=0)

    _resolve_photos = field_validator("photos")(_resolve)
    _styles = field_validator("add_styles")(_known_styles)

    @field_validator("photos")
    @classmethod
    def _is_folder(cls, value: Path | None) -> Path | None:
        return DataConfig._is_folder(value)


def _bundled(name: str):
    """A bundled model's manifest entry; an unknown name is a ValueError, so the message names the key."""
    from . import catalog

    try:
        return catalog.entry(name)
    except StylepressError as exc:
        raise ValueError(str(exc)) from None


class Config(_Section):
    name: Str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    seed: Int = Field(0, ge=0)
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    compress: CompressConfig = CompressConfig()
    export: ExportConfig = ExportConfig()
    serving: ServingConfig = ServingConfig()
    bench: BenchConfig = BenchConfig()
    gates: GatesConfig = GatesConfig()
    tune: TuneConfig = TuneConfig()
    transfer: TransferConfig = TransferConfig()

    @model_validator(mode="after")
    def _pretrained_styles(self) -> Config:
        if self.model.pretrained is not None:
            from .data import style_name

            styles = _bundled(self.model.pretrained).styles
            if tuple(style_name(s) for s in self.data.styles) != styles:
                raise ValueError(f"model.pretrained {self.model.pretrained!r} has the styles {list(styles)}: "
                                 "data.styles must list them, in that order")
        return self

    @property
    def crop(self) -> int:
        return self.train.crop or self.data.resolution

    @property
    def model_name(self) -> str:
        return self.serving.model_name or self.name.replace(".", "_")

    @property
    def serving_resolution(self) -> int:
        return self.serving.resolution or self.data.resolution


def parse_config(raw: dict, base: Path, source: str) -> Config:
    """Validate a TOML dict; raise StylepressError with one line naming the file and key."""
    try:
        return Config.model_validate(raw, context={"base": base})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise StylepressError(f"{source}: {key}: {msg}{more}") from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read and validate a config; `overrides` are the CLI's `--set section.key=value` (value in TOML
    syntax, a bare word taken as a string), applied before validation."""
    path = Path(path)
    if not path.is_file():
        raise StylepressError(f"config file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StylepressError(f"{path}: not valid TOML: {exc}") from None
    for item in overrides:
        _override(raw, item)
    return parse_config(raw, path.resolve().parent, str(path))


def _override(raw: dict, item: str) -> None:
    key, sep, text = item.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(keys):
        raise StylepressError(f"--set {item!r}: write section.key=value, e.g. compress.lambda_feat=0")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    table = raw
    for k in keys[:-1]:
        table = table.setdefault(k, {})
        if not isinstance(table, dict):
            raise StylepressError(f"--set {item!r}: {k} is not a table")
    table[keys[-1]] = value


def to_toml(cfg: Config) -> str:
    data = cfg.model_dump(mode="json", exclude_none=True)
    return tomli_w.dumps(data)


def with_steps(cfg: Config, steps: int | None) -> Config:
    """The config with train.steps overridden (the CLI's --steps)."""
    if steps is None:
        return cfg
    if steps < 1:
        raise StylepressError(f"--steps must be at least 1, got {steps}")
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": steps})})
