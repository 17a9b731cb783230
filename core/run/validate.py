"""`lethe validate`: check a spec and the data it names without loading any model."""

from __future__ import annotations

from pathlib import Path

from lethe.core.data.examples import read_rows, resolve_source
from lethe.core.models.loading import check_model_reference
from lethe.core.models.quantized import check_quantization_support
from lethe.core.spec.job import JobSpec, SpecError, load_spec


def check_sources(spec: JobSpec) -> None:
    """Every local or built-in dataset must exist, and hold the subjects a selection names (an
    erasure request's); hub and service references are left to load (the service checks its own
    at submission)."""
    for ref in spec.datasets():
        if ref.source.startswith(("hf:", "dataset:", "s3://")):
            continue
        resolve_source(ref.source, None)  # raises DataError for a missing file or built-in
        if ref.subjects is not None:
            read_rows(ref)  # raises DataError naming the subjects not in the data


def validate_spec(spec: JobSpec) -> JobSpec:
    """Checks beyond the schema: the model reference, that this machine can load a quantized base
    (CUDA and bitsandbytes: `lethe validate` says so before `lethe unlearn` would), and the
    dataset files."""
    check_model_reference(spec.model)
    check_quantization_support(spec.model)
    check_sources(spec)
    return spec


def validate_spec_file(path: Path) -> JobSpec:
    if not path.exists():
        raise SpecError(f"spec file not found: {path}")
    return validate_spec(load_spec(path))
