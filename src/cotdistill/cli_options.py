"""Command-line options generated from the config classes, as TRL's HfArgumentParser builds its
command line from SFTConfig: each field of a section (config.py) is one option, named after the
field, with the field's type, default and description (its help), and the values are validated by
building the class, so bounds and error messages are the config's own. A field added to a section
is an option of the commands that take the section, without touching them.

    def annotate(out: Path = typer.Option(...), teacher: dict = SectionOptions(TeacherConfig), ...)

`@with_sections` expands a `SectionOptions` parameter into one typer option per field and hands the
command the values as one dict, shaped as the class takes it (nested sections as sub-dicts).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def default(model: type[BaseModel], name: str) -> Any:
    """The default of `model`'s field `name`: an option a command adds to a section takes it from
    the class it is validated by, never restated."""
    return model.model_fields[name].default


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _members(annotation: Any) -> list[Any]:
    """The types a field may hold besides None, each with its Annotated metadata dropped."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    return [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a for a in members if a is not type(None)]


def _option_type(annotation: Any) -> Any:
    """The type typer parses the option as: a plain type as it is, a mapping as repeatable KEY=VALUE
    text, anything else (a Literal, `bool | "auto"`) as text that the class then reads."""
    members = _members(annotation)
    if len(members) == 1 and typing.get_origin(members[0]) is dict:
        return list[str]
    core = members[0] if len(members) == 1 and members[0] in (bool, int, float, str) else str
    return Optional[core] if type(None) in typing.get_args(annotation) else core


@dataclass(frozen=True)
class SectionOptions:
    """The options of one config section (`model`), as a parameter's default. `flags`: a field's
    option where the command spells it otherwise than `--field-name` (bool fields: `--on/--off`, or
    one flag); `required`: fields the command needs given; `skip`: fields it takes some other way."""

    model: type[BaseModel]
    flags: dict[str, str] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()

    def fields(self, model: type[BaseModel] | None = None) -> Iterator[tuple[str, FieldInfo]]:
        """(name, field) of every option, nested sections opened."""
        for name, info in (model or self.model).model_fields.items():
            if _is_section(info.annotation):
                yield from self.fields(info.annotation)
            elif name not in self.skip:
                yield name, info

    def flag(self, name: str, info: FieldInfo) -> str:
        dashed = name.replace("_", "-")
        return self.flags.get(name) or (f"--{dashed}/--no-{dashed}" if info.annotation is bool else f"--{dashed}")

    @property
    def names(self) -> dict[str, str]:
        """The option naming each field, for error messages (config.from_options' `flags`)."""
        return {name: self.flag(name, info).split("/")[0] for name, info in self.fields()}

    def parameters(self) -> list[inspect.Parameter]:
        out = []
        for name, info in self.fields():
            kind = _option_type(info.annotation)
            value = ... if name in self.required else [] if kind == list[str] else info.default
            repeatable = " Repeatable." if kind == list[str] else ""
            option = typer.Option(value, self.flag(name, info), help=info.description and info.description + repeatable)
            out.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=option, annotation=kind))
        return out

    def collect(self, values: dict[str, Any], model: type[BaseModel] | None = None) -> dict[str, Any]:
        """The section's options, taken out of `values`, shaped as `model` takes them."""
        out: dict[str, Any] = {}
        for name, info in (model or self.model).model_fields.items():
            if _is_section(info.annotation):
                out[name] = self.collect(values, info.annotation)
            elif name not in self.skip:
                out[name] = values.pop(name)
        return out


def with_sections(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with each parameter whose default is a SectionOptions expanded into its options
    (in its place, so --help lists them there); the command gets the section's values as a dict."""
    signature = inspect.signature(command, eval_str=True)
    parameters, sections = [], {}
    for p in signature.parameters.values():
        if isinstance(p.default, SectionOptions):
            sections[p.name] = p.default
            parameters += p.default.parameters()
        else:
            parameters.append(p)
    names = [p.name for p in parameters]
    clash = {n for n in names if names.count(n) > 1}
    if clash:  # a field named like one of the command's own options
        raise TypeError(f"{command.__name__}: options named twice: {sorted(clash)}")

    @functools.wraps(command)
    def expanded(**values: Any) -> Any:
        for name, section in sections.items():
            values[name] = section.collect(values)
        return command(**values)

    expanded.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    return expanded
