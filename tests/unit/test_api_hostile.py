"""The malformed-input suite: bad datasets, bad references and bad job specs each get a 4xx whose
message says what to fix, and nothing is written (database rows and storage files unchanged)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import AUTH, fast_settings, job_spec, upload
from sqlalchemy import func, select

from lethe.cli.wiring import build_app
from lethe.service.infra import db, migrate

pytest_plugins = ["service_fixtures"]
ROW = b'{"prompt": "p", "response": "r"}\n'
TABLES = (db.Dataset, db.Job, db.JobEvent, db.JobDataset, db.Artifact, db.IdempotencyRecord, db.ApiKey)
Send = Callable[[TestClient, str], Any]
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(tmp_path: Path, fake_engine: None) -> Iterator[TestClient]:
    settings = fast_settings(
        tmp_path / "d",
        max_row_kb=4,
        max_json_kb=64,
        max_upload_mb=1,
        allowed_s3_buckets=["corpora"],
        hub_access=True,  # registering hf: references (refused without hub access: test_api_limits)
    )
    migrate.upgrade(settings)
    with TestClient(build_app(settings), headers=AUTH) as client:
        yield client


def state(client: TestClient) -> tuple[dict[str, int], list[str]]:
    """Row counts of the service's tables and every file under the data folder but the database."""
    rt = client.app.state.runtime
    with rt.sessions() as session:
        counts = {t.__tablename__: session.scalar(select(func.count()).select_from(t)) for t in TABLES}
    files = sorted(
        str(p.relative_to(rt.settings.data_dir))
        for p in rt.settings.data_dir.rglob("*")
        if p.is_file() and not p.name.startswith("lethe.db")
    )
    return counts, files


def up(data: bytes, filename: str = "a.jsonl", **form: str) -> Send:
    return lambda c, _ds: c.post("/v1/datasets", files={"file": (filename, data)}, data=form)


def register(source: str) -> Send:
    return lambda c, _ds: c.post("/v1/datasets/register", json={"source": source})


def spec(change: Callable[[dict[str, Any]], object]) -> Send:
    def send(c: TestClient, ds: str) -> Any:
        body = job_spec(ds)
        change(body)
        return c.post("/v1/jobs", json=body)

    return send


def ascii_json(path: str, body: Callable[[str], object]) -> Send:
    """POST JSON with escapes (`"\\ud800"`), which a lone surrogate needs: the test client
    writes UTF-8, and cannot write one."""
    return lambda c, ds: c.post(path, content=json.dumps(body(ds)), headers=JSON)


def raw_spec(ds: str, train: str) -> bytes:
    """A spec as JSON text, for numbers `json.dumps` cannot write (1e999, thousands of digits)."""
    return (
        f'{{"model": {{"name": "tiny-llama", "device": "cpu"}}, "unlearn": {{"method": "ga", '
        f'"forget": {{"source": "{ds}"}}, "train": {{{train}}}}}}}'
    ).encode()


def source(field: str, value: str) -> Send:
    return spec(lambda s: s.setdefault("eval", {}).update({field: {"source": value}}))


CASES: dict[str, tuple[Send, int, str]] = {
    # datasets
    "wrong columns": (up(b'{"question": "q", "answer": "a"}\n'), 422, "columns: {prompt"),
    "empty file": (up(b""), 422, "empty"),
    "UTF-16 text": (up('{"prompt": "p", "response": "é"}\n'.encode("utf-16")), 422, "save it as UTF-8"),
    "Latin-1 CSV": (up("prompt,response\nh\xe9,r\n".encode("latin-1"), "a.csv"), 422, "UTF-8"),
    "not JSON lines": (up(b"not json\n"), 422, "one JSON object per line"),
    "rows that are not objects": (up(b"[1, 2]\n"), 422, "must be an object"),
    "missing prompt value": (up(b'{"prompt": null, "response": "r"}\n'), 422, "fix or remove the row"),
    "header-only CSV": (up(b"prompt,response\n", "a.csv"), 422, "no data rows"),
    "corrupt parquet": (up(b"PAR1 not really", "a.parquet"), 422, "re-export"),
    "huge row": (up(json.dumps({"prompt": "x" * 6000, "response": "r"}).encode()), 413, "LETHE_MAX_ROW_KB"),
    "lone surrogate in a prompt": (up(ROW + b'{"prompt": "a\\ud800b", "response": "r"}\n'), 422, "row 2"),
    "lone surrogate in a prompts set": (
        up(b'{"prompt": "\\udfff"}\n', schema="prompts"),
        422,
        "row 1: the prompt holds '\\udfff', half of a UTF-16 surrogate pair",
    ),
    "lone surrogate in an answer": (up(b'{"prompt": "p", "response": "\\ud83d"}\n'), 422, "replace it"),
    "lone surrogate in registered columns": (
        ascii_json(
            "/v1/datasets/register", lambda _ds: {"source": "hf:a/b", "columns": {"prompt": "\ud800"}}
        ),
        422,
        "columns.prompt: holds '\\ud800', half of a UTF-16 surrogate pair",
    ),
    "upload over the size limit": (up(ROW * 40_000), 413, "LETHE_MAX_UPLOAD_MB"),
    "unknown schema": (up(ROW, schema="nope"), 422, "pairs"),
    "unknown format": (up(ROW, format="xlsx"), 422, "jsonl"),
    "columns not JSON": (up(ROW, columns="{bad"), 422, "send an object"),
    "format not told by the name": (up(ROW, "data.bin"), 422, "set format"),
    "private-address URL registered": (
        register("http://169.254.169.254/latest/meta-data"),
        422,
        "s3://BUCKET/KEY",
    ),
    "file URL registered": (register("file:///etc/passwd"), 422, "s3://BUCKET/KEY"),
    "bucket not allowed": (register("s3://secrets/x.jsonl"), 422, "LETHE_ALLOWED_S3_BUCKETS"),
    "malformed hub id": (register("hf:../../etc"), 422, "hf:ORG/NAME"),
    # job specs
    "negative learning rate": (spec(lambda s: s["unlearn"]["train"].update(lr=-0.1)), 422, "greater than 0"),
    "zero steps": (spec(lambda s: s["unlearn"]["train"].update(steps=0)), 422, "greater than or equal to 1"),
    "steps over the job limit": (
        spec(lambda s: s["unlearn"]["train"].update(steps=1_000_000_000_000)),
        422,
        "unlearn.train.steps: 1000000000000 is over this deployment's limit of 100000 (LETHE_MAX_JOB_STEPS)",
    ),
    "a huge number": (spec(lambda s: s["unlearn"]["train"].update(steps=2**70)), 422, str(2**70)),
    "epochs over the job limit": (
        spec(lambda s: s["unlearn"].update(train={"epochs": 1e12})),
        422,
        "unlearn.train.epochs: 1e+12 epochs over 8 examples make about",
    ),
    "infinite epochs": (
        lambda c, ds: c.post("/v1/jobs", content=raw_spec(ds, '"epochs": 1e999'), headers=JSON),
        422,
        "LETHE_MAX_JOB_STEPS",
    ),
    "relearn probe steps over the job limit": (
        spec(lambda s: s.update(probes={"relearn": {"steps": 10**9}})),
        422,
        "probes.relearn.steps: 1000000000 is over",
    ),
    "unknown method": (spec(lambda s: s["unlearn"].update(method="magic")), 422, "magic"),
    "unknown field": (spec(lambda s: s.update(colour="red")), 422, "Extra inputs"),
    "LoRA rank 0": (spec(lambda s: s.update(lora={"rank": 0})), 422, "greater than or equal to 1"),
    "lone surrogate in a spec": (
        ascii_json("/v1/jobs", lambda ds: job_spec(ds, lora={"target_modules": ["q_proj", "\udc00"]})),
        422,
        "lora.target_modules.1: holds '\\udc00'",
    ),
    "model not allowed": (spec(lambda s: s["model"].update(name="evil/model")), 422, "LETHE_ALLOWED_MODELS"),
    "model path": (spec(lambda s: s["model"].update(name="/etc")), 422, "LETHE_ALLOWED_MODELS"),
    "remote code": (spec(lambda s: s["model"].update(trust_remote_code=True)), 422, "set it to false"),
    "judge model path": (
        spec(lambda s: s.update(eval={"judge": {"kind": "checkpoint", "path": "/tmp"}})),
        422,
        "leave it unset",
    ),
    "judge check set path": (
        spec(lambda s: s.update(eval={"judge": {"check_set": "/etc/passwd"}})),
        422,
        "builtin:",
    ),
    "path traversal": (source("normal", "../../../../etc/passwd"), 422, "dataset:<id>"),
    "absolute path": (source("normal", "/etc/passwd"), 422, "dataset:<id>"),
    "private-address URL": (source("normal", "http://10.0.0.1/data.jsonl"), 422, "URLs are not fetched"),
    "file URL": (source("normal", "file:///etc/passwd"), 422, "URLs are not fetched"),
    "unknown builtin": (source("normal", "builtin:../../secrets"), 422, "shipped datasets"),
    "unknown dataset id": (
        source("normal", "dataset:0b6f5d0e-1c1e-4d7a-9a7e-1a2b3c4d5e6f"),
        422,
        "POST /v1/datasets",
    ),
    "malformed dataset id": (source("normal", "dataset:xyz"), 422, "use the id"),
    "control characters": (source("normal", "builtin:a\x00b"), 422, "control characters"),
    "spec body over the limit": (
        spec(lambda s: s.update(name="x", padding="y" * 70_000)),
        413,
        "LETHE_MAX_JSON_KB",
    ),
    "not JSON at all": (
        lambda c, _ds: c.post("/v1/jobs", content=b"{nope", headers={"Content-Type": "application/json"}),
        422,
        "JSON",
    ),
    "JSON nested too deeply": (
        lambda c, _ds: c.post("/v1/jobs", content=b'{"a": ' * 5000 + b"1" + b"}" * 5000, headers=JSON),
        422,
        "body: the JSON body cannot be read (it is nested too deeply)",
    ),
    "a number too long to read": (
        lambda c, ds: c.post("/v1/jobs", content=raw_spec(ds, '"steps": ' + "9" * 5000), headers=JSON),
        422,
        "body: the JSON body cannot be read",
    ),
    "bad Idempotency-Key": (
        lambda c, ds: c.post("/v1/jobs", json=job_spec(ds), headers={"Idempotency-Key": "k" * 500}),
        422,
        "printable",
    ),
}


def message(response: Any) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " | ".join(f"{d['field']}: {d['msg']}" for d in detail)


@pytest.mark.parametrize("kind", list(CASES))
def test_bad_input_gets_a_4xx_that_says_what_to_fix_and_writes_nothing(api: TestClient, kind: str) -> None:
    send, status, words = CASES[kind]
    dataset = upload(api).json()["reference"]
    before = state(api)
    r = send(api, dataset)
    assert r.status_code == status, (kind, r.status_code, r.text[:500])
    assert words in message(r), (kind, message(r))
    assert state(api) == before, kind


def test_the_suite_is_broad() -> None:
    print(f"EVIDENCE malformed inputs: {len(CASES)} kinds")
    assert len(CASES) >= 20


def test_names_are_sanitised(api: TestClient) -> None:
    r = api.post(
        "/v1/datasets",
        files={"file": ("../../etc/\u202egnp.jsonl", ROW)},
        data={"name": "a\r\nX-Injected: 1\x00/../b"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "b"  # the last path part, printable characters only
    r = upload(api, "..\\..\\evil.jsonl", ROW)
    assert r.json()["name"] == "evil.jsonl"


def test_a_malformed_body_is_named_body_with_the_position_in_the_message(api: TestClient) -> None:
    r = api.post("/v1/jobs", content=b'{"name": "t", "model": 1,', headers=JSON)
    assert r.status_code == 422
    assert r.json()["detail"] == [
        {
            "field": "body",
            "msg": "not valid JSON (Expecting property name enclosed in double quotes at character 25): "
            "send one JSON object",
        }
    ]


def test_413_states_the_configured_limit(tmp_path: Path, fake_engine: None) -> None:
    """The limits as set, not the bytes enforced (an upload gets 1 MiB more for its form fields),
    nor a rounding (1536 KiB is not `1 MiB`)."""
    settings = fast_settings(tmp_path / "d", max_upload_mb=1, max_json_kb=1536)
    migrate.upgrade(settings)
    with TestClient(build_app(settings), headers=AUTH) as client:
        r = client.post("/v1/datasets", files={"file": ("a.jsonl", ROW * 100_000)})  # over 2 MiB
        assert r.status_code == 413 and "larger than 1 MiB" in r.json()["detail"], r.text

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while it streams in
            yield b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
            yield from (ROW * 2048 for _ in range(50))

        r = client.post(
            "/v1/datasets", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=x"}
        )
        assert r.status_code == 413 and "larger than 1 MiB" in r.json()["detail"], r.text
        r = client.post("/v1/jobs", content=b" " * (1536 * 1024 + 1), headers=JSON)
        assert r.status_code == 413 and "larger than 1536 KiB" in r.json()["detail"], r.text


def test_an_escaped_surrogate_pair_is_text(api: TestClient) -> None:
    """Only a lone half is refused: a pair written as two escapes is one character."""
    body = json.dumps({"source": "hf:a/b", "name": "smile \U0001f600"})
    assert "\\ud83d\\ude00" in body
    r = api.post("/v1/datasets/register", content=body, headers=JSON)
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "smile \U0001f600"
