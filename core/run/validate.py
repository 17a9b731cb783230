"""`lethe validate`: check a spec and the data it names without loading any model."""

from __future__ import annotations

from pathlib import Path

from lethe.core.data.examples import resolve_source
from lethe.core.models.loading import check_model_reference
from lethe.core.spec.job import JobSpec, SpecError, load_spec


def check_sources(spec: JobSpec) -> None:
    """Every local or built-in dataset must exist; hub and service references are left to load."""
    for ref in spec.datasets():
        if ref.source.startswith(("hf:", "dataset:", "s3://")):
            continue
        resolve_source(ref.source, None)  # raises DataError for a missing file or built-in


def validate_spec(spec: JobSpec) -> JobSpec:
    """Checks beyond the schema: the model reference and the dataset files."""
    check_model_reference(spec.model)
    check_sources(spec)
    return spec


def validate_spec_file(path: Path) -> JobSpec:
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    return validate_spec(load_spec(path))
