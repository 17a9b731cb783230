"""Erasure requests by subject (`unlearn.erase`): row selection, spec expansion and validation,
the shipped example, and how the report and the certificate name the erased subjects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lethe.cli.main import main
from lethe.core.data.examples import DataError, load_examples
from lethe.core.data.subjects import select_subjects
from lethe.core.run.report_privacy import erasure_section
from lethe.core.spec.fields import DatasetRef, SubjectRows
from lethe.core.spec.job import SpecError, load_spec, parse_spec
from lethe.core.spec.subjects import erasure_of

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data"
ROWS = [
    {"subject": "Ada Example", "prompt": "q1", "response": "a1"},
    {"subject": "Bo Sample", "prompt": "q2", "response": "a2"},
    {"subject": "Ada Example", "prompt": "q3", "response": "a3"},
    {"subject": "Cy Person", "prompt": "q4", "response": "a4"},
]


def _prompts(rows: list[dict[str, Any]]) -> list[str]:
    return [r["prompt"] for r in rows]


# ------------------------------------------------------------------ selection
def test_include_keeps_only_the_named_subjects_rows_in_order() -> None:
    kept = select_subjects(ROWS, SubjectRows(include=["Ada Example", "Cy Person"]), "d.jsonl")
    assert _prompts(kept) == ["q1", "q3", "q4"]


def test_exclude_keeps_every_other_subjects_rows() -> None:
    assert _prompts(select_subjects(ROWS, SubjectRows(exclude=["Ada Example"]), "d.jsonl")) == ["q2", "q4"]


def test_unknown_subjects_are_listed_with_the_closest_names() -> None:
    with pytest.raises(DataError) as err:
        select_subjects(ROWS, SubjectRows(include=["Ada Example", "ada example", "Nobody"]), "d.jsonl")
    msg = str(err.value)
    assert "2 subject(s) not found in column 'subject': 'ada example', 'Nobody'" in msg
    assert "'ada example' -> 'Ada Example'" in msg and "3 subjects" in msg


def test_an_exclusion_is_checked_too_a_typo_would_keep_the_persons_rows() -> None:
    with pytest.raises(DataError, match="'Ada Exampel'"):
        select_subjects(ROWS, SubjectRows(exclude=["Ada Exampel"]), "d.jsonl")


def test_missing_column_row_without_subject_and_nobody_left_are_errors() -> None:
    with pytest.raises(DataError, match="no column 'person'.*columns found: \\['subject', 'prompt'"):
        select_subjects(ROWS, SubjectRows(field="person", include=["Ada Example"]), "d.jsonl")
    with pytest.raises(DataError, match="row 2 has no subject"):
        select_subjects(
            [ROWS[0], {"prompt": "q", "response": "a"}], SubjectRows(include=["Ada Example"]), "d"
        )
    everyone = ["Ada Example", "Bo Sample", "Cy Person"]
    with pytest.raises(DataError, match="no subject is left"):
        select_subjects(ROWS, SubjectRows(exclude=everyone), "d.jsonl")


def test_selection_comes_before_offset_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "people.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    ref = DatasetRef.model_validate(
        {"source": str(path), "subjects": {"exclude": ["Ada Example"]}, "offset": 1, "limit": 1}
    )
    assert [e.prompt for e in load_examples(ref)] == ["q4"]


def test_subject_rows_need_exactly_one_list_of_clean_names() -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        SubjectRows(include=["a"], exclude=["b"])
    with pytest.raises(ValueError, match="exactly one of"):
        SubjectRows()
    with pytest.raises(ValueError, match="subject name is empty"):
        SubjectRows(include=["a", "  "])
    assert SubjectRows(include=[" a", "a", "b"]).include == ["a", "b"]


# ------------------------------------------------------------------ the spec
def _spec(**erase: Any) -> dict[str, Any]:
    return {
        "model": {"name": "tiny-llama"},
        "unlearn": {
            "method": "yao",
            "erase": {"source": "people.jsonl", "subjects": ["Ada Example"], **erase},
            "train": {"steps": 2},
        },
        "eval": {"privacy": {"holdout": {"source": "holdout.jsonl"}}},
    }


def test_erase_expands_to_forget_normal_and_the_privacy_people() -> None:
    spec = parse_spec(_spec(subject_field="person", retain_limit=7))
    forget, normal = spec.unlearn.forget, spec.unlearn.normal
    assert forget.source == "people.jsonl" and forget.subjects == SubjectRows(
        field="person", include=["Ada Example"]
    )
    assert normal is not None and normal.limit == 7
    assert normal.subjects == SubjectRows(field="person", exclude=["Ada Example"])
    privacy = spec.eval.privacy
    assert privacy is not None and privacy.forget == forget
    assert privacy.retain.subjects == normal.subjects and privacy.retain.limit is None
    # stored as the expansion (the API stores exclude_unset dumps), which parses to the same spec
    stored = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert "erase" not in stored["unlearn"] and stored["unlearn"]["forget"]["subjects"]["include"] == [
        "Ada Example"
    ]
    again = parse_spec(stored)
    assert again.unlearn.forget == forget and again.unlearn.normal == normal
    assert erasure_of(stored) == {
        "subjects": ["Ada Example"],
        "subject_field": "person",
        "source": "people.jsonl",
    }


def test_erase_keeps_dataset_options_unset_so_an_upload_brings_its_own() -> None:
    forget = parse_spec(_spec()).unlearn.forget
    assert forget.model_fields_set == {"source", "subjects"}
    with_schema = parse_spec(_spec(format="csv", columns={"prompt": "q"})).unlearn.forget
    assert with_schema.format == "csv" and with_schema.columns == {"prompt": "q"}
    # the expansion meets the stage's own checks: prompts alone have no answers to train on
    with pytest.raises(SpecError, match="unlearn.forget has schema 'prompts'"):
        parse_spec(_spec(schema="prompts"))


def test_a_normal_set_given_with_the_request_is_used_as_given() -> None:
    data = _spec()
    data["unlearn"]["normal"] = {"source": "general.jsonl"}
    spec = parse_spec(data)
    assert spec.unlearn.normal is not None and spec.unlearn.normal.source == "general.jsonl"
    assert spec.unlearn.normal.subjects is None


def test_assignment_after_expansion_is_not_mistaken_for_a_second_forget_set() -> None:
    spec = parse_spec(_spec())
    spec.unlearn.forget_answers_from = "model"  # re-runs the stage's validators
    assert spec.unlearn.forget.subjects is not None


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda s: s["unlearn"].update(forget={"source": "f.jsonl"}), "mutually exclusive"),
        (lambda s: s["unlearn"].pop("erase"), "unlearn.forget is required (or name the subjects"),
        (lambda s: s["unlearn"]["erase"].update(subjects=[]), "subjects: List should have at least 1 item"),
        (lambda s: s["unlearn"]["erase"].update(subjects=["x", " "]), "subject name is empty"),
        (
            lambda s: s["unlearn"]["erase"].update(surprise=1),
            "erase.surprise: Extra inputs are not permitted",
        ),
        (lambda s: s["unlearn"]["erase"].update(retain_limit=0), "retain_limit: Input should be greater"),
        (lambda s: s["unlearn"]["erase"].update(subject_field=""), "subject_field: String should match"),
    ],
)
def test_bad_erasure_requests_name_the_field(change: Any, message: str) -> None:
    data = _spec()
    change(data)
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert message in str(err.value)


def test_privacy_people_are_required_without_an_erasure_request() -> None:
    data = _spec()
    data["unlearn"] = {"method": "ga", "forget": {"source": "f.jsonl"}, "train": {"steps": 2}}
    with pytest.raises(SpecError, match="eval.privacy.forget is required"):
        parse_spec(data)


# ------------------------------------------------------------------ the example and `lethe validate`
def test_the_erasure_example_reads_the_same_data_as_the_file_based_one() -> None:
    erase = load_spec(ROOT / "examples" / "privacy-erase-smollm2-cpu.yaml")
    files = load_spec(ROOT / "examples" / "privacy-smollm2-cpu.yaml")

    def texts(ref: DatasetRef | None) -> list[tuple[str, str]]:
        assert ref is not None
        return [(e.prompt, e.response) for e in load_examples(ref)]

    assert texts(erase.unlearn.forget) == texts(files.unlearn.forget)
    assert texts(erase.unlearn.normal) == texts(files.unlearn.normal)
    assert erase.eval.privacy is not None and files.eval.privacy is not None
    assert texts(erase.eval.privacy.forget) == texts(files.eval.privacy.forget)
    assert texts(erase.eval.privacy.retain) == texts(files.eval.privacy.retain)


def test_lethe_validate_refuses_a_subject_not_in_the_local_file(tmp_path: Path, capsys: Any) -> None:
    data = yaml.safe_load((ROOT / "examples" / "privacy-erase-smollm2-cpu.yaml").read_text())
    data["unlearn"]["erase"]["source"] = str(DATA / "privacy_train.jsonl")
    data["unlearn"]["erase"]["subjects"] = ["Amos Holloway", "Amos Hollowey"]
    data["eval"]["privacy"]["holdout"]["source"] = str(DATA / "privacy_holdout.jsonl")
    data["finetune"]["data"]["source"] = str(DATA / "privacy_train.jsonl")
    path = tmp_path / "erase.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "1 subject(s) not found in column 'subject': 'Amos Hollowey'" in err
    assert "'Amos Hollowey' -> 'Amos Holloway'" in err


# ------------------------------------------------------------------ evidence
def test_the_report_names_the_erased_subjects_and_other_runs_get_no_section() -> None:
    stored = parse_spec(_spec()).model_dump(mode="json", by_alias=True, exclude_unset=True)
    html = erasure_section(stored)
    assert "erase 1 subject(s)" in html and "<li>Ada Example</li>" in html and "people.jsonl" in html
    assert erasure_section({"unlearn": {"forget": {"source": "f.jsonl"}}}) == ""
    assert erasure_of({"unlearn": {"forget": {"source": "f", "subjects": {"exclude": ["x"]}}}}) is None
