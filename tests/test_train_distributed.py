"""Two-process data-parallel training (accelerate launch, gloo on CPU) of a tiny student.

Checks what DDP promises: every rank ends with bit-identical weights (sha256 of all parameters,
gathered into train_metrics.json), the saved model is that model, and it actually trained.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from test_train import causal_dir, distill_rows, tokenizer  # noqa: F401  (the tiny student fixtures)

from cotdistill.core.records import write_jsonl
from cotdistill.models.students import load_student
from cotdistill.training.train import TrainConfig, train_student
from cotdistill.training.student_trainer import weights_digest


@pytest.fixture(scope="module")
def distill(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "distill.jsonl"
    write_jsonl(path, distill_rows(40))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_end_with_identical_trained_weights(causal_dir, distill, tmp_path):  # noqa: F811
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # `--multi_gpu` is accelerate's torchrun launcher; without GPUs the processes join over gloo on the CPU
    # (`accelerate launch --cpu --num_processes 2` would start only one process unless MPI is set up).
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(_free_port()), "-m", "cotdistill.cli", "train", "--data", str(distill), "--out", str(out),
           "--student", str(causal_dir), "--full", "--max-steps", "30", "--save-steps", "10", "--batch-size", "4",
           "--lr", "3e-3", "--bf16", "false", "--eval-fraction", "0.2", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained 30 steps") == 1, "only rank 0 reports"

    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 30
    digests = metrics["rank_weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    saved, _, _ = load_student(str(out))
    assert weights_digest(saved) == digests[0]
    initial, _, _ = load_student(str(causal_dir))
    assert weights_digest(initial) != digests[0]
    assert metrics["final_train_loss"] < metrics["first_train_loss"] * 0.7

    # The same 8 examples form each global step in both layouts (2 ranks x 4, or 1 process x 8; 32 training
    # examples so no epoch ends in a short batch that DDP would pad by repeating examples), and the loss is a
    # mean over all target tokens of the step either way: one process must reach the same weights.
    single = train_student(TrainConfig(
        student=str(causal_dir), data=distill, out=tmp_path / "single", lora=False, max_steps=30, save_steps=10,
        batch_size=8, lr=3e-3, bf16=False, eval_fraction=0.2, quiet=True,
    ))
    assert single.metrics["final_train_loss"] == pytest.approx(metrics["final_train_loss"], rel=1e-3)
    one, _, _ = load_student(str(tmp_path / "single"))
    for (name, a), (_, b) in zip(sorted(saved.named_parameters()), sorted(one.named_parameters())):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5), name
