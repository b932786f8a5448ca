"""Every artifact path of a run directory, declared once (DESIGN.md, "Run directory").

Stages, the pipeline, the report and the demo take their paths from a `RunLayout`; no module
spells a run's file names itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODELS = ("teacher", "student")  # the generators a run can hold, in this order everywhere
PRECISIONS = ("fp32", "fp16", "int8")


def onnx_name(model: str, precision: str = "fp32") -> str:
    return f"{model}.{precision}.onnx"


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # train / compress
    def model_dir(self, model: str) -> Path:
        return self.root / model

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        return self.root / "student"

    @property
    def sweep(self) -> Path:  # `compress --sweep`: one student per MACs reduction, and the frontier
        return self.student / "sweep"

    @property
    def tune(self) -> Path:  # `stylepress tune`: the study, its trials, best.toml and the report
        return self.root / "tune"

    @property
    def ablation(self) -> Path:  # python -m stylepress.benchmarks ablation
        return self.root / "ablation"

    @property
    def family(self) -> Path:  # python -m stylepress.benchmarks family-teacher
        return self.root / "family"

    # export
    @property
    def export(self) -> Path:
        return self.root / "export"

    def onnx(self, model: str, precision: str = "fp32") -> Path:
        return self.export / onnx_name(model, precision)

    def plan(self, model: str, precision: str) -> Path:
        return self.export / f"{model}.{precision}.plan"

    @property
    def quant(self) -> Path:  # per model and precision: quality against fp32 and pass/fail, never timings
        return self.export / "quant.json"

    @property
    def parity(self) -> Path:
        return self.export / "parity.json"

    # the decision and what serves it
    @property
    def selection(self) -> Path:
        return self.root / "selection.json"

    @property
    def repository(self) -> Path:
        return self.root / "model_repository"

    @property
    def server_log(self) -> Path:
        return self.root / "tritonserver.log"

    # measurements and the report
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def deploy(self) -> Path:  # monitoring (and what else a deployment needs beside the repository)
        return self.root / "deploy"

    @property
    def precision_json(self) -> Path:  # the in-process bench: every variant
        return self.report / "precision.json"

    @property
    def precision_md(self) -> Path:
        return self.report / "precision.md"

    @property
    def served_json(self) -> Path:  # the served bench: the selection through Triton
        return self.report / "serving_latency.json"

    @property
    def served_md(self) -> Path:
        return self.report / "serving_latency.md"

    @property
    def report_json(self) -> Path:
        return self.report / "report.json"

    @property
    def report_md(self) -> Path:
        return self.report / "report.md"

    @property
    def report_html(self) -> Path:
        return self.report / "report.html"

    @property
    def pareto(self) -> Path:
        return self.report / "pareto.png"

    @property
    def samples(self) -> Path:
        return self.report / "samples.png"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def models(self) -> list[str]:
        """The generators this run holds (a folder with an architecture spec)."""
        from .models import ARCH_FILE

        return [m for m in MODELS if (self.model_dir(m) / ARCH_FILE).is_file()]
