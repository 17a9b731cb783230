"""/v1/specs: check a job spec (YAML or JSON text) exactly as `POST /v1/jobs` would, without
queueing it, and list the example specs shipped with Lethe (what the console's new-job page
starts from).

Validation always answers 200 with `valid` and one problem per field: the request itself was
fine, the spec in it is what may be wrong. The checks are the submission's own (the spec model,
then `lethe.service.jobs.records` for the model, the dataset references and the job's size), run
in a transaction that is rolled back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lethe.api.deps import ReadDep, RuntimeDep, SubmitDep
from lethe.api.schemas import Problem, errors
from lethe.core.spec.job import JobSpec
from lethe.service.infra.errors import Invalid
from lethe.service.infra.runtime import Runtime
from lethe.service.jobs import records

router = APIRouter(prefix="/v1/specs", tags=["specs"])
# the repository's, when Lethe runs from a checkout (an installed package has none: the images
# copy examples/ and set LETHE_EXAMPLES_DIR)
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MAX_SPEC_CHARS = 50_000  # JSON-escaped at 12 bytes a character at most: under LETHE_MAX_JSON_KB


class SpecText(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(
        max_length=MAX_SPEC_CHARS,
        description="the spec as YAML (JSON is YAML too), as `lethe unlearn` reads it",
        examples=["model: {name: tiny-llama}\nunlearn: {method: ga, forget: {source: dataset:ID}}\n"],
    )


class SpecCheck(BaseModel):
    valid: bool
    problems: list[Problem] = Field(description="one per field; empty when valid")
    spec: dict[str, Any] | None = Field(
        None, description="the spec as JSON, ready for `POST /v1/jobs` (null when not even parsed)"
    )


class ExampleSpec(BaseModel):
    name: str = Field(description="the file's name, e.g. `tiny.yaml`")
    description: str = Field(description="the comment at the top of the file")
    text: str = Field(description="the spec as YAML; its dataset paths name files under examples/data")


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases: an alias repeats a node without copying it, so a short text can stand
    for a tree too large to validate (the "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted in a spec", mark)
        return super().compose_node(parent, index)


def _parse(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """The YAML as a mapping, or the problem that stops it being one."""
    try:
        data = yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader
    except RecursionError:
        return None, [Problem(field="text", msg="not valid YAML: it is nested too deeply")]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        return None, [Problem(field="text", msg=f"not valid YAML{where}: {reason}")]
    if not isinstance(data, dict):
        return None, [Problem(field="text", msg="a spec is a mapping of fields (model, unlearn, ...)")]
    return data, []


def _check(rt: Runtime, spec: JobSpec, tenant: str) -> list[Problem]:
    """The submission's checks beyond the spec model; nothing is written."""
    with rt.sessions() as session:
        try:
            records._validate(rt, session, spec, tenant)
        except Invalid as err:
            return [Problem(field=p.field, msg=p.msg) for p in err.problems]
        finally:
            session.rollback()  # _validate locks the datasets it reads
    return []


@router.post("/validate", name="validate", responses=errors(401, 403, 413, 422, 503))
def validate_spec(rt: RuntimeDep, principal: SubmitDep, body: SpecText) -> SpecCheck:
    """Check a spec as `POST /v1/jobs` would (model, datasets, limits) without queueing it."""
    data, problems = _parse(body.text)
    if data is None:
        return SpecCheck(valid=False, problems=problems)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as err:
        problems = [
            Problem(field=".".join(str(p) for p in item["loc"]) or "text", msg=item["msg"])
            for item in err.errors()
        ]
        return SpecCheck(valid=False, problems=problems)
    problems = _check(rt, spec, principal.tenant)
    as_json = spec.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return SpecCheck(valid=not problems, problems=problems, spec=as_json)


def _description(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


@router.get("/examples", name="examples", responses=errors(401, 403, 503))
def example_specs(principal: ReadDep, rt: RuntimeDep) -> list[ExampleSpec]:
    """The example specs of `LETHE_EXAMPLES_DIR` (default: the repository's `examples/`)."""
    folder = rt.settings.examples_dir or EXAMPLES
    files = sorted(folder.glob("[!_]*.yaml")) if folder.is_dir() else []
    return [
        ExampleSpec(name=f.name, description=_description(text), text=text)
        for f in files
        for text in [f.read_text(encoding="utf-8")]
    ]
