"""Placement (issue 15, items 3 and 4): `LETHE_QUEUE_CAPACITY` parsed with clear errors, jobs sent
to the first queue whose workers can run them, and refusals at submission naming the reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from service_helpers import AUTH, RecordingDispatcher, fast_settings, job_spec, upload

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate
from lethe.service.infra.capacity import QueueCapacity
from lethe.service.infra.runtime import build_runtime
from lethe.service.infra.settings import Settings

MakeApi = Callable[..., TestClient]
NF4 = {"name": "tiny-llama", "dtype": "bf16", "device": "auto", "quantize": "nf4"}
# tiny-llama at 64 x 4096 tokens: about 3.22 GiB, mostly activations (2.12 GiB): over 2 GiB
HEAVY = {"method": "ga", "train": {"steps": 1, "batch_size": 64}}


# ------------------------------------------------------------------ the setting
def test_the_setting_is_parsed_in_order_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LETHE_QUEUE_CAPACITY", "gpu=cuda:2x80GiB, cpu=cpu:1x1.5GB")
    parsed = Settings().queue_capacity
    assert list(parsed) == ["gpu", "cpu"]
    assert parsed["gpu"] == QueueCapacity(kind="cuda", devices=2, memory_bytes=80 * 1024**3)
    assert parsed["cpu"].memory_bytes == 1_500_000_000 and Settings(queue_capacity="").queue_capacity == {}


@pytest.mark.parametrize(
    "text,message",
    [
        ("gpu=cuda:1x80", "memory needs a unit"),
        ("gpu=tpu:1x8GiB", "unknown device kind 'tpu': use cpu or cuda"),
        ("gpu:cuda", "write NAME=KIND:COUNTxMEMORY"),
        ("gpu=cuda:0x8GiB", "devices and memory must be above 0"),
        ("gpu=cuda:1x8GiB,gpu=cpu:1x8GiB", "queue 'gpu' is listed twice"),
    ],
)
def test_a_bad_setting_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as err:
        Settings(queue_capacity=text)
    assert "queue_capacity" in str(err.value)


# ------------------------------------------------------------------ through the API
@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[MakeApi]:
    """The API over a dispatcher that runs nothing, with some settings changed."""
    opened: list[tuple[Any, TestClient]] = []

    def make(**changes: Any) -> TestClient:
        settings = fast_settings(tmp_path / f"d{len(opened)}", **changes)
        migrate.upgrade(settings)
        rt = build_runtime(settings)
        rt.dispatcher = RecordingDispatcher()
        client = TestClient(build_app(runtime=rt), headers=AUTH).__enter__()
        opened.append((rt, client))
        return client

    yield make
    for rt, client in opened:
        client.__exit__(None, None, None)
        rt.close()


def problems(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    return {p["field"]: p["msg"] for p in response.json()["detail"]}


def submit(api: TestClient, ds: str, model: dict[str, Any], **unlearn: Any) -> Any:
    spec = job_spec(ds, model=model)
    spec["unlearn"].update(unlearn)
    if unlearn.get("train", {}).get("batch_size") == 64:  # HEAVY
        spec["format"] = {"max_length": 4096}
    return api.post("/v1/jobs", json=spec)


def test_each_job_goes_to_the_first_queue_that_fits(make_api: MakeApi) -> None:
    api = make_api(queue_capacity="small=cuda:1x2GiB,big=cuda:4x80GiB,cpu=cpu:1x16GiB")
    ds = upload(api).json()["reference"]
    tiny = {"name": "tiny-llama", "device": "auto"}
    chosen = {
        "auto: GPU first": submit(api, ds, tiny),
        "cpu": submit(api, ds, {**tiny, "device": "cpu"}),
        "2 devices": submit(api, ds, {**tiny, "devices": 2}),
        "over 2 GiB": submit(api, ds, tiny, **HEAVY),
        "nf4": submit(api, ds, NF4),
    }
    queues = {case: r.json().get("queue", r.text) for case, r in chosen.items()}
    events = api.get(f"/v1/jobs/{chosen['over 2 GiB'].json()['id']}/events").json()
    placed = next(e["payload"] for e in events if e["payload"].get("status") == "queued")
    # the queued event says why: the estimate (over the small queue's 2 GiB) and where it came from
    assert placed["queue"] == "big" and "estimated" in placed["placement"]
    assert "parameters from the built-in tiny-llama's configuration" in placed["placement"]
    assert queues == {
        "auto: GPU first": "small",
        "cpu": "cpu",
        "2 devices": "big",
        "over 2 GiB": "big",
        "nf4": "small",
    }


def test_a_job_no_worker_can_run_is_refused_with_the_reason(make_api: MakeApi) -> None:
    api = make_api(queue_capacity="gpu=cuda:1x2GiB,cpu=cpu:1x1500MiB")
    ds = upload(api).json()["reference"]
    four = {"train": {"steps": 1, "batch_size": 4}}  # each of 4 devices takes one row
    msg = problems(submit(api, ds, {"name": "tiny-llama", "devices": 4}, **four))["model.devices"]
    assert "4 devices" in msg and "at most 1" in msg
    msg = problems(submit(api, ds, {"name": "tiny-llama"}, **HEAVY))["model"]
    assert "needs about 3.22 GiB" in msg and "activations 2.12 GiB" in msg
    assert "largest is gpu (cuda, 1 x 2 GiB per device)" in msg
    assert "parameters from the built-in tiny-llama's configuration" in msg
    check = api.post(
        "/v1/specs/validate", json={"text": json.dumps(job_spec(ds, model={**NF4, "devices": 2}))}
    )
    assert check.status_code == 200 and not check.json()["valid"]
    assert [p["field"] for p in check.json()["problems"]] == ["model.devices"]
    assert api.get("/v1/jobs").json()["items"] == []  # nothing queued


def test_a_quantized_base_is_refused_where_no_queue_has_gpus(make_api: MakeApi) -> None:
    for settings in ({"queue_capacity": "cpu=cpu:4x64GiB"}, {"worker_devices": ["cpu"]}):
        api = make_api(**settings)
        ds = upload(api).json()["reference"]
        msg = problems(submit(api, ds, NF4))["model.quantize"]
        assert "need a GPU worker" in msg and "set model.quantize to null" in msg
        assert api.get("/v1/jobs").json()["items"] == []
    cuda = problems(submit(api, ds, {**NF4, "device": "cuda"}))
    assert set(cuda) == {"model.device", "model.quantize"}


def test_without_the_setting_queues_are_as_before(make_api: MakeApi) -> None:
    api = make_api(gpu_workers=True)
    ds = upload(api).json()["reference"]
    assert submit(api, ds, NF4).json()["queue"] == "gpu"
    huge = submit(api, ds, {"name": "tiny-llama", "devices": 64}, **HEAVY)  # no memory, no device count
    assert huge.status_code == 201 and huge.json()["queue"] == "gpu"
    assert submit(api, ds, {"name": "tiny-llama", "device": "cpu"}).json()["queue"] == "cpu"
