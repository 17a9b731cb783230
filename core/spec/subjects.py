"""Selecting a dataset's rows by subject, and the erasure request built on it (`unlearn.erase`).

A right-to-be-forgotten request names people, not files: `unlearn.erase` takes one dataset with a
subject column and the subjects to erase; the spec turns it into `unlearn.forget` (the rows of
those subjects) and `unlearn.normal` (the rows of everyone else), each a `DatasetRef` with a
`subjects` selection (`SubjectRows`), which the data layer applies when it reads the rows
(`lethe.core.data.subjects`). This module imports nothing from `fields` (which imports it), so
it has its own strict base and holds the dataset format and schema names both share.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DatasetSchema = Literal["pairs", "prompts", "pku_saferlhf", "truthfulqa", "book"]
DatasetFormat = Literal["auto", "jsonl", "csv", "parquet", "text", "hub"]
# the fields of an erasure request that say where its dataset is and how to read it: each is
# copied onto the forget and retain references only if the request sets it, so a `dataset:<id>`
# still takes the format, schema and columns declared at upload
READ_FIELDS = ("source", "format", "schema_", "columns", "split", "revision")
COLUMN = r"^[^\x00-\x1f]{1,200}$"


def printable_source(value: str) -> str:
    """A dataset reference without control characters (they would end up in logs and paths)."""
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("source must not contain control characters")
    return value


class _Strict(BaseModel):
    """`fields.StrictModel`'s settings (not imported from there: `fields` imports this module)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def clean_subjects(values: list[str]) -> list[str]:
    """The names stripped, duplicates dropped (first-seen order); a blank name is an error."""
    cleaned = [value.strip() for value in values]
    if any(not name for name in cleaned):
        raise ValueError("a subject name is empty: give each subject as it appears in the dataset")
    return list(dict.fromkeys(cleaned))


class SubjectRows(_Strict):
    """Keep only the rows of some subjects (`include`) or of every subject but some (`exclude`).

    Every named subject must occur in the dataset's `field` column: a misspelt name would otherwise
    keep an erased person's rows in the retain set, or erase nobody."""

    field: str = Field("subject", pattern=COLUMN, description="the column naming each row's subject")
    include: list[str] | None = Field(None, min_length=1, description="keep only these subjects' rows")
    exclude: list[str] | None = Field(None, min_length=1, description="drop these subjects' rows")

    @field_validator("include", "exclude")
    @classmethod
    def _clean(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else clean_subjects(value)

    @model_validator(mode="after")
    def _one_list(self) -> SubjectRows:
        if (self.include is None) == (self.exclude is None):
            raise ValueError("set exactly one of `include` and `exclude`")
        return self

    @property
    def names(self) -> list[str]:
        """The subjects named, whichever list names them."""
        return list(self.include or self.exclude or [])


class EraseSpec(_Strict):
    """An erasure request: forget these subjects' rows of one dataset, retain everyone else's.

    The forget set is the rows whose `subject_field` is one of `subjects`; the retain (normal) set
    is every other row (the first `retain_limit` of them, if set). Where `eval.privacy` is used
    without its own `forget`/`retain`, the same two selections are its forgotten and retained
    people."""

    source: str = Field(
        min_length=1, description="the dataset holding every subject's rows (dataset:<id>, a path, ...)"
    )
    format: DatasetFormat = "auto"
    schema_: DatasetSchema = Field("pairs", alias="schema")
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> column name")
    split: str | None = Field(None, description="hub split (default 'train')")
    revision: str | None = Field(None, description="hub dataset revision")
    subjects: list[str] = Field(
        min_length=1, max_length=10_000, description="the subjects to erase, as the subject column names them"
    )
    subject_field: str = Field("subject", pattern=COLUMN, description="the column naming each row's subject")
    retain_limit: int | None = Field(
        None, ge=1, description="use at most this many rows of the retained subjects as unlearn.normal"
    )

    @field_validator("source")
    @classmethod
    def _printable(cls, value: str) -> str:
        return printable_source(value)

    @field_validator("subjects")
    @classmethod
    def _clean(cls, value: list[str]) -> list[str]:
        return clean_subjects(value)

    def _read_fields(self) -> dict[str, Any]:
        # by alias (`schema`): the result is validated as a DatasetRef
        return {
            ("schema" if name == "schema_" else name): getattr(self, name)
            for name in READ_FIELDS
            if name in self.model_fields_set
        }

    def forget_rows(self) -> SubjectRows:
        return SubjectRows(field=self.subject_field, include=self.subjects)

    def retain_rows(self) -> SubjectRows:
        return SubjectRows(field=self.subject_field, exclude=self.subjects)

    def forget_fields(self) -> dict[str, Any]:
        """A DatasetRef's fields for the erased subjects' rows."""
        return {**self._read_fields(), "subjects": self.forget_rows()}

    def retain_fields(self, limited: bool) -> dict[str, Any]:
        """A DatasetRef's fields for everyone else's rows; `limited`: at most `retain_limit`."""
        fields = {**self._read_fields(), "subjects": self.retain_rows()}
        if limited and self.retain_limit is not None:
            fields["limit"] = self.retain_limit
        return fields


def erasure_of(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The erasure request a dumped spec (a job's stored spec, a run's spec.yaml) carries: the
    subjects its forget set was selected by, their column and dataset; None if it names none.

    Read from the expanded form (`unlearn.forget.subjects.include`), which is how an erasure
    request is stored, so the certificate and the report name the people from what actually ran."""
    forget = (spec.get("unlearn") or {}).get("forget") or {}
    rows = forget.get("subjects") if isinstance(forget, dict) else None
    if not isinstance(rows, dict) or not rows.get("include"):
        return None
    return {
        "subjects": list(rows["include"]),
        "subject_field": rows.get("field", "subject"),
        "source": forget.get("source"),
    }
