"""The one walker over a spec's dataset references, derived from the spec's own types.

Every field whose value is a `DatasetRef` is a dataset reference, wherever it sits (the unlearn
method's `refusals`, `eval.copyright.forget_text`, `probes.rephrase.templates`, ...), so a field
added to any spec model is found without a list to keep in step. The engine (`JobSpec.datasets`,
relative paths), the service (validation, resolution, certificates) and the client SDK (uploading
local files) all walk with these two functions. Specs are never changed in place: `with_refs`
returns a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

from lethe.core.spec.fields import DatasetRef

M = TypeVar("M", bound=BaseModel)
RefChange = Callable[[str, DatasetRef], DatasetRef]


def _children(model: BaseModel, prefix: str) -> Iterator[tuple[str, str, Any]]:
    """(field name, dotted path by alias, value) of each field that is set to a value."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is not None:
            yield name, f"{prefix}{info.alias or name}", value


def dataset_refs(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, DatasetRef]]:
    """Every DatasetRef in `model` with its dotted path (`unlearn.forget`, `eval.normal`, ...), in
    field order."""
    for _, path, value in _children(model, prefix):
        if isinstance(value, DatasetRef):
            yield path, value
        elif isinstance(value, BaseModel):
            yield from dataset_refs(value, path + ".")


def with_refs(model: M, change: RefChange, prefix: str = "") -> M:
    """A copy of `model` in which each DatasetRef is `change(path, ref)`; `model` is not touched.
    Fields that `change` leaves alone keep their identity, and whether they were set by the user."""
    updates: dict[str, Any] = {}
    for name, path, value in _children(model, prefix):
        new: BaseModel
        if isinstance(value, DatasetRef):
            new = change(path, value)
        elif isinstance(value, BaseModel):
            new = with_refs(value, change, path + ".")
        else:
            continue
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model
