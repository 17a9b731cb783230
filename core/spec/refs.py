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


def _changed(value: Any, path: str, change: RefChange) -> Any:
    """`value` with its references changed: a DatasetRef, a spec model, or a dict of either."""
    if isinstance(value, DatasetRef):
        return change(path, value)
    if isinstance(value, BaseModel):
        return with_refs(value, change, path + ".")
    if isinstance(value, dict):  # named sets (`eval.harmful_sets.NAME`)
        new = {key: _changed(item, f"{path}.{key}", change) for key, item in value.items()}
        return value if all(new[key] is value[key] for key in value) else new
    return value


def _fields(model: BaseModel, prefix: str) -> Iterator[tuple[str, str, Any]]:
    """(field name, dotted path by alias, value) of each field."""
    for name, info in type(model).model_fields.items():
        yield name, f"{prefix}{info.alias or name}", getattr(model, name)


def dataset_refs(model: BaseModel, prefix: str = "") -> Iterator[tuple[str, DatasetRef]]:
    """Every DatasetRef in `model` with its dotted path (`unlearn.forget`, `eval.normal`,
    `eval.harmful_sets.NAME`, ...), in field order."""
    found: list[tuple[str, DatasetRef]] = []

    def note(path: str, ref: DatasetRef) -> DatasetRef:
        found.append((path, ref))
        return ref

    with_refs(model, note, prefix)
    yield from found


def with_refs(model: M, change: RefChange, prefix: str = "") -> M:
    """A copy of `model` in which each DatasetRef is `change(path, ref)`; `model` is not touched.
    Fields that `change` leaves alone keep their identity, and whether they were set by the user."""
    updates = {}
    for name, path, value in _fields(model, prefix):
        new = _changed(value, path, change)
        if new is not value:
            updates[name] = new
    return model.model_copy(update=updates) if updates else model
