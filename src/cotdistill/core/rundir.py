"""Where each stage reads and writes inside a run directory, and the run's manifest.

    runs/<name>/
      config.yaml  manifest.json  data/train.jsonl  data/test.jsonl
      annotations.jsonl  distill.jsonl  cache.sqlite
      written.jsonl               with student.distill_context: written, the teacher's recorded
                                  probabilities on each kept CoT
      teacher-targets/*.jsonl     with student.distill: the targets each training sequence distils
      students/<mode>/            Hugging Face format; students/<mode>/checkpoints/ for resume
      predictions/<model>.jsonl   report.md  report.html  plots/*.png

The manifest records, per stage, its status, timings and counts, so `run` can skip stages whose
outputs are up to date and `report` can show where the time went. `RunDir.stage` is the one place
a stage's outcome is recorded: stages return what they did, and the stage runner
(pipeline.held_stage, for `run` and the single-stage commands alike) wraps the call in it.

One process writes a run directory at a time: `RunDir.lock` holds an advisory lock (locks.py) on
`.lock` while a stage writes. The kernel drops it when its holder exits, however it exits, so a
killed run never blocks the next one; a second process is refused with the holder's pid and command.

The manifest and the lock file are shared records (the refusal prints the lock on another user's
terminal), so both hold credentials masked (cotdistill.core.secrets): the command line's teacher URLs
and key-like options, every string recorded for a stage, and a failed stage's error.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotdistill.core.errors import Interrupted, StageStopped, UserError
from cotdistill.core.fileio import check_fields, read_json_file, read_jsonl_file, read_text, write_json_atomic
from cotdistill.core.locks import Busy, file_lock
from cotdistill.core.memory import PeakMemory, release_memory
from cotdistill.core.secrets import mask_argv, mask_data, redact

# The fields each file of a run directory is read back with, and their JSON types ("?": may be
# missing): what the readers use, checked once here, so that a torn, foreign or hand-edited file
# is one line naming it and what to do, not a traceback in whichever stage reads it next.
TEXT, NUMBER, OPTIONAL_TEXT = (str,), (int, float), (str, type(None))
MANIFEST_FIELDS = {"stages": (dict,), "environment?": (dict,)}
ANNOTATION_FIELDS = {"example_id": TEXT, "sample": (int,), "text": TEXT, "verdict": TEXT, "predicted": OPTIONAL_TEXT,
                     "reason?": OPTIONAL_TEXT, "finish_reason?": TEXT, "vote?": (dict,)}
DISTILL_FIELDS = {"id": TEXT, "question": TEXT, "rationale": TEXT, "answer": (str, int, float), "answer_type?": TEXT,
                  "example_id?": TEXT, "sample?": (int,), "choices?": (list,)}
PREDICTION_FIELDS = {"example_id": TEXT, "output": TEXT, "predicted": OPTIONAL_TEXT, "correct": (bool,),
                     "finish_reason?": TEXT, "tokens?": (int,)}
GENERATION_FIELDS = {"fp": TEXT, "example_id": TEXT, "sample": (int,), "output": TEXT, "tokens": (int,), "finish_reason": TEXT}
SUMMARY_FIELDS = {"name": TEXT, "n": (int,), "accuracy": NUMBER, "ci_low": NUMBER, "ci_high": NUMBER, "method?": TEXT,
                  "correct?": (int,), "tokens_per_s?": (int, float, type(None)), "data?": TEXT}
DECONTAMINATION_FIELDS = {"question": TEXT}
RERUN_ANNOTATE = "delete it and rerun annotate (the teacher cache answers again: nothing is paid twice)"


def main_process() -> bool:
    """Whether this process writes: under accelerate/torchrun every rank runs the command, rank 0 writes."""
    return os.environ.get("RANK", "0") == "0"


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
    def dev_data(self) -> Path:
        return self.root / "data" / "dev.jsonl"

    @property
    def test_data(self) -> Path:
        return self.root / "data" / "test.jsonl"

    @property
    def decontamination(self) -> Path:
        """Each training or dev question dropped for sharing words with a held-out one."""
        return self.root / "data" / "decontamination.jsonl"

    def extra_test(self, name: str) -> Path:
        return self.root / "data" / "tests" / f"{name}.jsonl"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations.jsonl"

    @property
    def distill(self) -> Path:
        return self.root / "distill.jsonl"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def written(self) -> Path:
        return self.root / "written.jsonl"

    def student(self, mode: str) -> Path:
        return self.root / "students" / mode

    def predictions(self, model: str) -> Path:
        return self.root / "predictions" / f"{model}.jsonl"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    # ------------------------------------------------------------ one writer

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for this process (re-entrant: `run` locks, its stages lock again)."""
        note = f"pid {os.getpid()}: {' '.join(mask_argv(sys.argv))[:300]}, since {time.strftime('%H:%M:%S')}"
        with contextlib.ExitStack() as held:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                held.enter_context(file_lock(self.root / ".lock", wait=False, note=note))
            except OSError as e:
                raise UserError(f"{self.root}: cannot write the run directory ({e.strerror}); choose another --out or run_dir") from None
            except Busy as e:
                raise UserError(
                    f"{self.root} is being written by another process ({redact(e.holder) or 'unknown process'}); one process "
                    "writes a run directory at a time: wait for it to finish, stop it, or use another run directory"
                ) from None
            yield

    # ------------------------------------------------------------ manifest

    def read_manifest(self) -> dict[str, Any]:
        """The manifest ({"stages": {}} before any stage ran); torn or foreign, a UserError saying so."""
        if not self.manifest.exists():
            return {"stages": {}}
        fix = ("delete it to start the run's record afresh (every stage then runs again; the teacher cache "
               "keeps the answers already paid for)")
        manifest = read_json_file(self.manifest, MANIFEST_FIELDS, fix)
        for stage, info in manifest["stages"].items():
            check_fields(info, {}, f"{self.manifest}: stage {stage!r}", fix)
        return manifest

    def read_config(self) -> dict[str, Any]:
        """config.yaml as `run` wrote it ({} when the stages were run one by one); torn or foreign, a
        UserError saying so."""
        from cotdistill.core.config import read_yaml

        if not self.config.exists():
            return {}
        fix = "delete it (`cotdistill run CONFIG` writes it again)"
        try:
            config = read_yaml(read_text(self.config))
        except ValueError as e:
            raise UserError(f"{self.config}: not readable YAML ({e}); {fix}") from None
        return check_fields(config if config is not None else {}, {}, str(self.config), fix)

    # ------------------------------------------------------------ the stages' files, read back

    def read_annotations(self) -> list[dict[str, Any]]:
        """annotations.jsonl: one row per teacher sample ([] before annotate ran)."""
        return read_jsonl_file(self.annotations, ANNOTATION_FIELDS, RERUN_ANNOTATE)

    def read_distill(self, path: Path | None = None) -> list[dict[str, Any]]:
        """distill.jsonl (or a file of its rows, `path`): one row per kept CoT."""
        return read_jsonl_file(path or self.distill, DISTILL_FIELDS, RERUN_ANNOTATE)

    def read_predictions(self, name: str) -> list[dict[str, Any]]:
        """predictions/NAME.jsonl: one scored row per question."""
        return read_jsonl_file(self.predictions(name), PREDICTION_FIELDS,
                               f"delete it and rerun `cotdistill evaluate ... --name {name}`")

    def read_generations(self, name: str) -> list[dict[str, Any]]:
        """predictions/NAME.partial.jsonl, the generations an interrupted evaluation finished: a torn
        row (a kill mid-write) is dropped, and generated again."""
        return read_jsonl_file(self.predictions(name).with_suffix(".partial.jsonl"), GENERATION_FIELDS, "", skip_bad=True)

    def read_summary(self, path: Path) -> dict[str, Any]:
        """predictions/NAME.summary.json: an evaluation's accuracy and settings."""
        name = path.name.removesuffix(".summary.json")
        return read_json_file(path, SUMMARY_FIELDS, f"delete it and rerun `cotdistill evaluate ... --name {name}`")

    def read_decontamination(self) -> list[dict[str, Any]]:
        """data/decontamination.jsonl: each question the data stage dropped."""
        return read_jsonl_file(self.decontamination, DECONTAMINATION_FIELDS,
                               "delete it and rerun `cotdistill run CONFIG` (its data stage writes it again)")

    @contextlib.contextmanager
    def stage(self, name: str, **known: Any) -> Iterator[dict[str, Any]]:
        """`with run.stage("annotate", fingerprint=fp) as done: done.update(stage_fn(...))`.

        Records `status: running` (with `known`) on entry; on exit merges what the stage put in
        `done` with its status (`done["status"]`, else "done"), seconds and peak memory. A clean stop
        (StageStopped) is recorded as "stopped" with its info, Ctrl-C or a stop signal (SIGTERM,
        SIGHUP) as "interrupted", any other error as "failed"; all propagate. The stage starts with
        the memory earlier stages of this process freed given back (memory.release_memory), so its
        peak is its own."""
        self.record_stage(name, fresh=True, status="running", **known)
        release_memory()
        done: dict[str, Any] = {}
        start = time.perf_counter()
        with PeakMemory() as memory:
            try:
                yield done
            except StageStopped as e:
                self.record_stage(name, status="stopped", **e.info)
                raise
            except (Interrupted, KeyboardInterrupt):
                self.record_stage(name, status="interrupted")
                raise
            except BaseException as e:
                # Best effort: on a disk that is still full the record may not fit, and the
                # stage's own error, not this one, is what the user must see.
                with contextlib.suppress(UserError, OSError):
                    self.record_stage(name, status="failed", error=redact(f"{type(e).__name__}: {e}")[:500])
                raise
        self.record_stage(name, **{**done, "status": done.get("status", "done"),
                                   "seconds": round(time.perf_counter() - start, 1), "peak_rss_gib": memory.gib})

    def record_stage(self, stage: str, *, fresh: bool = False, **info: Any) -> None:
        """Merge `info` into manifest["stages"][stage], or replace it (`fresh`: a new attempt).
        An atomic write; credentials in `info` (a teacher URL's password, key-like options) are masked."""
        manifest = self.read_manifest()
        stages = manifest.setdefault("stages", {})
        if fresh:
            stages[stage] = {}
        stages.setdefault(stage, {}).update(mask_data(info))
        manifest["stages"][stage]["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        manifest.setdefault("environment", environment())
        write_json_atomic(self.manifest, manifest)


def environment() -> dict[str, str]:
    """Versions that decide whether two runs are comparable."""
    from importlib.metadata import PackageNotFoundError, version

    from cotdistill.core.allocator import in_use

    env = {"python": platform.python_version(), "platform": platform.platform(), "cpus": str(os.cpu_count()),
           "malloc": in_use()}
    for pkg in ("cotdistill", "torch", "transformers", "accelerate", "peft", "llama-cpp-python"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return env
