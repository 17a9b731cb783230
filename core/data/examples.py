"""Datasets: local files, hub datasets and shipped data, read into prompt/response examples.

A `DatasetRef` names where rows come from (`source`, `format`) and how rows become examples
(`schema`, `columns`, `offset`, `limit`). Reading (`read_rows`) and interpreting (`load_examples`,
`load_mc_questions`) are separate so evaluation code can read raw rows of shipped files too.
Every problem a user can fix raises `DataError` naming the file, row or column and the fix; the
service passes these messages to API callers unchanged.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.core.data.files import DataError, builtin_names, builtin_path, hub_rows, parse_file
from lethe.core.data.subjects import select_subjects
from lethe.core.spec.fields import BookOptions, DatasetRef

__all__ = [
    "SCHEMA_COLUMNS",
    "DataError",
    "Example",
    "MCQuestion",
    "book_pairs",
    "builtin_names",
    "load_examples",
    "load_mc_questions",
    "read_rows",
    "resolve_source",
]

HUB_PREFIX = "hf:"
BUILTIN_PREFIX = "builtin:"
SERVICE_PREFIXES = ("dataset:", "s3://")

# Per schema: canonical field -> default column. A ref's `columns` maps a field to another column;
# without a mapping the default column is used, else a column named like the field itself (so
# the hub's lower-case TruthfulQA export works without a mapping, like the upstream CSV).
SCHEMA_COLUMNS: dict[str, dict[str, str]] = {
    "pairs": {"prompt": "prompt", "response": "response"},
    "prompts": {"prompt": "prompt"},
    "pku_saferlhf": {
        "prompt": "prompt",
        "response_0": "response_0",
        "response_1": "response_1",
        "is_response_0_safe": "is_response_0_safe",
        "is_response_1_safe": "is_response_1_safe",
    },
    "truthfulqa": {
        "question": "Question",
        "best_answer": "Best Answer",
        "correct_answers": "Correct Answers",
        "incorrect_answers": "Incorrect Answers",
    },
    "book": {"text": "text"},
}


@dataclass(frozen=True)
class Example:
    """One prompt and its answer; `response` is "" for prompt-only data (schema `prompts`)."""

    id: str
    prompt: str
    response: str


@dataclass(frozen=True)
class MCQuestion:
    """A TruthfulQA-style multiple-choice question.

    MC1: exactly one right answer, `mc1_choices[mc1_correct]`. MC2: several answers, each labelled
    1 (true) or 0 (false) in `mc2_labels`, aligned with `mc2_choices`.
    """

    id: str
    question: str
    mc1_choices: list[str]
    mc1_correct: int
    mc2_choices: list[str]
    mc2_labels: list[int]


def resolve_source(source: str, base_dir: Path | None) -> Path | str:
    """Turn a `source` into a local file path, or return an `hf:` source unchanged.

    Relative paths are taken from `base_dir` (the spec file's folder); `builtin:NAME` is the file
    with stem NAME shipped in `core/data/builtin/`. `dataset:` and `s3://` sources live in the service's
    storage, which the engine cannot read: the service replaces them with a local path first.
    """
    if source.startswith(SERVICE_PREFIXES):
        raise DataError(
            f"source {source!r} refers to service storage and must be resolved by the "
            "service first; the engine reads local paths, hf:ORG/NAME and builtin:NAME"
        )
    if source.startswith(HUB_PREFIX):
        if not source[len(HUB_PREFIX) :].strip("/"):
            raise DataError(f"source {source!r} names no dataset; write hf:ORG/NAME")
        return source
    if source.startswith(BUILTIN_PREFIX):
        return builtin_path(source[len(BUILTIN_PREFIX) :])
    path = Path(source).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        where = f" (relative paths are taken from {base_dir})" if base_dir is not None else ""
        raise DataError(f"dataset file {path} not found{where}; check `source`")
    return path


def _read(ref: DatasetRef, base_dir: Path | None) -> tuple[list[dict[str, Any]], str]:
    """Rows of the dataset (of its selected subjects) and the label that errors and ids use."""
    rows, label = _read_all(ref, base_dir)
    if ref.subjects is not None:
        rows = select_subjects(rows, ref.subjects, label)
    return rows, label


def _read_all(ref: DatasetRef, base_dir: Path | None) -> tuple[list[dict[str, Any]], str]:
    resolved = resolve_source(ref.source, base_dir)
    if isinstance(resolved, str):
        if ref.format not in ("auto", "hub"):
            raise DataError(
                f"source {ref.source!r} is a hub dataset, read with the datasets "
                f"library; set format: hub (or auto) instead of {ref.format}"
            )
        name = resolved[len(HUB_PREFIX) :]
        return hub_rows(name, ref.split or "train", ref.revision), resolved
    if ref.format == "hub":
        raise DataError(f"format: hub needs a source of the form hf:ORG/NAME, got {ref.source!r}")
    rows = parse_file(resolved, ref.format)
    if not rows:
        raise DataError(f"{resolved} has no data rows")
    return rows, str(resolved)


def read_rows(ref: DatasetRef, base_dir: Path | None = None) -> list[dict[str, Any]]:
    """The raw rows of a dataset (no schema applied); a text file is one row {"text": ...}."""
    return _read(ref, base_dir)[0]


def _columns(
    ref: DatasetRef, rows: list[dict[str, Any]], label: str, fields: tuple[str, ...]
) -> dict[str, str]:
    """Map each needed field of the schema to the column holding it, or say what is missing."""
    defaults = SCHEMA_COLUMNS[ref.schema_]
    unknown = sorted(set(ref.columns) - set(defaults))
    if unknown:
        raise DataError(
            f"columns: {unknown} are not fields of schema {ref.schema_}; its fields are "
            f"{list(defaults)} (the mapping is field -> column in your file)"
        )
    found = list(dict.fromkeys(key for row in rows for key in row))
    mapping: dict[str, str] = {}
    for name in fields:
        candidates = [ref.columns[name]] if name in ref.columns else [defaults[name], name]
        column = next((c for c in candidates if c in found), None)
        if column is None:
            raise DataError(
                f"{label}: column {candidates[0]!r} (field {name!r} of schema "
                f"{ref.schema_}) not found; columns found: {found}. Map the field to "
                f"your column with `columns: {{{name}: YOUR_COLUMN}}`"
            )
        mapping[name] = column
    return mapping


def _text(row: dict[str, Any], column: str, index: int, label: str, required: bool = True) -> str:
    """The stripped text in `column` of a row; a missing or non-text value is an error, and so is
    an empty one if `required`."""
    value = row.get(column)
    if isinstance(value, str) and (value.strip() or not required):
        return value.strip()
    problem = (
        "is missing"
        if value is None
        else "is empty"
        if isinstance(value, str)
        else f"holds a {type(value).__name__}, not text"
    )
    raise DataError(
        f"{label}: row {index + 1}: column {column!r} {problem}; every row needs "
        "non-empty text there (fix or remove the row)"
    )


def _flag(row: dict[str, Any], column: str, index: int, label: str) -> bool:
    """A boolean column: true/false, or the strings "true"/"false" (as CSV files hold them)."""
    value = row.get(column)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(f"{label}: row {index + 1}: column {column!r} must be true or false, got {value!r}")


def _answers(row: dict[str, Any], column: str, index: int, label: str) -> list[str]:
    """A list of answers: a `;`-separated string (TruthfulQA CSV) or a list of strings."""
    value = row.get(column)
    if isinstance(value, str):
        parts = value.split(";")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        parts = value
    else:
        raise DataError(
            f"{label}: row {index + 1}: column {column!r} must be a ';'-separated "
            f"string or a list of strings, got {type(value).__name__}"
        )
    return list(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _id_base(label: str) -> str:
    return label.rsplit("/", 1)[-1]


def _pairs(ref: DatasetRef, rows: list[dict[str, Any]], label: str) -> list[Example]:
    cols = _columns(ref, rows, label, ("prompt", "response"))
    # an empty answer is allowed: a judge's check set holds empty (degenerate) answers
    return [
        Example(
            f"{_id_base(label)}:{i}",
            _text(row, cols["prompt"], i, label),
            _text(row, cols["response"], i, label, required=False),
        )
        for i, row in enumerate(rows)
    ]


def _prompts(ref: DatasetRef, rows: list[dict[str, Any]], label: str) -> list[Example]:
    cols = _columns(ref, rows, label, ("prompt",))
    return [
        Example(f"{_id_base(label)}:{i}", _text(row, cols["prompt"], i, label), "")
        for i, row in enumerate(rows)
    ]


def _pku(ref: DatasetRef, rows: list[dict[str, Any]], label: str) -> list[Example]:
    """Each response marked unsafe becomes a forget example: 0, 1 or 2 per row."""
    fields = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")
    cols = _columns(ref, rows, label, fields)
    examples = []
    for i, row in enumerate(rows):
        prompt = _text(row, cols["prompt"], i, label)
        for k in (0, 1):
            if not _flag(row, cols[f"is_response_{k}_safe"], i, label):
                response = _text(row, cols[f"response_{k}"], i, label)
                examples.append(Example(f"{_id_base(label)}:{i}:{k}", prompt, response))
    if not examples:
        raise DataError(
            f"{label}: schema pku_saferlhf keeps only responses marked unsafe, and "
            "every response is marked safe; check the is_response_*_safe columns"
        )
    return examples


def _truthfulqa(ref: DatasetRef, rows: list[dict[str, Any]], label: str) -> list[Example]:
    cols = _columns(ref, rows, label, ("question", "best_answer"))
    return [
        Example(
            f"{_id_base(label)}:{i}",
            _text(row, cols["question"], i, label),
            _text(row, cols["best_answer"], i, label),
        )
        for i, row in enumerate(rows)
    ]


def _book(ref: DatasetRef, rows: list[dict[str, Any]], label: str) -> list[Example]:
    cols = _columns(ref, rows, label, ("text",))
    # a blank line between rows keeps a row's end from running into the next row's first sentence
    text = "\n\n".join(_text(row, cols["text"], i, label) for i, row in enumerate(rows))
    examples = book_pairs(text, ref.book, _id_base(label))
    if not examples:
        need = ref.book.prefix_chars + ref.book.continuation_chars
        raise DataError(
            f"{label}: the text ({len(text)} characters) is too short for one "
            f"prefix/continuation pair of {need} characters; lower "
            "book.prefix_chars / book.continuation_chars or use a longer text"
        )
    return examples


_SCHEMAS = {
    "pairs": _pairs,
    "prompts": _prompts,
    "pku_saferlhf": _pku,
    "truthfulqa": _truthfulqa,
    "book": _book,
}


def _window(items: list[Any], ref: DatasetRef, label: str) -> list[Any]:
    """Apply `offset`/`limit` to the examples a schema produced; an empty result is an error."""
    end = None if ref.limit is None else ref.offset + ref.limit
    kept = items[ref.offset : end]
    if not kept:
        raise DataError(
            f"{label}: no examples left after offset={ref.offset} (the dataset gives "
            f"{len(items)}); lower `offset`"
        )
    return kept


def load_examples(ref: DatasetRef, base_dir: Path | None = None) -> list[Example]:
    """Read a dataset and turn its rows into examples by `ref.schema`, then apply offset/limit."""
    rows, label = _read(ref, base_dir)
    return _window(_SCHEMAS[ref.schema_](ref, rows, label), ref, label)


def _mc_question(row: dict[str, Any], cols: dict[str, str], index: int, label: str) -> MCQuestion:
    question = _text(row, cols["question"], index, label)
    best = _text(row, cols["best_answer"], index, label)
    true_answers = list(dict.fromkeys([best, *_answers(row, cols["correct_answers"], index, label)]))
    # an answer listed as both correct and incorrect would be labelled both ways in MC2: keep it true
    false_answers = [
        a for a in _answers(row, cols["incorrect_answers"], index, label) if a not in true_answers
    ]
    if not false_answers:
        raise DataError(
            f"{label}: row {index + 1}: column {cols['incorrect_answers']!r} has no "
            "incorrect answer; multiple choice needs at least one"
        )
    return MCQuestion(
        id=f"{_id_base(label)}:{index}",
        question=question,
        mc1_choices=[best, *false_answers],
        mc1_correct=0,
        mc2_choices=true_answers + false_answers,
        mc2_labels=[1] * len(true_answers) + [0] * len(false_answers),
    )


def load_mc_questions(ref: DatasetRef, base_dir: Path | None = None) -> list[MCQuestion]:
    """Multiple-choice questions (MC1/MC2) from TruthfulQA-layout rows; offset/limit apply."""
    if ref.schema_ != "truthfulqa":
        raise DataError(
            f"multiple-choice data needs schema: truthfulqa, got schema: {ref.schema_} for {ref.source}"
        )
    rows, label = _read(ref, base_dir)
    fields = ("question", "best_answer", "correct_answers", "incorrect_answers")
    cols = _columns(ref, rows, label, fields)
    questions = [_mc_question(row, cols, i, label) for i, row in enumerate(rows)]
    return _window(questions, ref, label)


# A sentence ends at . ! or ? (possibly inside closing quotes or brackets) followed by
# whitespace; a title such as "Mr." does not end one (novels are full of them).
_SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+")
_TITLES = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Sr.", "Jr.", "Prof.")
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def _normalise(text: str) -> tuple[str, list[int]]:
    """Collapse whitespace runs to one space; return the text and its sentence start offsets."""
    starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for paragraph in _BLANK_LINE.split(text):
        flat = " ".join(paragraph.split())
        if not flat:
            continue
        starts.append(offset)  # a paragraph (after a blank line) always begins a sentence
        for match in _SENTENCE_END.finditer(flat):
            if match.end() < len(flat) and not flat[: match.start() + 1].endswith(_TITLES):
                starts.append(offset + match.end())
        parts.append(flat)
        offset += len(flat) + 1
    return " ".join(parts), starts


def book_pairs(text: str, options: BookOptions, id_prefix: str) -> list[Example]:
    """Cut a text into (prefix, continuation) examples of exactly the configured lengths.

    Whitespace runs become single spaces first. Pair k+1 starts `stride_chars` after pair k's
    start (default prefix+continuation: adjacent pairs); with `start_at_sentence` each start then
    moves forward to the next sentence beginning. A trailing piece too short for a pair is dropped.
    """
    flat, starts = _normalise(text)
    window = options.prefix_chars + options.continuation_chars
    stride = options.stride_chars or window
    examples: list[Example] = []
    position = 0
    while True:
        start = position
        if options.start_at_sentence:
            at = bisect.bisect_left(starts, position)
            if at == len(starts):
                break
            start = starts[at]
        if start + window > len(flat):
            break
        cut = start + options.prefix_chars
        prefix, continuation = flat[start:cut], flat[cut : start + window]
        examples.append(Example(f"{id_prefix}:{len(examples)}", prefix, continuation))
        position = start + stride
    return examples
