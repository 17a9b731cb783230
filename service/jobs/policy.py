"""What a job spec may name on this server: models, judge models, and dataset references.

Nothing a user sends reaches the disk, the network or code execution unchecked: models come
from the built-ins or `LETHE_ALLOWED_MODELS`; `trust_remote_code` needs `LETHE_ALLOW_REMOTE_CODE`;
dataset references are `dataset:ID`, `s3://` in an allowed bucket, `hf:ORG/NAME`, `builtin:NAME`,
or (only with `LETHE_ALLOW_LOCAL_PATHS`) a file inside the data folder. URLs are never fetched,
so no request can make the server reach a private address.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable
from pathlib import Path

from lethe.core.spec.fields import DatasetRef, GenerationConfig, TrainConfig
from lethe.core.spec.job import JobSpec
from lethe.core.spec.refs import dataset_refs
from lethe.service.infra.errors import Invalid, Problem
from lethe.service.infra.settings import Settings
from lethe.service.storage.datasets import hub_unreachable

HUB_DATASET = re.compile(r"^hf:[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
HUB_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
REFERENCE_HINT = "use dataset:<id> (an upload), s3://BUCKET/KEY, hf:ORG/NAME or builtin:NAME"
STEPS = "LETHE_MAX_JOB_STEPS"
TOKENS = "LETHE_MAX_EXAMPLE_TOKENS"
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
    """The spec's model, its remote-code flag, and the judge's model and check set (the device is
    placement's: `lethe.service.jobs.placement`)."""
    from lethe.core.models.loading import BUILTINS

    problems: list[Problem] = []
    if not model_allowed(spec.model.name, settings):
        problems.append(
            Problem(
                "model.name",
                f"model {spec.model.name!r} is not allowed on this server: {_allowed_hint(settings)}",
            )
        )
    elif not hub_model_reachable(spec.model.name, spec.model.revision, settings):
        problems.append(
            Problem(
                "model.name",
                f"model {spec.model.name!r} is on the model hub, which this server cannot reach, and "
                f"it is not in the server's cache: use a built-in model ({', '.join(BUILTINS)}); an "
                "admin can download it into the cache, or allow hub access with LETHE_HUB_ACCESS",
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


# ------------------------------------------------------------------ what the workers can reach
def worker_devices(settings: Settings) -> list[str]:
    """The devices the workers have: the kinds of `queue_capacity`, else `worker_devices`, else
    `cuda` too when GPU workers serve the `gpu` queue or this process sees a GPU (the embedded
    worker runs in this process)."""
    if settings.queue_capacity:
        return sorted({c.kind for c in settings.queue_capacity.values()}, reverse=True)  # cuda first
    if settings.worker_devices:
        return settings.worker_devices
    return ["cuda", "cpu"] if settings.gpu_workers or _local_gpu() else ["cpu"]


@functools.cache
def _local_gpu() -> bool:
    import torch  # already loaded by the model check; cached: the answer does not change

    return bool(torch.cuda.is_available())


def device_problem(spec: JobSpec, settings: Settings) -> Problem | None:
    """`cuda` where no worker has a GPU: the job would wait on the `gpu` queue for ever, or fail
    on a CPU worker; refused now, with what to send instead."""
    if spec.model.device != "cuda" or "cuda" in worker_devices(settings):
        return None
    setting = "LETHE_QUEUE_CAPACITY" if settings.queue_capacity else "LETHE_WORKER_DEVICES"
    return Problem(
        "model.device",
        f"'cuda' asks for a GPU, but this server has no GPU workers ({setting}: "
        f"{','.join(worker_devices(settings))}): use 'cpu' or 'auto'",
    )


def hub_model_reachable(name: str, revision: str | None, settings: Settings) -> bool:
    """False for a hub id when the hub is out of reach and the model is not in the local cache."""
    from lethe.core.models.loading import BUILTINS

    if settings.hub_reachable or name in BUILTINS or not HUB_MODEL.match(name):
        return True  # built-ins and local folders need no hub
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)


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
        unreachable = hub_unreachable(source, settings)
        if unreachable is not None:
            raise Invalid.one(field, f"{source!r} {unreachable}")
    elif source.startswith("builtin:"):
        check_builtin(source, field)
    elif URL.match(source) or ":" in source.split("/")[0]:
        raise Invalid.one(field, f"{source!r}: URLs are not fetched by the service: {REFERENCE_HINT}")
    else:
        return check_local_path(source, settings, field)
    return source


# ------------------------------------------------------------------ job size
def _over(limit: int | str, setting: str) -> str:
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


def stage_steps(train: TrainConfig, data: DatasetRef, count_of: CountOf) -> float | None:
    """Optimizer steps of a training stage: `steps`, or epochs sized by its data (the known count,
    a built-in's, else its `limit`); None when it cannot be sized here. A float: epochs may be huge
    (even infinite), which math.ceil could not take."""
    if train.steps is not None:
        return float(train.steps)
    examples = stage_examples(data, count_of)
    if examples is None or train.epochs is None:
        return None
    return train.epochs * examples / (train.batch_size * train.grad_accum)


def stage_examples(data: DatasetRef, count_of: CountOf) -> int | None:
    count = count_of(data)
    if count is None and data.source.startswith("builtin:"):
        count = builtin_examples(data)
    return data.limit if count is None else used_examples(data, count)


def _stage_problem(
    path: str, train: TrainConfig, data: DatasetRef, count_of: CountOf, cap: int
) -> Problem | None:
    """A training stage over `max_job_steps` (`cap`)."""
    steps = stage_steps(train, data, count_of)
    if steps is None or steps <= cap:
        return None
    if train.steps is not None:
        return Problem(f"{path}.steps", f"{train.steps} is {_over(cap, STEPS)}: ask for fewer steps")
    return Problem(
        f"{path}.epochs",
        f"{train.epochs:g} epochs over {stage_examples(data, count_of)} examples make about "
        f"{steps:.0f} steps, which "
        f"is {_over(cap, STEPS)}: set fewer epochs, or steps",
    )


def _generations(spec: JobSpec) -> list[tuple[str, GenerationConfig]]:
    """Every generation setting of the spec, with its path."""
    found = [("eval.generation", spec.eval.generation)]
    found.append(("unlearn.answer_generation", spec.unlearn.answer_generation))
    return found


def token_problems(spec: JobSpec, settings: Settings) -> list[Problem]:
    """Tokens per example over `max_example_tokens`: the training length and each generation's."""
    cap = settings.max_example_tokens
    asked = [("format.max_length", spec.format.max_length)]
    asked += [(f"{path}.max_new_tokens", g.max_new_tokens) for path, g in _generations(spec)]
    return [
        Problem(path, f"{tokens} tokens per example is {_over(cap, TOKENS)}: ask for at most {cap}")
        for path, tokens in asked
        if tokens > cap
    ]


def estimated_tokens(spec: JobSpec, count_of: CountOf) -> float:
    """Tokens a job trains on and generates, roughly: what the run-time estimate multiplies. Stages
    that cannot be sized at submission count as nothing (the time budget still bounds them)."""
    length = spec.format.max_length
    unlearn = spec.unlearn
    stages = [(unlearn.train, unlearn.forget, 2 if unlearn.normal is not None else 1)]
    if spec.finetune is not None:
        stages.append((spec.finetune.train, spec.finetune.data, 1))
    trained = 0.0
    for train, data, sets in stages:
        steps = stage_steps(train, data, count_of) or 0.0
        trained += steps * train.batch_size * train.grad_accum * length * sets
    relearn = spec.probes.relearn if spec.probes is not None else None
    if relearn is not None:
        trained += relearn.steps * relearn.batch_size * length
    evaluated = [r for p, r in dataset_refs(spec) if p.startswith("eval.") and ".judge" not in p]
    # each evaluation set is answered before and after unlearning, in every extra format too
    answers = 2 * len(evaluated) * spec.eval.max_examples * (1 + len(spec.eval.formats))
    return trained + answers * spec.eval.generation.max_new_tokens


def estimate_problem(spec: JobSpec, settings: Settings, count_of: CountOf) -> Problem | None:
    """A job whose estimated run time is over `max_job_estimated_s`."""
    tokens = estimated_tokens(spec, count_of)
    seconds = tokens * settings.token_cost_s
    cap = settings.max_job_estimated_s
    if seconds <= cap:
        return None
    return Problem(
        "unlearn.train",
        f"the job's estimated run time is {seconds:.0f} s (about {tokens:.3g} "
        f"tokens at {settings.token_cost_s:g} s each), {_over(f'{cap:g} s', 'LETHE_MAX_JOB_ESTIMATED_S')}: "
        "ask for fewer steps, smaller batches or a shorter format.max_length",
    )


def size_problems(spec: JobSpec, settings: Settings, count_of: CountOf) -> list[Problem]:
    """What one job may take, so that no single request ties up a worker for ever: steps per
    training stage (`max_job_steps`), examples per dataset (`max_job_examples`), tokens per
    example (`max_example_tokens`) and estimated run time (`max_job_estimated_s`). `settings` are
    the tenant's (`Settings.for_tenant`)."""
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
    found += [*token_problems(spec, settings), estimate_problem(spec, settings, count_of)]
    return [p for p in found if p is not None]
