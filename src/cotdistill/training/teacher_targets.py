"""The teacher's next-token probabilities on the student's own training sequences: the targets of
token-level distillation (`student.distill`).

Sequence-level distillation (the paper's) gives one token of signal per position: the one the
teacher happened to write. The teacher knew a whole distribution there. Here the teacher reads
each training sequence exactly as the student will (the student's prompt, the kept CoT, the
answer, EOS: the same token ids), one prefill per sequence, and for every target token keeps two
sparse views of its distribution p (at the distillation temperature):

    sampled  `tokens` draws from p, each weighing 1/tokens: random-sampling KD (Anshumann et al.,
             ACL 2025). E[weights] = p, so the loss's gradient is full KD's in expectation.
    top-k    the `tokens` most likely tokens and their probabilities, renormalised in training:
             biased (the tail's mass moves to the head), kept as the comparison that paper makes.

Nothing of the teacher stays in training memory: targets are a few ids and weights per token in
RUN/teacher-targets/SETTINGS.jsonl, one row per sequence, appended and flushed as each is scored,
so a killed stage resumes where it stopped and draws exactly what an uninterrupted one would
(each sequence's draws are seeded by its own tokens). Teacher and student must share a
vocabulary: checked token by token before anything is scored.

Whose context the probabilities come from is a choice (`student.distill_context`):
    student  the teacher reads the student's context, not the one it wrote the CoT in (exemplars and
             the answer hint): the probabilities are those of the question the student will be asked.
             One prefill per training sequence (`score_training_data`).
    written  the teacher's probabilities recorded while it wrote each kept CoT (annotate's `record`,
             written.jsonl): free at annotation time, and the distribution that produced the CoT. The
             student's target tokens are matched to the written ones (`align`); a target token with no
             written counterpart in the same context (the answer sentence the student is taught, EOS)
             is its own target, i.e. plain cross-entropy there (`align_written`). A server teacher
             records the top-k view only, its tokens as ids or as bytes (`piece_ids` maps those).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cotdistill.core.errors import UserError
from cotdistill.core.fileio import ends_torn, jsonl_line, read_jsonl_file, write_lines_atomic
from cotdistill.core.progress import console
from cotdistill.core.sampling import derive_seed
from cotdistill.core.sparse_targets import TARGET_KEYS, both_targets
from cotdistill.teachers.scoring import Scorer, open_scorer
from cotdistill.training.collate import IGNORE

SAMPLED, TOP_K = "sampled", "top-k"
TARGET_FIELDS = {"key": (str,), **{k: (list,) for k in TARGET_KEYS}}


# ---------------------------------------------------------------- the teacher and student pair


def check_vocabulary(teacher: list[str], teacher_name: str, student: list[str], student_name: str) -> None:
    """Teacher and student must number the same tokens the same way, or every target is a wrong
    token: one line naming both when they do not."""
    n = min(len(teacher), len(student))
    differ = [i for i in range(n) if teacher[i] != student[i]]
    if differ or len(student) > len(teacher):
        where = f"token {differ[0]} is {teacher[differ[0]]!r} vs {student[differ[0]]!r}" if differ else \
            f"{len(teacher)} vs {len(student)} tokens"
        raise UserError(f"student.distill: the teacher {teacher_name} and the student {student_name} have different "
                        f"vocabularies ({where}); distillation from the teacher's probabilities needs a student with "
                        "the teacher's tokenizer (e.g. the same model family), or student.distill: off")


# ---------------------------------------------------------------- the stage


@dataclass(frozen=True)
class TargetSettings:
    teacher: str  # the teacher's spec
    temperature: float
    tokens: int
    seed: int
    context: str = "student"  # student | written (module docstring)

    def file(self, root: Path) -> Path:
        """One file per settings: a changed teacher or temperature never mixes with earlier rows."""
        parts: list[Any] = [self.teacher, self.temperature, self.tokens, self.seed]
        if self.context != "student":  # the student-context files written before `context` existed keep their names
            parts.append(self.context)
        digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        return root / "teacher-targets" / f"{digest[:16]}.jsonl"


def sequence_key(enc: dict[str, list[int]]) -> str:
    """The identity of an encoded training sequence: its tokens and which of them are targets."""
    return hashlib.sha256(json.dumps([enc["input_ids"], enc["labels"]]).encode()).hexdigest()[:24]


def target_rows(enc: dict[str, list[int]]) -> list[int]:
    """The logit rows that predict the sequence's target tokens (causal: row t predicts token t+1)."""
    return [t - 1 for t in range(1, len(enc["labels"])) if enc["labels"][t] != IGNORE]


def read_targets(path: Path) -> dict[str, dict[str, Any]]:
    """The scored sequences of `path` by key; a row torn by a kill is dropped (scored again)."""
    return {row["key"]: row for row in read_jsonl_file(path, TARGET_FIELDS, "", skip_bad=True)}


def score_sequences(encoded: list[dict[str, list[int]]], scorer: Scorer, settings: TargetSettings, out: Path,
                    on_done: Any = None) -> dict[str, Any]:
    """Append the targets of every sequence of `encoded` not yet in `out`; returns counts and sizes."""
    done = read_targets(out)
    if ends_torn(out):  # rewrite the whole rows before appending
        write_lines_atomic(out, [jsonl_line(row) for row in done.values()])
    todo = {sequence_key(e): e for e in encoded}
    todo = {k: e for k, e in todo.items() if k not in done}
    out.parent.mkdir(parents=True, exist_ok=True)
    positions = 0
    with out.open("a", encoding="utf-8") as log:
        for key, enc in todo.items():
            rows = target_rows(enc)
            generator = torch.Generator().manual_seed(derive_seed(settings.seed, key))
            targets = both_targets(scorer.logits(enc["input_ids"])[rows], settings.temperature, settings.tokens, generator)
            log.write(jsonl_line({"key": key, **targets}))
            log.flush()
            positions += len(rows)
            if on_done:
                on_done()
    all_positions = sum(len(target_rows(e)) for e in encoded)
    return {"sequences": len({sequence_key(e) for e in encoded}), "scored_now": len(todo), "positions": all_positions,
            "bytes": out.stat().st_size, "bytes_per_position": round(out.stat().st_size / max(all_positions, 1), 1),
            "teacher": scorer.name}


# ---------------------------------------------------------------- the written context


WRITTEN_FIELDS = {"example_id": (str, int), "sample": (int,), "top_p": (list,)}


def align(targets: list[int], written: list[int]) -> list[int | None]:
    """For each target token, the index of the written token whose recorded distribution predicted it
    in the same context (the same tokens before it, back to the start of the CoT or to the
    previous token at least), else None. Token runs the two share are found with difflib; the
    first token of a run is used only at the start of both, where each follows its own prompt."""
    from difflib import SequenceMatcher

    out: list[int | None] = [None] * len(targets)
    for i, j, n in SequenceMatcher(None, targets, written, autojunk=False).get_matching_blocks():
        for d in range(0 if i == j == 0 else 1, n):
            out[i + d] = j + d
    return out


def read_written(path: Path) -> dict[str, list[dict[str, Any]]]:
    """written.jsonl's recordings by example id (several samples of a question each have one)."""
    if not path.is_file():
        raise UserError(f"{path}: the teacher's recorded probabilities are missing; rerun `cotdistill run` "
                        "(annotation records them with student.distill_context: written)")
    by_example: dict[str, list[dict[str, Any]]] = {}
    for row in read_jsonl_file(path, WRITTEN_FIELDS, "delete it and rerun `cotdistill run` (annotation writes it again)"):
        by_example.setdefault(str(row["example_id"]), []).append(row)
    return by_example


def piece_ids(tokenizer: Any) -> dict[str, int]:
    """Each token's UTF-8 bytes (hex) → its id, to read a server's recording that names tokens by
    their bytes: byte-level BPE vocabularies (Qwen, Llama 3, GPT-2) spell bytes as printable
    characters, SentencePiece ones (Gemma, Llama 2) write a space as "▁" and a lone byte as <0xNN>.
    Where two tokens have the same bytes, the one a tokenizer writes wins: a SentencePiece byte
    token only stands for a byte no other token is (its fallback), else the lower id."""
    byte_of = _byte_level_chars()
    byte_level = "ByteLevel" in repr(tokenizer.backend_tokenizer.decoder)
    special = set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab())
    out: dict[str, int] = {}
    fallback: dict[str, int] = {}
    for token_id, token in enumerate(_vocabulary(tokenizer)):
        if token is None:
            continue
        if token in special:
            out.setdefault(token.encode().hex(), token_id)
        elif byte_level and all(c in byte_of for c in token):
            out.setdefault(bytes(byte_of[c] for c in token).hex(), token_id)
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", token):
            fallback.setdefault(token[3:5].lower(), token_id)
        else:
            out.setdefault(token.replace("▁", " ").encode().hex(), token_id)
    return {**fallback, **out}


def _byte_level_chars() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character → byte: printable bytes stand for themselves, the other
    68 (space, control bytes, ...) for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


def recorded_ids(rec: dict[str, Any], pieces: dict[str, int] | None) -> tuple[dict[str, Any], int]:
    """A recording with its tokens as ids (a server's, named by bytes, read through `pieces`) and how
    many of its written tokens the student's vocabulary lacks. An unknown written token is -1 (it
    matches nothing); an unknown alternative is left out with its probability, and where none is
    known the written token is its own target."""
    if "ids" in rec:
        return rec, 0
    if "pieces" not in rec or "top_pieces" not in rec or pieces is None:
        raise UserError("written.jsonl: a recording without the written tokens (ids or pieces); delete it and rerun "
                        "`cotdistill run`")
    ids = [pieces.get(h, -1) for h in rec["pieces"]]
    top_ids, top_p = [], []
    for written, alternatives, ps in zip(ids, rec["top_pieces"], rec["top_p"]):
        kept = [(pieces[h], p) for h, p in zip(alternatives, ps) if h in pieces] or [(written, 1.0)]
        top_ids.append([i for i, _ in kept])
        top_p.append([p for _, p in kept])
    return {**rec, "ids": ids, "top_ids": top_ids, "top_p": top_p}, ids.count(-1)


def written_row(enc: dict[str, list[int]], recordings: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """The targets row of one training sequence from the recording that covers most of its target
    tokens (a label-only row where none does), and how many of its positions it covers. A view the
    recording lacks (a server records no sampled draws) is left empty."""
    labels = [enc["labels"][t + 1] for t in target_rows(enc)]
    best: list[int | None] = [None] * len(labels)
    source: dict[str, Any] = {}
    for rec in recordings:
        matched = align(labels, rec["ids"])
        if sum(m is not None for m in matched) > sum(m is not None for m in best):
            best, source = matched, rec
    row: dict[str, Any] = {"key": sequence_key(enc)}
    for ids, weights in (("sampled_ids", "sampled_w"), ("top_ids", "top_p")):
        if source and ids not in source:
            row[ids], row[weights] = [], []
            continue
        row[ids] = [source[ids][j] if j is not None else [label] for j, label in zip(best, labels)]
        row[weights] = [source[weights][j] if j is not None else [1.0] for j, label in zip(best, labels)]
    return row, sum(m is not None for m in best)


def align_written(sources: list[tuple[Path, str]], student: str, max_len: int, written: Path, out: Path,
                  quiet: bool = False) -> dict[str, Any]:
    """The teacher-targets stage in the written context: each training sequence's targets from the
    teacher's recording of the CoT it holds (no teacher runs)."""
    from cotdistill.training.collate import encode, fits, read_pairs

    tokenizer = _student_tokenizer(student, quiet)
    recordings = read_written(written)
    pieces = piece_ids(tokenizer) if any("pieces" in r for rs in recordings.values() for r in rs) else None
    unknown = total = 0
    for group, recs in recordings.items():
        for i, rec in enumerate(recs):
            recs[i], n = recorded_ids(rec, pieces)
            unknown, total = unknown + n, total + len(recs[i]["ids"])
    if unknown > 0.05 * total:
        raise UserError(f"{written}: {unknown} of the {total} tokens the teacher wrote are not in {student}'s vocabulary: "
                        "teacher and student tokenize differently; use a student with the teacher's tokenizer")
    rows: dict[str, dict[str, Any]] = {}
    positions = covered = 0
    for data, mode in sources:
        for pair in read_pairs(data, mode):
            enc = encode(pair, tokenizer, False)
            if not fits(enc, max_len) or sequence_key(enc) in rows:
                continue
            row, n = written_row(enc, recordings.get(pair.group, []))
            rows[row["key"]] = row
            positions += len(row["top_ids"])
            covered += n
    if positions and covered < 0.5 * positions and not quiet:
        console.print(f"[yellow]teacher targets: only {covered} of {positions} target tokens match a token the teacher "
                      "wrote (the rest train on cross-entropy alone); teacher and student may tokenize differently[/yellow]")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_lines_atomic(out, [jsonl_line(row) for row in rows.values()])
    return {"sequences": len(rows), "positions": positions, "recorded_positions": covered,
            "recorded_percent": round(100 * covered / max(positions, 1), 1), "bytes": out.stat().st_size,
            "bytes_per_position": round(out.stat().st_size / max(positions, 1), 1), "context": "written"}


def attach_targets(encoded: list[dict[str, list[int]]], path: Path, loss: str) -> None:
    """Give each encoded sequence its sparse targets (`kd_ids`, `kd_w`: one list per target token),
    in place; top-k probabilities renormalised to sum to 1, as top-k KD trains on them."""
    targets = read_targets(path)
    missing = sum(sequence_key(e) not in targets for e in encoded)
    if missing:
        raise UserError(f"{path}: the teacher's targets of {missing} of {len(encoded)} training sequences are missing; "
                        "rerun `cotdistill run` (its teacher-targets stage scores them)")
    for enc in encoded:
        row = targets[sequence_key(enc)]
        if loss == SAMPLED and row["top_ids"] and not row["sampled_ids"]:
            raise UserError(f"{path}: the teacher recorded its top logprobs only (a server does), not draws from its "
                            "whole distribution: use student.distill: top-k")
        if loss == SAMPLED:
            enc["kd_ids"], enc["kd_w"] = row["sampled_ids"], row["sampled_w"]
        else:
            enc["kd_ids"] = row["top_ids"]
            enc["kd_w"] = [[p / sum(ps) for p in ps] for ps in row["top_p"]]
        if len(enc["kd_ids"]) != len(target_rows(enc)):
            raise UserError(f"{path}: a row does not match its training sequence; delete the file and rerun")


def _student_tokenizer(student: str, quiet: bool) -> Any:
    """The tokenizer of a decoder-only student (an encoder-decoder one gets the line saying why not)."""
    from transformers import AutoConfig, AutoTokenizer

    from cotdistill.models.students import resolve

    source = resolve(student, quiet=quiet)
    if getattr(AutoConfig.from_pretrained(source), "is_encoder_decoder", False):
        raise UserError(f"student.distill: {student} is an encoder-decoder model; the teacher's probabilities are "
                        "scored on causal sequences (prompt, CoT, answer), so use a decoder-only student or distill: off")
    return AutoTokenizer.from_pretrained(source)


def _vocabulary(tokenizer: Any) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


def check_pair(teacher: str, student: str, max_len: int, quiet: bool = False) -> None:
    """Before the teacher is paid for anything: can it score this student's sequences at all?"""
    tokenizer = _student_tokenizer(student, quiet)
    scorer = open_scorer(teacher, n_ctx=max_len)
    try:
        check_vocabulary(scorer.vocabulary(), scorer.name, _vocabulary(tokenizer), student)
    finally:
        scorer.close()


def score_training_data(sources: list[tuple[Path, str]], student: str, settings: TargetSettings, max_len: int,
                        out: Path, quiet: bool = False) -> dict[str, Any]:
    """The teacher-targets stage: every sequence the students will train on, from each (distill file,
    training mode) of `sources`, encoded as training encodes it and scored into `out`."""
    from cotdistill.core.progress import progress_bar
    from cotdistill.training.collate import encode_all, read_pairs

    tokenizer = _student_tokenizer(student, quiet)
    encoded = [e for data, mode in sources for e in encode_all(read_pairs(data, mode), tokenizer, False, max_len)[0]]
    scorer = open_scorer(settings.teacher, n_ctx=max_len)
    try:
        check_vocabulary(scorer.vocabulary(), scorer.name, _vocabulary(tokenizer), student)
        with progress_bar(quiet) as bar:
            task = bar.add_task("teacher targets", total=len(encoded))
            return score_sequences(encoded, scorer, settings, out, on_done=lambda: bar.advance(task))
    finally:
        scorer.close()
