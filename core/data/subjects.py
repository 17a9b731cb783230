"""Rows of some subjects: the data side of an erasure request (`DatasetRef.subjects`).

`select_subjects` is applied to a dataset's raw rows before its schema, offset and limit, so the
forget set of `unlearn.erase` is exactly the rows of the named people and the retain set every
other row. It refuses rather than guesses: a named subject missing from the data (a misspelling
would erase nobody, or leave the person's rows in the retain set), a missing subject column, a
row without a subject, or a selection that leaves no row.
"""

from __future__ import annotations

import difflib
from typing import Any

from lethe.core.data.files import DataError
from lethe.core.spec.fields import SubjectRows

SHOWN = 20  # names listed in one message at most


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(repr(n) for n in names[:SHOWN]) + more


def row_subject(row: dict[str, Any], field: str, index: int, label: str) -> str:
    """The stripped subject of one row; a row without one cannot be placed, so it is an error."""
    value = row.get(field)
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value).strip()
    raise DataError(
        f"{label}: row {index + 1} has no subject in column {field!r}; every row of a dataset "
        "selected by subject needs one (fix or remove the row)"
    )


def dataset_subjects(rows: list[dict[str, Any]], field: str, label: str) -> list[str]:
    """The subjects of `rows`, in first-seen order; the column must exist."""
    if not any(field in row for row in rows):
        found = list(dict.fromkeys(key for row in rows for key in row))
        raise DataError(
            f"{label}: no column {field!r} to select subjects by; columns found: {found}. "
            "Name the column that identifies each row's subject (unlearn.erase.subject_field, "
            "or subjects.field)"
        )
    return list(dict.fromkeys(row_subject(row, field, i, label) for i, row in enumerate(rows)))


def missing_subjects_message(missing: list[str], present: list[str], field: str, label: str) -> str:
    """Which names are not in the data, the closest names that are, and how to fix the request."""
    hints = []
    for name in missing[:SHOWN]:
        lowered = {p.casefold(): p for p in present}
        close = [lowered[name.casefold()]] if name.casefold() in lowered else []
        close = close or difflib.get_close_matches(name, present, n=1, cutoff=0.8)
        if close:
            hints.append(f"{name!r} -> {close[0]!r}")
    did_you_mean = f" (did you mean: {'; '.join(hints)}?)" if hints else ""
    return (
        f"{label}: {len(missing)} subject(s) not found in column {field!r}: {_listed(missing)}"
        f"{did_you_mean}. Names must match the column exactly; remove them from the request or "
        f"correct them (the dataset has {len(present)} subjects)"
    )


def select_subjects(rows: list[dict[str, Any]], rows_of: SubjectRows, label: str) -> list[dict[str, Any]]:
    """The rows `rows_of` keeps: those of the `include` subjects, or of all but the `exclude` ones.

    Every named subject must occur; at least one row must remain."""
    present = dataset_subjects(rows, rows_of.field, label)
    known = set(present)
    missing = [name for name in rows_of.names if name not in known]
    if missing:
        raise DataError(missing_subjects_message(missing, present, rows_of.field, label))
    named = set(rows_of.names)
    keep_named = rows_of.include is not None
    kept = [
        row
        for i, row in enumerate(rows)
        if (row_subject(row, rows_of.field, i, label) in named) == keep_named
    ]
    if not kept:  # only `exclude` can empty the data: every named subject occurs
        raise DataError(
            f"{label}: no subject is left once {len(named)} are excluded (the dataset has no "
            "other subject); keep at least one subject's rows as the retain set"
        )
    return kept
