"""Input data for NVIDIA's perf_analyzer and Model Analyzer, which cannot make up encoded images for an
ensemble that takes them (Model Analyzer issues #680, #764): real val portraits as base64 BYTES and
every style, in their `--input-data` JSON form, with the command beside it. Written by the deploy
stage to deploy/perf_analyzer/.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from stylepress.config import Config
from stylepress.data import val_image_paths
from stylepress.fsutil import write_json, write_text
from stylepress.layout import RunLayout
from stylepress.models.spec import read_spec

PORTRAITS = 4  # each a few hundred KB: enough variety, a file that stays small


def input_data(cfg: Config, run_dir: Path) -> dict:
    layout = RunLayout(run_dir)
    chosen = json.loads(layout.selection.read_text())["served"]["model"] if layout.selection.is_file() else "teacher"
    styles = read_spec(layout.model_dir(chosen)).styles if layout.model_dir(chosen).is_dir() else ()
    rows = []
    for i, path in enumerate(val_image_paths(cfg.data)[:PORTRAITS]):
        row = {"IMAGE": {"b64": base64.b64encode(path.read_bytes()).decode(), "shape": [1]}}
        if len(styles) > 1:
            row["STYLE"] = {"content": [styles[i % len(styles)]], "shape": [1]}
        rows.append(row)
    return {"data": rows}


def write_perf_input(cfg: Config, run_dir: str | Path) -> Path:
    folder = RunLayout(run_dir).deploy / "perf_analyzer"
    write_json(folder / "input_data.json", input_data(cfg, Path(run_dir)))
    write_text(folder / "README.md", f"""# perf_analyzer / Model Analyzer input for `{cfg.model_name}`

Real val portraits (base64 JPEG/PNG bytes) and a style per request, as the ensemble takes them:

    perf_analyzer -m {cfg.model_name} -u 127.0.0.1:8001 -i grpc --input-data input_data.json \\
        --shape IMAGE:1 --concurrency-range 1:16:2 \
        -H triton-grpc-protocol-inference-key:$(cat inference.key)

(-H only when the server restricts inference; over HTTP the header is `inference-key`.)
""")
    return folder
