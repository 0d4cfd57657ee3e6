"""Teacher backends behind one small protocol (see base.py); `load_teacher` picks one by name.

Backends are imported only when chosen, so a missing optional dependency (llama-cpp-python,
vllm) only matters to the users of that backend. A spec may hold credentials (a URL's password or
`?api-key=`); the real spec goes to the backend, and every message shows `mask_spec(spec)`.
"""

from __future__ import annotations

import inspect
import os

from cotdistill.core.errors import UserError
from cotdistill.core.secrets import mask_spec
from cotdistill.teachers.base import Completion, Teacher

__all__ = ["Completion", "Teacher", "load_teacher", "SPEC_FORMS"]

SPEC_FORMS = (
    "embedded:NAME (see `cotdistill models list`)",
    "gguf:/path/to/model.gguf",
    "openai:MODEL@http://host:port/v1[,http://host2:port/v1] (or openai:MODEL with base_url=...)",
    "hf:/path/or/hub-name",
    "vllm:/path/or/hub-name",
)


def load_teacher(spec: str, **options) -> Teacher:
    """Build a teacher from a spec string; `options` go to the backend's constructor
    (e.g. parallel=4, n_ctx=8192 for llama.cpp; concurrency=16, base_url=[...] for HTTP)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise _unknown(spec)
    if kind == "embedded":
        from cotdistill.models import embedded
        from cotdistill.core.catalogue import get_model
        from cotdistill.teachers.llamacpp import LlamaCppTeacher

        model = get_model(rest)
        path = embedded.model_path(rest)
        defaults = {"label": model.name, "sha256": model.sha256, "chat": model.chat}
        return _build(LlamaCppTeacher, spec, path, **{**defaults, **options})
    if kind == "gguf":
        from cotdistill.teachers.llamacpp import LlamaCppTeacher

        return _build(LlamaCppTeacher, spec, os.path.expanduser(rest), **options)
    if kind == "openai":
        from cotdistill.teachers.openai_compat import OpenAICompatTeacher

        model, _, urls = rest.partition("@")
        base_url = options.pop("base_url", None) or urls or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        endpoints = base_url.split(",") if isinstance(base_url, str) else list(base_url)
        return _build(OpenAICompatTeacher, spec, model, endpoints=[e.strip() for e in endpoints if e.strip()], **options)
    if kind == "hf":
        from cotdistill.teachers.hf import HFTeacher

        return _build(HFTeacher, spec, rest, **options)
    if kind == "vllm":
        from cotdistill.teachers.vllm import VLLMTeacher

        return _build(VLLMTeacher, spec, rest, **options)
    raise _unknown(spec)


def _unknown(spec: str) -> UserError:
    return UserError(f"unknown teacher '{mask_spec(spec)}'; use one of: " + "; ".join(SPEC_FORMS))


def _build(cls, spec: str, *args, **options):
    """Call the backend's constructor, turning an unknown option into a UserError that lists the known ones."""
    params = inspect.signature(cls).parameters
    known = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)][len(args):]
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise UserError(f"teacher '{mask_spec(spec)}' does not take option(s) {', '.join(unknown)}; it takes: {', '.join(known)}")
    return cls(*args, **options)
