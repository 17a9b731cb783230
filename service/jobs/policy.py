"""What a job spec may name on this server: models, judge models, and dataset references.

Nothing a user sends reaches the disk, the network or code execution unchecked: models come
from the built-ins or `LETHE_ALLOWED_MODELS`; `trust_remote_code` needs `LETHE_ALLOW_REMOTE_CODE`;
dataset references are `dataset:ID`, `s3://` in an allowed bucket, `hf:ORG/NAME`, `builtin:NAME`,
or (only with `LETHE_ALLOW_LOCAL_PATHS`) a file inside the data folder. URLs are never fetched,
so no request can make the server reach a private address.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from pathlib import Path

from lethe.core.spec.fields import DatasetRef, TrainConfig
from lethe.core.spec.job import JobSpec
from lethe.core.spec.refs import dataset_refs
from lethe.service.infra.errors import Invalid, Problem
from lethe.service.infra.settings import Settings

HUB_DATASET = re.compile(r"^hf:[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
HUB_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
REFERENCE_HINT = "use dataset:<id> (an upload), s3://BUCKET/KEY, hf:ORG/NAME or builtin:NAME"
STEPS = "LETHE_MAX_JOB_STEPS"
CountOf = Callable[[DatasetRef], int | None]  # a dataset's examples if known without reading it


def model_allowed(name: str, settings: Settings) -> bool:
    """A built-in, an exact entry of `allowed_models`, or a hub id matching one of its patterns."""
    from lethe.core.models.loading import BUILTINS

    if name in BUILTINS or name in settings.allowed_models:
        return True
    return bool(HUB_MODEL.match(name)) and any(
        fnmatch.fnmatchcase(name, pattern) for pattern in settings.allowed_models if "*" in pattern
    )


def _allowed_hint(settings: Settings) -> str:
    from lethe.core.models.loading import BUILTINS

    listed = [*BUILTINS, *settings.allowed_models]
    return f"use one of {', '.join(listed)} (an admin adds models with LETHE_ALLOWED_MODELS)"


def model_problems(spec: JobSpec, settings: Settings) -> list[Problem]:
    """The spec's model, its remote-code flag, and the judge's model and check set."""
    problems = []
    if not model_allowed(spec.model.name, settings):
        problems.append(
            Problem(
                "model.name",
                f"model {spec.model.name!r} is not allowed on this server: {_allowed_hint(settings)}",
            )
        )
    if spec.model.trust_remote_code and not settings.allow_remote_code:
        problems.append(
            Problem(
                "model.trust_remote_code",
                "running a model repository's own code is "
                "switched off on this server: set it to false (an admin can allow "
                "it with LETHE_ALLOW_REMOTE_CODE)",
            )
        )
    judge = spec.eval.judge
    if judge.path is not None and judge.path not in settings.allowed_models:
        problems.append(
            Problem(
                "eval.judge.path",
                f"judge model {judge.path!r} is not allowed on this "
                "server: leave it unset for the default encoder (an admin lists "
                "local checkpoints in LETHE_ALLOWED_MODELS)",
            )
        )
    if not judge.check_set.startswith("builtin:"):
        problems.append(
            Problem(
                "eval.judge.check_set",
                "must be a builtin:NAME check set on this server, e.g. builtin:judge_check",
            )
        )
    return problems


def check_builtin(source: str, field: str) -> None:
    from lethe.core.data.examples import DataError, builtin_path

    try:
        builtin_path(source.removeprefix("builtin:"))
    except DataError as err:
        raise Invalid.one(field, str(err)) from None


def check_local_path(source: str, settings: Settings, field: str) -> str:
    """A path is read only when allowed, and only inside the data folder (no traversal out);
    returns it resolved, so the worker reads exactly the file that was checked."""
    if not settings.allow_local_paths:
        raise Invalid.one(field, f"{source!r} cannot be read by the service: {REFERENCE_HINT}")
    root = settings.data_dir.resolve()
    path = Path(source).expanduser()
    resolved = (path if path.is_absolute() else root / path).resolve()
    if not resolved.is_relative_to(root):
        raise Invalid.one(
            field,
            f"{source!r} is outside the data folder: only files under "
            "LETHE_DATA_DIR may be named; upload the file instead",
        )
    if not resolved.is_file():
        raise Invalid.one(field, f"{source!r} does not exist in the data folder: upload the file instead")
    return str(resolved)


def check_plain_reference(source: str, settings: Settings, field: str) -> str:
    """`hf:`, `builtin:`, a URL (refused) or a local path; `dataset:` and `s3://` are checked
    elsewhere. Returns the source a worker should read."""
    if source.startswith("hf:"):
        if not HUB_DATASET.match(source):
            raise Invalid.one(field, f"{source!r} is not a model-hub dataset id: use hf:ORG/NAME")
    elif source.startswith("builtin:"):
        check_builtin(source, field)
    elif URL.match(source) or ":" in source.split("/")[0]:
        raise Invalid.one(field, f"{source!r}: URLs are not fetched by the service: {REFERENCE_HINT}")
    else:
        return check_local_path(source, settings, field)
    return source


# ------------------------------------------------------------------ job size
def _over(limit: int, setting: str) -> str:
    return f"over this deployment's limit of {limit} ({setting})"


def used_examples(ref: DatasetRef, count: int) -> int:
    """Examples a reference takes from a dataset of `count`: after its offset, at most its limit."""
    used = max(0, count - ref.offset)
    return used if ref.limit is None else min(used, ref.limit)


def builtin_examples(ref: DatasetRef) -> int | None:
    """Examples of a shipped dataset (small files, read only to size a stage given in epochs);
    None if it cannot be read as declared (the worker then says why)."""
    from lethe.core.data.examples import DataError, load_examples

    try:
        return len(load_examples(ref.model_copy(update={"offset": 0, "limit": None})))
    except (DataError, OSError, ValueError):
        return None


def _stage_problem(
    path: str, train: TrainConfig, data: DatasetRef, count_of: CountOf, cap: int
) -> Problem | None:
    """A training stage over `max_job_steps` (`cap`). A stage in epochs is sized by its data: the
    known count, a built-in's, else its `limit`; with none of them it cannot be sized here."""
    if train.steps is not None:
        if train.steps <= cap:
            return None
        return Problem(f"{path}.steps", f"{train.steps} is {_over(cap, STEPS)}: ask for fewer steps")
    count = count_of(data)
    if count is None and data.source.startswith("builtin:"):
        count = builtin_examples(data)
    examples = data.limit if count is None else used_examples(data, count)
    if examples is None or train.epochs is None:
        return None
    # a float: epochs may be huge (even infinite), which math.ceil could not take
    steps = train.epochs * examples / (train.batch_size * train.grad_accum)
    if steps <= cap:
        return None
    return Problem(
        f"{path}.epochs",
        f"{train.epochs:g} epochs over {examples} examples make about {steps:.0f} steps, which "
        f"is {_over(cap, STEPS)}: set fewer epochs, or steps",
    )


def size_problems(spec: JobSpec, settings: Settings, count_of: CountOf) -> list[Problem]:
    """What one job may take, so that no single request ties up a worker for ever: steps per
    training stage (`max_job_steps`) and examples per dataset (`max_job_examples`)."""
    cap = settings.max_job_steps
    stages = [("unlearn.train", spec.unlearn.train, spec.unlearn.forget)]
    if spec.finetune is not None:
        stages.append(("finetune.train", spec.finetune.train, spec.finetune.data))
    found = [_stage_problem(path, train, data, count_of, cap) for path, train, data in stages]
    relearn = spec.probes.relearn if spec.probes is not None else None
    if relearn is not None and relearn.steps > cap:
        found.append(Problem("probes.relearn.steps", f"{relearn.steps} is {_over(cap, STEPS)}"))
    most = settings.max_job_examples
    for path, ref in dataset_refs(spec):
        count = count_of(ref)
        used = None if count is None else used_examples(ref, count)
        if used is not None and used > most:
            found.append(
                Problem(
                    f"{path}.limit",
                    f"{used} examples of {ref.source} are {_over(most, 'LETHE_MAX_JOB_EXAMPLES')}: "
                    f"set {path}.limit to at most {most}",
                )
            )
    return [p for p in found if p is not None]
