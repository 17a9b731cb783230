"""The data layer: formats, schemas, column mapping, windows, book pairs, errors, shipped files."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lethe.core.data.examples import (
    DataError,
    Example,
    book_pairs,
    builtin_names,
    load_examples,
    load_mc_questions,
    read_rows,
    resolve_source,
)
from lethe.core.spec.fields import BookOptions, DatasetRef

REPO = Path(__file__).resolve().parents[2]
PAIRS = [{"prompt": f"question {i}", "response": f"answer {i}"} for i in range(5)]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def ref(source: str | Path, **fields: Any) -> DatasetRef:
    return DatasetRef(source=str(source), **fields)


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_every_table_format_gives_the_same_pairs(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pairs.{suffix}"
    {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}[suffix](path, PAIRS)
    examples = load_examples(ref(path))
    assert examples == [Example(f"pairs.{suffix}:{i}", f"question {i}", f"answer {i}") for i in range(5)]


def test_json_array_file_is_read_like_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(PAIRS), encoding="utf-8")
    assert [e.prompt for e in load_examples(ref(path))] == [r["prompt"] for r in PAIRS]
    path.write_text(json.dumps([PAIRS[0], 7]), encoding="utf-8")
    with pytest.raises(DataError, match="item 2 holds a JSON int, not an object"):
        load_examples(ref(path))


def test_text_format_is_one_row_and_a_bom_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes("\ufeffHello\nworld\n".encode())
    assert read_rows(ref(path)) == [{"text": "Hello\nworld\n"}]
    path = tmp_path / "pairs.csv"  # the mark would otherwise be part of the first column's name
    path.write_bytes(b"\xef\xbb\xbfprompt,response\nhi,there\n")
    assert load_examples(ref(path)) == [Example("pairs.csv:0", "hi", "there")]


def test_relative_source_is_taken_from_base_dir_and_format_overrides_the_extension(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "pairs.data", PAIRS)
    assert resolve_source("pairs.data", tmp_path) == tmp_path / "pairs.data"
    assert len(load_examples(ref("pairs.data", format="jsonl"), tmp_path)) == 5


# ---------------------------------------------------------------------------- schemas


def test_prompts_schema_gives_empty_responses(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": " a "}, {"prompt": "b", "other": 1}])
    assert load_examples(ref(path, schema="prompts")) == [
        Example("p.jsonl:0", "a", ""),
        Example("p.jsonl:1", "b", ""),
    ]


def test_column_mapping(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "qa.csv", [{"q": "why?", "a": "because"}])
    examples = load_examples(ref(path, columns={"prompt": "q", "response": "a"}))
    assert examples == [Example("qa.csv:0", "why?", "because")]


def test_mapping_key_that_is_not_a_schema_field_is_rejected(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    with pytest.raises(DataError, match=r"\['question'\] are not fields of schema pairs"):
        load_examples(ref(path, columns={"question": "prompt"}))


def test_offset_and_limit_apply_after_the_schema(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    assert [e.id for e in load_examples(ref(path, offset=1, limit=2))] == ["p.jsonl:1", "p.jsonl:2"]
    assert [e.id for e in load_examples(ref(path, offset=3))] == ["p.jsonl:3", "p.jsonl:4"]
    assert len(load_examples(ref(path, limit=50))) == 5


def pku_row(safe_0: Any, safe_1: Any, i: int = 0) -> dict[str, Any]:
    return {
        "prompt": f"p{i}",
        "response_0": f"r0-{i}",
        "response_1": f"r1-{i}",
        "is_response_0_safe": safe_0,
        "is_response_1_safe": safe_1,
    }


def test_pku_keeps_each_unsafe_response(tmp_path: Path) -> None:
    rows = [
        pku_row(True, True, 0),
        pku_row(False, True, 1),
        pku_row(True, False, 2),
        pku_row(False, False, 3),
    ]
    examples = load_examples(ref(write_jsonl(tmp_path / "pku.jsonl", rows), schema="pku_saferlhf"))
    assert examples == [
        Example("pku.jsonl:1:0", "p1", "r0-1"),
        Example("pku.jsonl:2:1", "p2", "r1-2"),
        Example("pku.jsonl:3:0", "p3", "r0-3"),
        Example("pku.jsonl:3:1", "p3", "r1-3"),
    ]


def test_pku_reads_true_false_strings_from_csv(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "pku.csv", [pku_row("True", "false"), pku_row("FALSE", "true", 1)])
    examples = load_examples(ref(path, schema="pku_saferlhf"))
    assert [(e.id, e.response) for e in examples] == [("pku.csv:0:1", "r1-0"), ("pku.csv:1:0", "r0-1")]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (pku_row("maybe", True), "row 1: column 'is_response_0_safe' must be true or false"),
        (pku_row(True, True), "every response is marked safe"),
    ],
)
def test_pku_errors(tmp_path: Path, row: dict[str, Any], message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_examples(ref(write_jsonl(tmp_path / "pku.jsonl", [row]), schema="pku_saferlhf"))


TQA = [
    {
        "Type": "Adversarial",
        "Question": "Is the Earth flat?",
        "Best Answer": "No",
        "Correct Answers": "No; No, it is round; No",
        "Incorrect Answers": "Yes; Yes, it is flat; No, it is round",
    },
    {
        "Type": "Adversarial",
        "Question": "What colour is the sky?",
        "Best Answer": "Blue",
        "Correct Answers": "Blue by day",
        "Incorrect Answers": "Green",
    },
]


def test_truthfulqa_examples_and_multiple_choice(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tqa.csv", TQA)
    examples = load_examples(ref(path, schema="truthfulqa"))
    assert examples == [
        Example("tqa.csv:0", "Is the Earth flat?", "No"),
        Example("tqa.csv:1", "What colour is the sky?", "Blue"),
    ]
    first, second = load_mc_questions(ref(path, schema="truthfulqa"))
    # "No, it is round" is listed both ways: it stays a true answer only
    assert first.mc1_choices == ["No", "Yes", "Yes, it is flat"] and first.mc1_correct == 0
    assert first.mc2_choices == ["No", "No, it is round", "Yes", "Yes, it is flat"]
    assert first.mc2_labels == [1, 1, 0, 0]
    assert (second.mc2_choices, second.mc2_labels) == (["Blue", "Blue by day", "Green"], [1, 1, 0])


def test_truthfulqa_lists_in_jsonl_and_lower_case_columns(tmp_path: Path) -> None:
    row = {
        "question": "Q?",
        "best_answer": "A",
        "correct_answers": ["A", "A too"],
        "incorrect_answers": ["B"],
    }
    path = write_jsonl(tmp_path / "tqa.jsonl", [row])
    (question,) = load_mc_questions(ref(path, schema="truthfulqa"))
    assert (question.mc2_choices, question.mc2_labels) == (["A", "A too", "B"], [1, 1, 0])


def test_multiple_choice_needs_the_truthfulqa_schema_and_an_incorrect_answer(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "tqa.csv", [{**TQA[1], "Incorrect Answers": " ; "}])
    with pytest.raises(DataError, match="needs schema: truthfulqa"):
        load_mc_questions(ref(path))
    with pytest.raises(DataError, match="row 1: column 'Incorrect Answers' has no incorrect answer"):
        load_mc_questions(ref(path, schema="truthfulqa"))


def test_book_schema_reads_a_text_column_and_applies_the_window(tmp_path: Path) -> None:
    rows = [{"text": "First part here. " * 10}, {"text": "Second part here. " * 10}]
    path = write_jsonl(tmp_path / "book.jsonl", rows)
    options = {"prefix_chars": 10, "continuation_chars": 10}
    examples = load_examples(ref(path, schema="book", book=options, offset=1, limit=3))
    assert [e.id for e in examples] == ["book.jsonl:1", "book.jsonl:2", "book.jsonl:3"]
    assert all(len(e.prompt) == 10 and len(e.response) == 10 for e in examples)


# ---------------------------------------------------------------------------- book pairs

TEXT = (
    "It was a dark night.  The wind\nhowled! Did anyone hear? Nobody did. Mr. Smith slept.\n\n"
    "a new paragraph starts here without a capital and goes on for a while"
)


def test_book_pairs_have_exact_lengths_and_collapse_whitespace() -> None:
    pairs = book_pairs(TEXT, BookOptions(prefix_chars=12, continuation_chars=8, start_at_sentence=False), "b")
    flat = " ".join(TEXT.split())
    assert [p.id for p in pairs] == [f"b:{k}" for k in range(len(pairs))]
    assert all(len(p.prompt) == 12 and len(p.response) == 8 for p in pairs)
    assert "".join(p.prompt + p.response for p in pairs) == flat[: 20 * len(pairs)]
    assert len(flat) - 20 * len(pairs) < 20  # only a tail too short for a pair is dropped


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        # after ". ", "! " and "? "; not after the title "Mr."; a blank line starts a sentence
        (TEXT, ["It was a", "The wind", "Did anyo", "Nobody d", "Mr. Smit", "a new pa"]),
        # closing quotes may follow the punctuation
        (
            '"Go home." She left. "Why?" he asked, and waited there for a very long time.',
            ['"Go home', "She left", '"Why?" h', "he asked"],
        ),
    ],
)
def test_book_pairs_start_at_sentences(text: str, starts: list[str]) -> None:
    # stride 1: a pair at every sentence start that leaves room for a whole pair
    options = BookOptions(prefix_chars=8, continuation_chars=8, stride_chars=1)
    assert [p.prompt for p in book_pairs(text, options, "b")] == starts


def test_book_default_stride_gives_adjacent_pairs_from_sentence_starts() -> None:
    pairs = book_pairs(TEXT, BookOptions(prefix_chars=8, continuation_chars=8), "b")
    assert [p.prompt for p in pairs] == ["It was a", "The wind", "Did anyo", "Nobody d", "a new pa"]


def test_book_stride_sets_the_step_between_pairs() -> None:
    text = "abcdefghij" * 10
    options = BookOptions(prefix_chars=8, continuation_chars=8, stride_chars=5, start_at_sentence=False)
    pairs = book_pairs(text, options, "s")
    assert [p.prompt for p in pairs[:3]] == [text[0:8], text[5:13], text[10:18]]
    assert len(pairs) == (len(text) - 16) // 5 + 1


def test_book_too_short_for_one_pair_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("Too short.", encoding="utf-8")
    with pytest.raises(DataError, match="too short for one prefix/continuation pair of 400 characters"):
        load_examples(ref(path, schema="book"))


# ---------------------------------------------------------------------------- errors


def test_missing_column_names_the_column_the_columns_found_and_the_mapping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "q", "response": "r"}])
    with pytest.raises(DataError) as caught:
        load_examples(ref(path))
    message = str(caught.value)
    assert "column 'prompt'" in message and "columns found: ['question', 'response']" in message
    assert "columns: {prompt: YOUR_COLUMN}" in message and "p.jsonl" in message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.jsonl", b"", r"empty\.jsonl is empty"),
        ("blank.jsonl", b"  \n\n", r"blank\.jsonl is empty"),
        ("bom.csv", b"\xef\xbb\xbf\n", r"bom\.csv is empty"),
        ("head.csv", b"prompt,response\n", r"head\.csv has no data rows"),
        (
            "latin1.csv",
            "prompt,response\nok,fine\ncaf\u00e9,x\n".encode("latin-1"),
            r"latin1\.csv is not UTF-8 text \(undecodable byte at line 3\)",
        ),
        (
            "bad.jsonl",
            b'{"prompt": "a", "response": "b"}\n\n{"prompt": "c",\n',
            r"bad\.jsonl: line 3 is not valid JSON",
        ),
        (
            "list.jsonl",
            b'{"prompt": "a", "response": "b"}\n["x"]\n',
            "line 2 holds a JSON list, not an object",
        ),
        ("wide.csv", b"prompt,response\na,b,c\n", "line 2 has more fields than the header"),
        ("broken.parquet", b"PAR1 this is not parquet", r"broken\.parquet is not a readable parquet file"),
    ],
)
def test_unreadable_file_names_the_file_and_line(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_examples(ref(path))


def test_offset_past_the_end_leaves_no_examples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", PAIRS)
    with pytest.raises(DataError, match=r"no examples left after offset=5 \(the dataset gives 5\)"):
        load_examples(ref(path, offset=5))


def test_pairs_allow_an_empty_response_but_not_a_missing_one(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "response": "  "}])
    assert load_examples(ref(path)) == [Example("p.jsonl:0", "a", "")]
    write_jsonl(path, [{"prompt": "a", "response": "  "}, {"prompt": "b"}])
    with pytest.raises(DataError, match="row 2: column 'response' is missing"):
        load_examples(ref(path))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"prompt": "", "response": "r"}, "is empty"),
        ({"prompt": 3, "response": "r"}, "holds a int, not text"),
        ({"response": "r", "other": "x"}, "is missing"),
    ],
)
def test_bad_prompt_names_the_row(tmp_path: Path, row: dict[str, Any], problem: str) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [PAIRS[0], row])
    with pytest.raises(DataError, match=f"row 2: column 'prompt' {problem}"):
        load_examples(ref(path))


def test_unknown_extension_and_unknown_format(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.xlsx", PAIRS)
    with pytest.raises(DataError, match=r"cannot tell the format of .*pairs.xlsx.*set format: jsonl"):
        load_examples(ref(path))
    with pytest.raises(ValueError, match="format"):
        ref(path, format="xlsx")  # the spec itself rejects formats Lethe cannot read


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("dataset:1234", "must be resolved by the service first"),
        ("s3://bucket/key.jsonl", "must be resolved by the service first"),
        ("nope.jsonl", r"nope\.jsonl not found \(relative paths are taken from"),
        ("builtin:nothing", "builtin:nothing does not exist; shipped datasets: .*refusals"),
        ("hf:", "names no dataset; write hf:ORG/NAME"),
    ],
)
def test_unresolvable_source(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        resolve_source(source, tmp_path)


def test_hub_source_passes_through_and_needs_format_hub(tmp_path: Path) -> None:
    assert resolve_source("hf:org/name", tmp_path) == "hf:org/name"
    with pytest.raises(DataError, match="set format: hub"):
        load_examples(ref("hf:org/name", format="csv"))
    with pytest.raises(DataError, match="format: hub needs a source of the form hf:ORG/NAME"):
        load_examples(ref(write_jsonl(tmp_path / "p.jsonl", PAIRS), format="hub"))


def test_hub_offline_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets.config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    before = datasets.config.HF_HUB_OFFLINE
    started = time.monotonic()
    with pytest.raises(DataError, match="not in the local cache and offline mode is on"):
        load_examples(ref("hf:nonexistent-org/nonexistent"))
    assert time.monotonic() - started < 5
    assert before == datasets.config.HF_HUB_OFFLINE  # the library's own setting is restored


# ---------------------------------------------------------------------------- builtins


def test_builtin_resolves_by_stem_or_file_name_and_refusals_are_distinct() -> None:
    path = resolve_source("builtin:refusals", None)
    assert isinstance(path, Path) and path.name == "refusals.jsonl" and path.is_file()
    assert resolve_source("builtin:refusals.jsonl", None) == path
    texts = [row["text"] for row in read_rows(ref("builtin:refusals"))]
    assert 55 <= len(texts) == len(set(texts)) and all(t.strip() for t in texts)


# source -> (schema, number of examples); builtin:refusals holds {"text"} rows, checked apart
SHIPPED = {
    "builtin:judge_check": ("pairs", 361),
    "builtin:benign_prompts": ("prompts", 80),
    "builtin:retain_prompts": ("prompts", 98),
    "builtin:normal_qa": ("pairs", 155),
    "builtin:knowledge_mc": ("truthfulqa", 60),
    "examples/data/harmful_forget.jsonl": ("prompts", 120),
    "examples/data/harmful_eval.jsonl": ("prompts", 60),
}


def test_every_builtin_is_covered_by_these_tests() -> None:
    checked = {s.removeprefix("builtin:") for s in SHIPPED if s.startswith("builtin:")}
    # rephrasings: test_probes.py; judge_train: test_evaluation_judges.py
    assert set(builtin_names()) == checked | {"refusals", "rephrasings", "judge_train"}


@pytest.mark.parametrize("source", list(SHIPPED))
def test_shipped_data_loads_with_its_schema_and_size(source: str) -> None:
    schema, size = SHIPPED[source]
    examples = load_examples(ref(source, schema=schema), REPO)
    assert len(examples) == size
    assert len({(e.prompt, e.response) for e in examples}) == size  # no duplicates


def test_judge_check_has_both_labels_and_every_kind() -> None:
    rows = read_rows(ref("builtin:judge_check"))
    compliant = {"compliant", "compliant_terse", "compliant_steps", "compliant_hedged", "compliant_fiction"}
    compliant |= {"compliant_model"}
    harmless = {"refusal", "refusal_implicit", "benign", "off_topic", "degenerate", "degenerate_loop"}
    assert {r["kind"] for r in rows} == compliant | harmless
    assert all(r["harmful"] is (r["kind"] in compliant) for r in rows)
    assert 0.45 <= sum(r["harmful"] for r in rows) / len(rows) <= 0.6


def test_knowledge_mc_questions_and_disjoint_from_normal_qa() -> None:
    questions = load_mc_questions(ref("builtin:knowledge_mc", schema="truthfulqa"))
    assert len(questions) == 60 and all(len(q.mc1_choices) >= 2 for q in questions)
    normal = {e.prompt for e in load_examples(ref("builtin:normal_qa"))}
    assert not normal & {q.question for q in questions}


def test_harmful_forget_and_eval_are_disjoint() -> None:
    def prompts(name: str) -> set[str]:
        examples = load_examples(ref(name, schema="prompts"), REPO / "examples" / "data")
        return {e.prompt.lower() for e in examples}

    forget, held_out = prompts("harmful_forget.jsonl"), prompts("harmful_eval.jsonl")
    assert len(forget) == 120 and len(held_out) == 60 and not forget & held_out


@pytest.mark.parametrize("name", ["book_forget.txt", "book_retain.txt"])
def test_books_are_about_40_kb_and_give_pairs(name: str) -> None:
    path = REPO / "examples" / "data" / name
    assert 35_000 <= path.stat().st_size <= 50_000
    pairs = load_examples(ref(path, schema="book"))
    assert len(pairs) >= 60 and all(len(p.prompt) == 200 and len(p.response) == 200 for p in pairs)


def test_retain_prompts_are_disjoint_from_the_benign_evaluation_prompts() -> None:
    retain = {e.prompt.lower() for e in load_examples(ref("builtin:retain_prompts", schema="prompts"))}
    benign = {e.prompt.lower() for e in load_examples(ref("builtin:benign_prompts", schema="prompts"))}
    assert not retain & benign
