"""API keys: hashed at rest, created and revoked by the CLI and by tenant admins, Bearer auth,
scopes, and the bootstrap key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import SecretStr
from service_helpers import ADMIN_KEY, fast_settings
from sqlalchemy import select

from lethe.api.deps import PrincipalDep
from lethe.cli.service import main
from lethe.cli.wiring import build_app
from lethe.service.infra import migrate
from lethe.service.infra.db import ApiKey
from lethe.service.infra.runtime import build_runtime
from lethe.service.trust import auth

pytest_plugins = ["service_fixtures"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cli_key(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["keys", "create", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]  # the key alone on the last line


def test_cli_keys_work_against_the_data_dir_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LETHE_DATA_DIR", str(tmp_path / "data"))
    key = cli_key(capsys, "--tenant", "acme", "--scopes", "read,submit", "--name", "ci")
    assert key.startswith("lethe_") and " " not in key
    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    key_id = key.split("_")[1]
    assert key_id in listing and "acme" in listing and "read,submit" in listing and key not in listing
    settings = fast_settings(tmp_path / "data")
    rt = build_runtime(settings)
    with rt.sessions() as session:
        row = session.scalars(select(ApiKey).where(ApiKey.id == key_id)).one()
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()  # only the hash is stored
        assert auth.authenticate(session, key) == auth.Principal(
            key_id, "acme", frozenset({"read", "submit"})
        )
    assert main(["keys", "revoke", key_id]) == 0
    with rt.sessions() as session:
        assert auth.authenticate(session, key) is None
    rt.close()
    assert main(["keys", "revoke", "nope"]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["keys", "create", "--tenant", "Bad Tenant"]) == 1
    assert "tenant" in capsys.readouterr().err


def test_missing_unknown_and_revoked_keys_get_401(settings, fake_engine) -> None:  # noqa: ANN001
    with TestClient(build_app(settings)) as anonymous:
        r = anonymous.get("/v1/jobs")
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/v1/jobs", headers={"Authorization": "Basic eDp5"}).status_code == 401
        assert anonymous.get("/v1/jobs", headers=bearer("lethe_nope_nope")).status_code == 401
        assert anonymous.get("/healthz").status_code == 200  # health and docs stay open
        assert anonymous.get("/openapi.json").status_code == 200
        rt = anonymous.app.state.runtime
        row, key = auth.create_key(rt.sessions, "acme", "read")
        assert anonymous.get("/v1/jobs", headers=bearer(key)).status_code == 200
        auth.revoke_key(rt.sessions, row.id)
        r = anonymous.get("/v1/jobs", headers=bearer(key))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_scopes_are_enforced(client: TestClient) -> None:
    rt = client.app.state.runtime
    _, reader = auth.create_key(rt.sessions, "default", "read")
    _, submitter = auth.create_key(rt.sessions, "default", "submit")
    r = client.post(
        "/v1/datasets",
        headers=bearer(reader),
        files={"file": ("a.jsonl", b'{"prompt": "p", "response": "r"}\n')},
    )
    assert r.status_code == 403 and "'submit' scope" in r.json()["detail"]
    assert client.get("/v1/datasets", headers=bearer(reader)).status_code == 200
    assert client.get("/v1/datasets", headers=bearer(submitter)).status_code == 403
    assert client.get("/v1/keys", headers=bearer(submitter)).status_code == 403
    assert client.get("/v1/keys").status_code == 200  # the admin (bootstrap) key


def test_tenant_admins_manage_their_own_keys(client: TestClient) -> None:
    made = client.post("/v1/keys", json={"scopes": ["read"], "name": "dashboard"})
    assert made.status_code == 201, made.text
    key, key_id = made.json()["key"], made.json()["id"]
    assert made.json()["tenant"] == "default" and made.json()["scopes"] == "read"
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 200
    listed = client.get("/v1/keys").json()
    assert key_id in {k["id"] for k in listed} and all("key" not in k for k in listed)
    rt = client.app.state.runtime
    other, _ = auth.create_key(rt.sessions, "other", "admin")
    assert client.post(f"/v1/keys/{other.id}/revoke").status_code == 404  # another tenant's key
    assert client.post(f"/v1/keys/{key_id}/revoke").json()["revoked_at"]
    assert client.get("/v1/jobs", headers=bearer(key)).status_code == 401
    assert client.post("/v1/keys", json={"scopes": ["root"]}).status_code == 422


def test_a_key_cannot_revoke_itself(client: TestClient) -> None:
    """Not even the bootstrap key: the tenant's last admin key revoking itself locks it out."""
    r = client.post("/v1/keys/bootstrap/revoke")
    assert r.status_code == 409 and "cannot revoke itself" in r.json()["detail"], r.text
    assert client.get("/v1/keys").status_code == 200  # still in
    second = client.post("/v1/keys", json={"scopes": ["admin"]}).json()
    r = client.post(f"/v1/keys/{second['id']}/revoke", headers=bearer(second["key"]))
    assert r.status_code == 409 and "another admin key" in r.json()["detail"]
    assert client.post(f"/v1/keys/{second['id']}/revoke").json()["revoked_at"]  # by another key: fine
    rt = client.app.state.runtime
    assert auth.revoke_key(rt.sessions, "bootstrap").revoked_at  # the CLI (no acting key) may


def test_bootstrap_key_is_installed_rotated_and_revoked(tmp_path: Path) -> None:
    settings = fast_settings(tmp_path / "d", bootstrap_key="first", bootstrap_tenant="ops")
    migrate.upgrade(settings)
    rt = build_runtime(settings)
    auth.install_bootstrap_key(rt.sessions, settings)
    with rt.sessions() as session:
        assert auth.authenticate(session, "first") == auth.Principal(
            "bootstrap", "ops", frozenset(auth.SCOPES)
        )
    second = settings.model_copy(update={"bootstrap_key": SecretStr("second")})
    auth.install_bootstrap_key(rt.sessions, second)
    auth.install_bootstrap_key(rt.sessions, second)  # again: idempotent
    with rt.sessions() as session:
        assert auth.authenticate(session, "first") is None
        assert auth.authenticate(session, "second") is not None
    auth.install_bootstrap_key(rt.sessions, settings.model_copy(update={"bootstrap_key": SecretStr("")}))
    with rt.sessions() as session:
        assert auth.authenticate(session, "second") is None
    rt.close()


def test_the_principal_is_a_dependency_and_on_request_state(client: TestClient) -> None:
    app = client.app
    seen: dict[str, object] = {}

    @app.get("/v1/whoami-test")
    def whoami(request: Request, principal: PrincipalDep) -> dict[str, str]:
        seen["state"] = request.state.principal
        return {"tenant": principal.tenant, "key": principal.key_id}

    assert client.get("/v1/whoami-test").json() == {"tenant": "default", "key": "bootstrap"}
    assert seen["state"] == auth.Principal("bootstrap", "default", frozenset(auth.SCOPES))
    assert ADMIN_KEY not in str(seen)
