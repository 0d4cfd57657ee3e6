"""The multi-GPU recipe in configs/gpu-gsm8k-paper.yaml's comments runs as written.

The commands are read from the config's comment block and executed in a shell: `cotdistill run`
for data, annotation and baselines; `accelerate launch` of `cotdistill train` for each student (2
processes over gloo instead of 8 GPUs); and the final `cotdistill run`, which must find both
students up to date (the flags match the config's student section) and evaluate and report them.
What is swapped for what this machine has, and nothing else: the config's data (GSM8K on the hub)
for generated coin flips of 3 people (a 270M teacher kept 7 of 20 on an AVX2 EPYC; with the
default 4 people it kept none there, and training on an empty file fails, as it should), its teacher server for llama-cpp-python's serving the embedded
gemma-3-270m on 127.0.0.1 (a base model: completion prompts), its student (Qwen/Qwen2.5-0.5B) for a tiny local Llama, shorter
generation limits; in the commands, the student name, `--num_processes 8` for 2 and a free port.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, free_port
from test_train import causal_dir, distill, tokenizer  # noqa: F401  (the tiny student fixtures)

CONFIG = REPO / "configs" / "gpu-gsm8k-paper.yaml"


def documented_commands(config: Path) -> list[str]:
    """The shell commands of the config's comment block ("#   cotdistill ..." / "#   accelerate
    ...", with their continuation lines), without trailing comments."""
    commands, current = [], None
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line[1:].strip()
        if current is not None:
            current += " " + text
        elif text.startswith(("cotdistill ", "accelerate launch ")):
            current = text
        else:
            continue
        if current.endswith("\\"):
            current = current[:-1].rstrip()
        else:
            commands.append(re.sub(r"\s+#.*$", "", current))
            current = None
    return commands


def test_the_config_documents_a_data_parallel_sequence():
    commands = documented_commands(CONFIG)
    assert [c.split()[:2] for c in commands] == [["cotdistill", "run"], ["accelerate", "launch"], ["cotdistill", "run"]]
    assert "--mode cot" in commands[1] and "\\" not in commands[1]


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.usefixtures("one_torch_thread")
def test_the_multi_gpu_commands_run_as_written_on_two_cpu_processes(server_root, causal_dir, tmp_path):  # noqa: F811
    config = yaml.safe_load(CONFIG.read_text())
    config["data"] = {"generate": "coin_flip", "generate_options": {"n_flips": 3}, "n_train": 20, "n_test": 4}
    config["teacher"].update(model=f"openai:gemma@{server_root}/v1", max_tokens=96, options={"chat": False})
    config["student"]["model"] = str(causal_dir)
    config["evaluate"].update(max_new_tokens=16, batch_size=4)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / CONFIG.name).write_text(yaml.safe_dump(config))

    first, launch, last = documented_commands(CONFIG)
    launch = launch.replace("Qwen/Qwen2.5-0.5B", str(causal_dir))
    launch = launch.replace("--num_processes 8", f"--num_processes 2 --main_process_port {free_port()}")
    script = [first, launch, launch.replace("--mode cot", "--mode answer-only"), last]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for command in script:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)

    assert "trained" in outputs[1] and "trained" in outputs[2]
    final = outputs[3]
    for stage in ("data", "annotate", "train:cot", "train:answer-only", "evaluate:teacher-few-shot"):
        assert f"{stage}: up to date, skipped" in final, stage
    run = tmp_path / "runs" / "gpu-gsm8k-paper"
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    for mode in ("cot", "answer-only"):
        assert stages[f"train:{mode}"]["metrics"]["world_size"] == 2
        assert stages[f"evaluate:student-{mode}"]["status"] == "done"
        assert stages[f"evaluate:student-{mode}"]["summary"]["n"] == 4
    assert (run / "report.html").exists() and "student-cot" in (run / "report.md").read_text()
