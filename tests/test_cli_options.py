"""The options of `annotate`, `train` and `evaluate` are their config sections' fields (cli_options),
and every stage, run alone or in `run`, is held and recorded by one runner (pipeline.held_stage)."""

from __future__ import annotations

import json

import pytest
import typer
from pydantic import BaseModel, Field
from typer.main import get_command
from typer.testing import CliRunner

from cotdistill.cli import app
from cotdistill.cli_options import SectionOptions, with_sections
from cotdistill.core.config import EvalSettings, TeacherConfig, TrainSettings
from cotdistill.pipeline import held_stage
from cotdistill.core.rundir import RunDir


def _options(command: str) -> dict[str, object]:
    """name of the parameter -> the click option of `command`."""
    return {p.name: p for p in get_command(app).commands[command].params}


@pytest.mark.parametrize("command, section", [("annotate", TeacherConfig), ("train", TrainSettings), ("evaluate", EvalSettings)])
def test_every_field_of_a_section_is_an_option_with_its_default_and_help(command, section):
    options = _options(command)
    fields = {**section.model_fields, **(TeacherConfig.model_fields["filters"].annotation.model_fields if section is TeacherConfig else {})}
    for name, field in fields.items():
        if name in ("filters", "api_key_env"):  # a section; a key's variable, given as --teacher-option api_key_env=NAME
            continue
        option = options[name]
        assert option.help == (field.description and field.description + (" Repeatable." if option.multiple else "")), name
        if not option.required and not option.multiple:
            assert option.default == field.default, name


class Toy(BaseModel):
    size: int = Field(3, ge=1, le=10, description="How big.")
    fast: bool = False


def test_a_field_added_to_a_section_is_an_option_validated_by_the_class():
    toy = typer.Typer()
    seen = []

    @toy.command()
    @with_sections
    def go(name: str = typer.Option("x", "--name"), settings: dict = SectionOptions(Toy)) -> None:
        seen.append((name, Toy(**settings)))

    runner = CliRunner()
    assert runner.invoke(toy, ["--size", "5", "--fast"]).exit_code == 0
    assert runner.invoke(toy, []).exit_code == 0
    assert seen == [("x", Toy(size=5, fast=True)), ("x", Toy())]
    assert "How big." in runner.invoke(toy, ["--help"]).output


def test_the_runner_holds_and_records_on_the_main_process_only(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    with held_stage(run, "evaluate:x", fingerprint="f") as done:
        assert (run.root / ".lock").read_text().startswith("pid ")
        done["summary"] = {"n": 1}
    stage = json.loads(run.manifest.read_text())["stages"]["evaluate:x"]
    assert (stage["status"], stage["fingerprint"], stage["summary"]) == ("done", "f", {"n": 1})

    monkeypatch.setenv("RANK", "1")  # another rank of a distributed launch: it neither holds nor records
    other = RunDir(tmp_path / "other")
    with held_stage(other, "train:cot") as done:
        done["metrics"] = {}
    assert not other.root.exists()
