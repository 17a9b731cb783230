"""Datasets by reference: s3:// objects in allowed buckets (moto on loopback) and hub ids, and how
a worker turns `dataset:<id>` and `s3://` references into files the engine reads."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, EXAMPLES, fast_settings, job_spec

from lethe.cli.wiring import build_app
from lethe.core.spec.job import parse_spec
from lethe.service.infra import migrate
from lethe.service.infra.errors import Invalid
from lethe.service.storage.resolve import DatasetChanged, resolve_datasets

pytest_plugins = ["service_fixtures"]  # s3_endpoint (moto on loopback), aws_env, fake_engine
FORGET = (EXAMPLES / "tiny_forget.jsonl").read_bytes()


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None):  # noqa: ANN201
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="corpora")
    s3.put_object(Bucket="corpora", Key="sets/forget.jsonl", Body=FORGET)
    yield s3
    for item in s3.list_objects_v2(Bucket="corpora").get("Contents", []):
        s3.delete_object(Bucket="corpora", Key=item["Key"])
    s3.delete_bucket(Bucket="corpora")


@pytest.fixture
def api(tmp_path: Path, s3_endpoint: str, bucket, fake_engine) -> TestClient:  # noqa: ANN001
    settings = fast_settings(tmp_path / "d", allowed_s3_buckets=["corpora"], s3_endpoint_url=s3_endpoint)
    migrate.upgrade(settings)
    with TestClient(build_app(settings), headers=AUTH) as client:
        yield client


def test_s3_object_is_validated_and_hashed_at_registration(api: TestClient) -> None:
    r = api.post("/v1/datasets/register", json={"source": "s3://corpora/sets/forget.jsonl", "name": "f"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (body["kind"], body["row_count"], body["format"]) == ("s3", 8, "jsonl")
    assert body["sha256"] == hashlib.sha256(FORGET).hexdigest()
    missing = api.post("/v1/datasets/register", json={"source": "s3://corpora/nope.jsonl"})
    assert missing.status_code == 422 and "cannot read" in missing.json()["detail"][0]["msg"]


def test_references_resolve_to_local_files(api: TestClient, bucket, tmp_path: Path) -> None:  # noqa: ANN001
    rt = api.app.state.runtime
    registered = api.post("/v1/datasets/register", json={"source": "s3://corpora/sets/forget.jsonl"}).json()
    uploaded = api.post(
        "/v1/datasets",
        files={"file": ("q.jsonl", b'{"question": "q", "answer": "a"}\n')},
        data={"columns": '{"prompt": "question", "response": "answer"}'},
    ).json()
    spec = parse_spec(
        job_spec(
            registered["reference"],
            normal=uploaded["reference"],
            eval={"harmful_prompts": {"source": "s3://corpora/sets/forget.jsonl", "schema": "prompts"}},
        )
    )
    submitted = spec.model_dump()
    resolved = resolve_datasets(rt, spec, tmp_path / "datasets")
    forget, normal = resolved.unlearn.forget, resolved.unlearn.normal
    assert normal is not None
    assert Path(forget.source).read_bytes() == FORGET and forget.format == "jsonl"
    assert normal.columns == {"prompt": "question", "response": "answer"}  # declared at upload
    assert resolved.eval.harmful_prompts is not None
    assert Path(resolved.eval.harmful_prompts.source).read_bytes() == FORGET
    assert spec.model_dump() == submitted  # a resolved copy: the submitted spec is unchanged

    bucket.put_object(Bucket="corpora", Key="sets/forget.jsonl", Body=FORGET + FORGET)
    again = parse_spec(job_spec(registered["reference"]))
    with pytest.raises(DatasetChanged, match="changed since it was registered"):
        resolve_datasets(rt, again, tmp_path / "other")


def test_a_spec_setting_its_own_schema_wins(api: TestClient, tmp_path: Path) -> None:
    rt = api.app.state.runtime
    ds = api.post("/v1/datasets", files={"file": ("f.jsonl", FORGET)}, data={"schema": "pairs"}).json()
    spec = parse_spec(
        job_spec(ds["reference"], eval={"harmful_prompts": {"source": ds["reference"], "schema": "prompts"}})
    )
    resolved = resolve_datasets(rt, spec, tmp_path)
    assert resolved.eval.harmful_prompts is not None
    assert (resolved.unlearn.forget.schema_, resolved.eval.harmful_prompts.schema_) == ("pairs", "prompts")


def test_job_on_an_unlisted_bucket_is_refused(api: TestClient) -> None:
    r = api.post("/v1/jobs", json=job_spec("s3://private/x.jsonl"))
    assert r.status_code == 422
    assert "LETHE_ALLOWED_S3_BUCKETS: corpora" in r.json()["detail"][0]["msg"]
    with pytest.raises(Invalid):
        from lethe.service.storage.datasets import check_s3_uri

        check_s3_uri(api.app.state.runtime, "s3://Bad_Bucket/x")
