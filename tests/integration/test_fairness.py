"""Fair share across tenants and the time budget on the production shape: PostgreSQL, Redis, one
Celery worker (one job slot) running the real engine on the tiny model, and `lethe serve`.

Tenant A queues a huge job (stopped by A's time budget, a per-tenant override) and three small
ones; then tenant B queues one small job. B's job must start as soon as A's huge job has ended,
ahead of A's three (first in, first out would run B's last): B waits one job slot's time.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FAST, REDIS, worker_and_api
from faultstack import wait_until
from stackbase import throwaway_database, unavailable

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"
BUDGET_S = 8.0  # tenant A's own time budget per job (LETHE_TENANT_LIMITS)


@contextmanager
def own_redis_database() -> Iterator[str]:
    """A Redis database no other stack of this session consumes from (their workers would take
    this test's tasks)."""
    import redis

    marker = f"lethe-fair-{uuid.uuid4().hex}"
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS}/{number}", socket_timeout=3)
        try:
            if client.set("lethe-test-owner", marker, nx=True, ex=3600) and client.dbsize() == 1:
                break
        except redis.RedisError as err:
            unavailable(f"Redis unreachable at {REDIS}: {err}")
    else:
        unavailable(f"no free Redis database at {REDIS}")
    try:
        yield f"{REDIS}/{number}"
    finally:
        client.flushdb()


@pytest.fixture(scope="module")
def fair_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The stack's URL and one API key per tenant (`tenant-a`, `tenant-b`)."""
    from lethe.service.infra import migrate
    from lethe.service.infra.runtime import build_runtime
    from lethe.service.infra.settings import Settings
    from lethe.service.trust import auth

    folder = tmp_path_factory.mktemp("fair-stack")
    with throwaway_database("lethe_fair") as db_url, own_redis_database() as redis_url:
        env = {
            **FAST,
            "LETHE_DATABASE_URL": db_url,
            "LETHE_BROKER_URL": redis_url,
            "LETHE_STORAGE": "local",
            "LETHE_STORAGE_DIR": str(folder / "storage"),  # shared by the API and the worker
            "LETHE_DATA_DIR": str(folder / "api"),
            "LETHE_TENANT_MAX_RUNNING": "4",
            "LETHE_QUOTA_RETRY_AFTER_S": "1",
            "LETHE_TENANT_LIMITS": json.dumps({"tenant-a": {"job_time_budget_s": BUDGET_S}}),
        }
        settings = Settings(database_url=db_url, data_dir=folder)
        migrate.upgrade(settings)
        rt = build_runtime(settings)
        keys = {t: auth.create_key(rt.sessions, t, "read,submit")[1] for t in ("tenant-a", "tenant-b")}
        rt.close()
        with worker_and_api(env, folder, "fair") as (url, _):
            yield url, keys


def tiny_job(client: httpx.Client, steps: int) -> str:
    with open(EXAMPLES / "tiny_forget.jsonl", "rb") as f:
        ref = client.post("/v1/datasets", files={"file": ("f.jsonl", f)}, data={"schema": "pairs"}).json()
    spec: dict[str, Any] = {
        "name": f"s{steps}",
        "model": {"name": "tiny-llama", "device": "cpu"},
        "format": {"max_length": 64},
        "unlearn": {"method": "ga", "forget": {"source": ref["reference"]}, "train": {"steps": steps}},
        "eval": {"max_examples": 1, "generation": {"max_new_tokens": 2}},
    }
    r = client.post("/v1/jobs", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_a_huge_job_holds_one_slot_and_the_other_tenant_goes_next(
    fair_stack: tuple[str, dict[str, str]],
) -> None:
    url, keys = fair_stack
    a, b = (httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {keys[t]}"})
            for t in ("tenant-a", "tenant-b"))  # fmt: skip
    huge = tiny_job(a, 100_000)
    job = lambda c, i: c.get(f"/v1/jobs/{i}").json()  # noqa: E731
    wait_until(lambda: job(a, huge)["status"] == "running", 120, "the huge job to start")
    small_a = [tiny_job(a, 2) for _ in range(3)]
    small_b = tiny_job(b, 2)
    ended = lambda c, i: job(c, i)["status"] in ("succeeded", "failed", "cancelled")  # noqa: E731
    wait_until(lambda: ended(b, small_b) and all(ended(a, i) for i in small_a), 180, "the small jobs")
    first, mine, others = job(a, huge), job(b, small_b), [job(a, i) for i in small_a]
    assert first["status"] == "failed" and "time budget" in first["error"], first
    assert mine["status"] == "succeeded" and all(o["status"] == "succeeded" for o in others)
    b_start = when(mine["started_at"])
    assert all(when(o["started_at"]) > b_start for o in others), "tenant A's queued jobs went first"
    wait = (b_start - when(mine["created_at"])).total_seconds()
    after_slot = (b_start - when(first["finished_at"])).total_seconds()
    ran = (when(first["finished_at"]) - when(first["started_at"])).total_seconds()
    assert after_slot < 5.0, f"B started {after_slot:.1f} s after the slot freed"
    print(
        f"EVIDENCE fairness (PostgreSQL + Celery, 1 worker): A's huge job stopped by its {BUDGET_S:g} s "
        f"budget after {ran:.1f} s; B's job waited {wait:.1f} s in all and started {after_slot:.2f} s "
        "after the slot freed, before A's 3 queued jobs"
    )
