"""Settings, docs and deployment files stay in step with the code."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from lethe.cli.service import add_service_commands
from lethe.service.infra.settings import Settings, settings_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_settings_doc_is_generated_from_the_class() -> None:
    assert (ROOT / "docs" / "settings.md").read_text() == settings_markdown(), (
        "regenerate: python -m lethe.service.infra.settings > docs/settings.md"
    )


def test_every_setting_is_documented() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_environment_parsing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LETHE_ALLOWED_S3_BUCKETS", "a, b,,c")
    monkeypatch.setenv("LETHE_GPU_WORKERS", "true")
    s = Settings()
    assert s.allowed_s3_buckets == ["a", "b", "c"] and s.gpu_workers
    assert s.db_url == f"sqlite:///{tmp_path}/lethe.db" and s.embedded
    assert s.storage_root == tmp_path / "storage" and s.work_root == tmp_path / "work"
    monkeypatch.setenv("LETHE_BROKER_URL", "redis://x:6379/0")
    assert not Settings().embedded


@pytest.mark.parametrize(
    ("raw", "parsed"), [("", []), ("HuggingFaceTB/*", ["HuggingFaceTB/*"]), ("a, b", ["a", "b"])]
)
def test_allowed_models_is_a_comma_list(monkeypatch: pytest.MonkeyPatch, raw: str, parsed: list[str]) -> None:
    # docker-compose passes `${LETHE_ALLOWED_MODELS:-}`, an empty string, to every service
    monkeypatch.setenv("LETHE_ALLOWED_MODELS", raw)
    assert Settings().allowed_models == parsed


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_sets_only_known_settings() -> None:
    known = {f"LETHE_{name.upper()}" for name in Settings.model_fields}
    used = set()
    for service in compose()["services"].values():
        env = service.get("environment") or {}
        names = env.keys() if isinstance(env, dict) else [item.split("=")[0] for item in env]
        used |= {n for n in names if n.startswith("LETHE_")}
    assert used and used <= known, f"unknown settings: {used - known}"
    for dockerfile in (ROOT / "docker").glob("Dockerfile.*[!e]"):
        assert set(re.findall(r"\bLETHE_[A-Z0-9_]+", dockerfile.read_text())) <= known, dockerfile


def parse_lethe(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lethe", exit_on_error=False)
    add_service_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def dockerfile_cmd(path: Path) -> list[str]:
    line = [ln for ln in path.read_text().splitlines() if ln.startswith("CMD ")][-1]
    return json.loads(line[4:])


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfile_commands_exist(name: str) -> None:
    path = ROOT / "docker" / name
    cmd = dockerfile_cmd(path)
    assert cmd[0] == "lethe" and callable(parse_lethe(cmd[1:]).handler)
    text = path.read_text()
    assert "USER lethe" in text and "HEALTHCHECK" in text and "torch==2.13.0" in text
    assert re.search(r"^FROM \S+:\S+", text, re.M), "pin the base image"


def test_the_api_image_ships_the_example_specs() -> None:
    """The console lists LETHE_EXAMPLES_DIR; an installed package has no repository examples/."""
    text = (ROOT / "docker" / "Dockerfile.api").read_text()
    ignore = (ROOT / "docker" / "Dockerfile.api.dockerignore").read_text().split()
    workdir = re.findall(r"^WORKDIR (\S+)", text, re.M)[-1]
    assert re.search(r"^COPY examples examples$", text, re.M) and "!examples/" in ignore
    assert f"LETHE_EXAMPLES_DIR={workdir}/examples" in text


@pytest.mark.parametrize("name", ["Dockerfile.api", "Dockerfile.worker"])
def test_images_copy_every_package_folder(name: str) -> None:
    """Each folder that pyproject installs as part of `lethe` is sent to the build and copied in."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = set(setuptools["package-dir"].values())
    text = (ROOT / "docker" / name).read_text()
    ignore = (ROOT / "docker" / f"{name}.dockerignore").read_text().splitlines()
    for folder in folders:
        assert f"COPY {folder} {folder}" in text, f"{name} does not copy {folder}/"
        assert f"!{folder}/" in ignore, f"{name}.dockerignore leaves {folder}/ out of the build context"


def test_compose_commands_exist_and_migration_gates_the_services() -> None:
    services = compose()["services"]
    for name, service in services.items():
        command = service.get("command")
        if isinstance(command, list) and command[0] == "lethe":
            assert callable(parse_lethe(command[1:]).handler), name
        elif isinstance(command, str) and command.startswith("lethe"):
            assert callable(parse_lethe(shlex.split(command)[1:]).handler), name
    for name in ("api", "worker", "worker-cpu"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["command"] == ["lethe", "db", "upgrade"]
    assert {"api", "worker", "postgres", "redis", "minio"} <= set(services)


def test_healthchecks_name_real_modules() -> None:
    import importlib

    for text in [(ROOT / "docker" / "Dockerfile.worker").read_text(), yaml.safe_dump(compose())]:
        for module in re.findall(r"celery -A (\S+)", text):
            importlib.import_module(module)


def test_readme_documents_every_setting():
    """The README's settings table is the generated one (issue: each setting documented there)."""
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index("<!-- settings:start -->"), readme.index("<!-- settings:end -->")
    table = settings_markdown().split("\n", 4)[4]
    assert readme[start:end].split("\n", 1)[1] == table, (
        "regenerate the README's settings table from `python -m lethe.service.infra.settings`"
    )
