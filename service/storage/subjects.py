"""At submission: the subjects an erasure request names must be in the dataset it names.

`unlearn.erase` (and any `DatasetRef.subjects` selection) is checked against the data before the
job is queued, so a misspelt name is a 422 listing it, not a failed job an hour later, and never
a run that erases nobody. Uploaded and registered s3:// datasets are read from storage here (once
each, whichever references share them); a local file the policy allows and a `builtin:` file are
read in place; hub datasets and bare s3:// references are left to the worker, which applies the
same check when it reads them (`lethe.core.data.subjects`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from lethe.core.spec.fields import DatasetRef
from lethe.core.spec.job import JobSpec
from lethe.core.spec.refs import dataset_refs
from lethe.service.infra.db import Dataset
from lethe.service.infra.errors import Invalid, Problem
from lethe.service.infra.runtime import Runtime
from lethe.service.storage.datasets import dataset_id_of
from lethe.service.storage.resolve import local_ref


def _field(spec: JobSpec, path: str, ref: DatasetRef) -> str:
    """Where the user wrote the names: unlearn.erase, when the selection is the one it built."""
    erase, rows = spec.unlearn.erase, ref.subjects
    if erase is not None and rows is not None and rows.names == erase.subjects:
        return "unlearn.erase.subjects"
    return f"{path}.subjects"


def _readable(
    rt: Runtime, session: Session, path: str, ref: DatasetRef, dest: Path
) -> tuple[DatasetRef, str] | None:
    """`ref` pointing at a file this process can read, and the name to show for it; None for the
    references the worker reads (hub datasets, bare s3:// objects)."""
    dataset_id = dataset_id_of(ref.source)
    if dataset_id is None:
        plain = not ref.source.startswith(("s3://", "hf:"))
        return (ref, ref.source) if plain else None
    row = session.get(Dataset, dataset_id)
    if row is None or row.kind == "hub":
        return None
    return local_ref(rt, path, ref, row, dest), f"{ref.source} ({row.name})"


def _problem(
    rt: Runtime, session: Session, spec: JobSpec, path: str, ref: DatasetRef, dest: Path
) -> list[Problem]:
    """What is wrong with one selection's data: [] if its names are all there (or it is the
    worker's to read)."""
    from lethe.core.data.examples import DataError, read_rows

    try:
        found = _readable(rt, session, path, ref, dest)
    except Invalid as err:  # the stored object is unreadable, or changed since registration
        return list(err.problems)
    if found is None:
        return []
    local, shown = found
    try:
        read_rows(local)
    except DataError as err:  # messages name the dataset as the user knows it, not a server path
        return [Problem(_field(spec, path, ref), str(err).replace(local.source, shown))]
    return []


def subject_problems(rt: Runtime, session: Session, spec: JobSpec) -> list[Problem]:
    """One problem per distinct failure of a subject selection in `spec` (whose references have
    passed the reference checks); [] when every named subject is in its data."""
    problems: dict[str, Problem] = {}  # by message: forget and retain name the same people
    tmp_root = rt.settings.data_dir / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        for path, ref in dataset_refs(spec):
            if ref.subjects is not None:
                for problem in _problem(rt, session, spec, path, ref, Path(tmp)):
                    problems.setdefault(problem.msg, problem)
    return list(problems.values())
