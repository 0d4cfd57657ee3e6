"""Where each stage reads and writes inside a run directory, and the run's manifest.

    runs/<name>/
      config.yaml  manifest.json  data/train.jsonl  data/test.jsonl
      annotations.jsonl  distill.jsonl  cache.sqlite
      students/<mode>/            Hugging Face format; students/<mode>/checkpoints/ for resume
      predictions/<model>.jsonl   report.md  report.html  plots/*.png

The manifest records, per stage, its status, timings and counts, so `run` can skip stages whose
outputs are up to date and `report` can show where the time went.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def train_data(self) -> Path:
        return self.root / "data" / "train.jsonl"

    @property
    def test_data(self) -> Path:
        return self.root / "data" / "test.jsonl"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations.jsonl"

    @property
    def distill(self) -> Path:
        return self.root / "distill.jsonl"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    def student(self, mode: str) -> Path:
        return self.root / "students" / mode

    def predictions(self, model: str) -> Path:
        return self.root / "predictions" / f"{model}.jsonl"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    # ------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest.exists():
            return {"stages": {}}
        return json.loads(self.manifest.read_text(encoding="utf-8"))

    def record_stage(self, stage: str, **info: Any) -> None:
        """Merge `info` into manifest["stages"][stage] (atomic write; secrets must not be passed)."""
        manifest = self.read_manifest()
        manifest.setdefault("stages", {}).setdefault(stage, {}).update(info)
        manifest["stages"][stage]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest.setdefault("environment", environment())
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.manifest.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.manifest)


def environment() -> dict[str, str]:
    """Versions that decide whether two runs are comparable."""
    from importlib.metadata import PackageNotFoundError, version

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count())}
    for pkg in ("cotdistill", "torch", "transformers", "accelerate", "peft", "llama-cpp-python"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return env
