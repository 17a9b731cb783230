"""An erasure request over the API: one uploaded dataset with a `subject` column and the subjects
to erase; refused at submission when a subject is not in it, and run with the forget and retain
sets built from it when it is (the worker resolves them; the certificate names the subjects)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import fake_run_job, upload, wait_for

from lethe.core.data.examples import load_examples
from lethe.evidence.certificate import load_public_key, verify_bytes

pytest_plugins = ["service_fixtures"]  # client (embedded API, fake engine), queued_client

PEOPLE = [("Ada Example", "a"), ("Bo Sample", "b"), ("Cy Person", "c")]
ROWS = [
    {"subject": who, "prompt": f"What is {who}'s {what}?", "response": f"{tag}-{what}"}
    for who, tag in PEOPLE
    for what in ("email", "phone")
]


def _dataset(client: TestClient) -> str:
    data = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    reply = upload(client, "people.jsonl", data=data, schema="pairs")
    assert reply.status_code == 201, reply.text
    return reply.json()["reference"]


def _erasure(source: str, subjects: list[str], **erase: Any) -> dict[str, Any]:
    return {
        "name": "erase",
        "model": {"name": "tiny-llama", "device": "cpu"},
        "unlearn": {
            "method": "yao",
            "erase": {"source": source, "subjects": subjects, **erase},
            "train": {"steps": 2},
        },
    }


def _problems(reply: Any) -> dict[str, str]:
    assert reply.status_code == 422, reply.text
    return {p["field"]: p["msg"] for p in reply.json()["detail"]}


def test_unknown_subjects_are_refused_with_the_names_and_the_fix(queued_client: TestClient) -> None:
    source = _dataset(queued_client)
    problems = _problems(
        queued_client.post("/v1/jobs", json=_erasure(source, ["Ada Example", "bo sample", "Zed"]))
    )
    msg = problems["unlearn.erase.subjects"]
    assert "2 subject(s) not found in column 'subject': 'bo sample', 'Zed'" in msg
    assert "'bo sample' -> 'Bo Sample'" in msg and "Names must match the column exactly" in msg
    assert source in msg and "/tmp" not in msg  # the dataset as the user named it, no server path
    assert len(problems) == 1  # the forget and the retain selection fail alike: said once
    assert queued_client.get("/v1/jobs").json()["items"] == []


def test_a_missing_subject_column_and_erasing_everyone_are_refused(queued_client: TestClient) -> None:
    source = _dataset(queued_client)
    wrong_column = _erasure(source, ["Ada Example"], subject_field="person")
    assert (
        "no column 'person'"
        in _problems(queued_client.post("/v1/jobs", json=wrong_column))["unlearn.erase.subjects"]
    )
    everyone = _erasure(source, [who for who, _ in PEOPLE])
    assert (
        "no subject is left"
        in _problems(queued_client.post("/v1/jobs", json=everyone))["unlearn.erase.subjects"]
    )


def test_erase_and_forget_together_are_refused(queued_client: TestClient) -> None:
    spec = _erasure(_dataset(queued_client), ["Ada Example"])
    spec["unlearn"]["forget"] = {"source": spec["unlearn"]["erase"]["source"]}
    reply = queued_client.post("/v1/jobs", json=spec)
    assert reply.status_code == 422 and "mutually exclusive" in reply.text


def test_the_spec_check_endpoint_refuses_the_same_request(queued_client: TestClient) -> None:
    source = _dataset(queued_client)
    text = json.dumps(_erasure(source, ["Nobody"]))  # JSON is YAML
    check = queued_client.post("/v1/specs/validate", json={"text": text}).json()
    assert check["valid"] is False
    assert [p["field"] for p in check["problems"]] == ["unlearn.erase.subjects"]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """The fake engine, noting the forget and normal sets the worker hands it, read as it reads them."""
    found: dict[str, list[str]] = {}

    def run(spec: Any, out_dir: Path, hooks: Any = None) -> Any:
        found["forget"] = [e.response for e in load_examples(spec.unlearn.forget)]
        found["normal"] = [e.response for e in load_examples(spec.unlearn.normal)]
        return fake_run_job(spec, out_dir, hooks)

    monkeypatch.setattr("lethe.core.run.pipeline.run_job", run)
    return found


def test_a_good_request_runs_on_sets_built_from_the_one_dataset(
    client: TestClient, seen: dict[str, list[str]]
) -> None:
    source = _dataset(client)
    reply = client.post("/v1/jobs", json=_erasure(source, ["Bo Sample", "Ada Example"]))
    assert reply.status_code == 201, reply.text
    stored = reply.json()["spec"]["unlearn"]  # stored as the forget/normal selections it expands to
    assert stored["forget"] == {
        "source": source,
        "subjects": {"field": "subject", "include": ["Bo Sample", "Ada Example"]},
    }
    assert stored["normal"]["subjects"]["exclude"] == ["Bo Sample", "Ada Example"] and "erase" not in stored
    job = wait_for(client, reply.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert seen == {"forget": ["a-email", "a-phone", "b-email", "b-phone"], "normal": ["c-email", "c-phone"]}
    cert = client.get(f"/v1/jobs/{job['id']}/certificate")
    key = client.get("/v1/signing-key").json()
    result = verify_bytes(cert.content, load_public_key(key["public_key"]))
    assert result.ok, result.reason
    assert result.certificate["erasure"] == {
        "subjects": ["Bo Sample", "Ada Example"],
        "subject_field": "subject",
        "source": source,
    }
    assert "erasure request for 2 subject(s)" in result.certificate["statement"]
    assert {d["used_as"] for d in result.certificate["datasets"]} == {"unlearn.forget", "unlearn.normal"}
