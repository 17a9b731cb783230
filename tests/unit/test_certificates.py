"""Unlearning certificates: a succeeded job's certificate is signed with Ed25519, verifies with
our verifier and with openssl, names the datasets, model and adapter by hash, and any changed
byte (or another signer, when pinned) fails verification."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from service_helpers import EXAMPLES, fake_run_job, job_spec, upload, wait_for

from lethe.cli.main import main
from lethe.evidence.certificate import (
    canonical_json,
    key_id,
    load_public_key,
    openssl_inputs,
    sign,
    verify_bytes,
)
from lethe.service.infra.settings import Settings
from lethe.service.trust.certificates import load_signing_key

pytest_plugins = ["service_fixtures"]  # client (embedded API, fake engine), settings


def run_with_model_card(spec: Any, out_dir: Path, hooks: Any = None) -> Any:
    """The fake engine, plus the model card and env.json the real pipeline writes."""
    summary = fake_run_job(spec, out_dir, hooks)
    (out_dir / "model.json").write_text(
        json.dumps({"reference": spec.model.name, "weights_sha256": "ab" * 32})
    )
    (out_dir / "env.json").write_text(json.dumps({"python": "3.x", "versions": {"torch": "2"}}))
    return summary


@pytest.fixture
def succeeded(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> tuple[TestClient, dict[str, Any], str]:
    """A job that succeeded on the fake engine, and the reference of its forget set."""
    monkeypatch.setattr("lethe.core.run.pipeline.run_job", run_with_model_card)
    forget = upload(client).json()
    job = client.post("/v1/jobs", json=job_spec(forget["reference"])).json()
    return client, wait_for(client, job["id"]), forget["sha256"]


def test_a_succeeded_job_has_a_signed_certificate_of_its_evidence(succeeded, tmp_path: Path) -> None:
    client, job, forget_sha = succeeded
    reply = client.get(f"/v1/jobs/{job['id']}/certificate")
    assert reply.status_code == 200, reply.text
    key = client.get("/v1/signing-key").json()
    result = verify_bytes(reply.content, load_public_key(key["public_key"]))
    assert result.ok and result.pinned and result.key_id == key["key_id"], result.reason
    cert = result.certificate
    assert cert["job"]["id"] == job["id"] and cert["job"]["status"] == "succeeded"
    assert cert["spec"] == job["spec"]
    assert [d["sha256"] for d in cert["datasets"]] == [forget_sha]
    assert cert["base_model"] == {"reference": "tiny-llama", "weights_sha256": "ab" * 32}
    artifacts = {a["name"]: a["sha256"] for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json()}
    assert cert["adapter"]["archive_sha256"] == artifacts["adapter.tar.gz"]
    assert cert["artifacts_sha256"] == artifacts
    assert cert["metrics"]["before"] == {"forget_nll": 1.0} and cert["metrics"]["after"] == {
        "forget_nll": 3.0
    }
    assert cert["environment"]["versions"] == {"torch": "2"}
    # issued once: the same bytes on every request
    assert client.get(f"/v1/jobs/{job['id']}/certificate").content == reply.content
    assert load_public_key(key["public_key_pem"]) is not None


def test_openssl_verifies_the_signature_too(succeeded, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    client, job, _ = succeeded
    document = client.get(f"/v1/jobs/{job['id']}/certificate").content
    files = openssl_inputs(document, tmp_path)
    (tmp_path / "server.pem").write_text(client.get("/v1/signing-key").json()["public_key_pem"])

    def openssl(payload: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                "openssl",
                "pkeyutl",
                "-verify",
                "-pubin",
                "-inkey",
                str(tmp_path / "server.pem"),
                "-rawin",
                "-in",
                str(payload),
                "-sigfile",
                str(files["signature"]),
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    good = openssl(files["payload"])
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout, (
        good.stdout + good.stderr
    )
    changed = tmp_path / "changed.bin"
    changed.write_bytes(files["payload"].read_bytes().replace(b'"succeeded"', b'"succeedeD"', 1))
    assert openssl(changed).returncode != 0


def test_any_changed_byte_fails_verification() -> None:
    key = Ed25519PrivateKey.generate()
    document = sign(key, {"format": "x", "metrics": {"after": {"forget_nll": 5.25}}, "note": "naïve ✓"})
    assert verify_bytes(document, key.public_key()).ok
    for i in range(len(document)):
        for flip in (0x01, 0x20):
            changed = document[:i] + bytes([document[i] ^ flip]) + document[i + 1 :]
            assert not verify_bytes(changed, key.public_key()).ok, (i, changed[max(0, i - 20) : i + 20])
    assert not verify_bytes(document + b"\n", key.public_key()).ok  # not byte for byte what was signed
    pretty = json.dumps(json.loads(document), indent=2).encode()
    assert "canonical" in verify_bytes(pretty, key.public_key()).reason


def test_a_certificate_re_signed_by_another_key_fails_when_the_signer_is_pinned() -> None:
    ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = sign(theirs, {"format": "x", "claim": "forgotten"})
    unpinned = verify_bytes(forged)
    assert unpinned.ok and not unpinned.pinned and "pin it" in unpinned.reason
    assert not verify_bytes(forged, ours.public_key()).ok
    assert "not by the pinned key" in verify_bytes(forged, pinned_key_id=key_id(ours.public_key())).reason


def test_signature_is_ed25519_over_the_canonical_certificate() -> None:
    key = Ed25519PrivateKey.generate()
    body = {"b": [1, 2.5, None], "a": "é"}
    doc = json.loads(sign(key, body))
    assert canonical_json(body) == '{"a":"é","b":[1,2.5,null]}'.encode()
    key.public_key().verify(
        base64.b64decode(doc["signature"]["value"]), canonical_json(body)
    )  # raises if not
    assert (
        doc["signature"]["key_id"]
        == hashlib.sha256(base64.b64decode(doc["signature"]["public_key"])).hexdigest()
    )


def test_lethe_verify_command(succeeded, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    client, job, _ = succeeded
    path = tmp_path / "certificate.json"
    path.write_bytes(client.get(f"/v1/jobs/{job['id']}/certificate").content)
    key = client.get("/v1/signing-key").json()
    (tmp_path / "key.pem").write_text(key["public_key_pem"])
    adapter = tmp_path / "adapter.tar.gz"
    adapter.write_bytes(client.get(f"/v1/jobs/{job['id']}/artifacts/adapter.tar.gz").content)
    assert (
        main(
            [
                "verify",
                str(path),
                "--public-key",
                str(tmp_path / "key.pem"),
                "--adapter",
                str(adapter),
                "--dataset",
                str(EXAMPLES / "tiny_forget.jsonl"),
            ]
        )
        == 0
    )
    assert "OK: signature valid, signed by the pinned key" in capsys.readouterr().out
    assert main(["verify", str(path), "--key-id", "00" * 32]) == 1
    assert main(["verify", str(path), "--dataset", str(EXAMPLES / "tiny_normal.jsonl")]) == 1
    path.write_bytes(path.read_bytes().replace(b'"forget_nll":3.0', b'"forget_nll":3.5'))
    assert main(["verify", str(path), "--key-id", key["key_id"]]) == 1
    assert "does not match the certificate's content" in capsys.readouterr().out


def test_only_succeeded_jobs_have_certificates(queued_client: TestClient) -> None:
    ref = upload(queued_client).json()["reference"]
    job = queued_client.post("/v1/jobs", json=job_spec(ref)).json()
    reply = queued_client.get(f"/v1/jobs/{job['id']}/certificate")
    assert reply.status_code == 409 and "queued" in reply.json()["detail"]


def test_the_signing_key_is_created_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = load_signing_key(settings)
    assert stat.S_IMODE(settings.signing_key_path.stat().st_mode) == 0o600
    assert key_id(load_signing_key(settings).public_key()) == key_id(first.public_key())
    settings.signing_key_path.write_text("not a key")
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        load_signing_key(settings)


def test_non_canonical_base64_in_the_signature_block_is_rejected() -> None:
    # A 32-byte key and a 64-byte signature both end in '=' padding: the last character before it
    # carries unused bits, so two spellings decode to the same bytes. Only the signed one may pass.
    key = Ed25519PrivateKey.generate()
    document = json.loads(sign(key, {"format": "x"}))
    for field in ("public_key", "value"):
        text = document["signature"][field]
        body, padding = text.rstrip("="), text[len(text.rstrip("=")) :]
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        twin = body[:-1] + alphabet[alphabet.index(body[-1]) ^ 1] + padding
        changed = json.loads(json.dumps(document))
        changed["signature"][field] = twin
        raw = json.dumps(changed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        result = verify_bytes(raw, key.public_key())
        assert not result.ok and "non-canonical" in result.reason, (field, result.reason)
