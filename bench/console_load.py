"""The console's jobs page for a tenant with 1,000 jobs: time until the first page is rendered.

    python bench/console_load.py                  # 1,000 jobs, 7 loads
    python bench/console_load.py --jobs 5000 --loads 9

Makes a PostgreSQL database of its own, migrates it, writes the jobs straight into it (SQL bulk
inserts: realistic rows, with the metrics of a real run, the example spec and six events each,
and as many jobs of a second tenant, so the tenant filter has work to do), starts `lethe serve`
on it (Redis as broker, no worker: nothing runs) and opens `/jobs` in headless Debian chromium
through Playwright. Prints, per load, the milliseconds from the start of navigation until the
first page's rows are in the table, their median, and the API's own list latency (first page,
a page deep in the list, a status filter). Goal (issue 11): the page under a second. Prints
numbers; asserts nothing. Needs PostgreSQL and Redis on loopback (see bench/api_load.py).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api_load import (  # noqa: E402 - the other bench's stack helpers
    ROOT,
    _free_port,
    _spawn,
    percentile,
    postgres_database,
    redis_database,
)

KEY = f"lethe-bench-{uuid.uuid4().hex}"
TENANT = "default"  # the bootstrap key's tenant
PAGE_ROWS = 25  # the console's page size (api/console/static/pages/jobs.js)
ROWS_SHOWN = f"() => document.querySelectorAll('table.jobs tbody tr').length >= {PAGE_ROWS}"
METRICS = {  # the shape and size (about 2 KB) of a real run's headline metrics
    side: {
        "forget_nll": 3.7,
        "normal_ppl": 65.2,
        "harmful_rate": 0.1,
        **{f"privacy_qa/Person {i}": 0.0 for i in range(20)},
        **{f"privacy_auc_minkpp/Person {i}": 0.5 for i in range(20)},
    }
    for side in ("before", "after")
}


def job_rows(
    tenant: str, count: int, spec: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`count` ended jobs over the last 30 days (a few failed or cancelled) and their events."""
    now, rng = datetime.now(UTC), random.Random(tenant)  # aware: UTCDateTime refuses naive
    jobs, events = [], []
    for i in range(count):
        created = now - timedelta(seconds=rng.uniform(60, 30 * 86400))
        started, finished = created + timedelta(seconds=2), created + timedelta(seconds=300)
        status = "failed" if i % 37 == 0 else "cancelled" if i % 53 == 0 else "succeeded"
        job_id = uuid.uuid4()
        progress = {
            "stage": "eval_after",
            "step": 40,
            "total": 40,
            "losses": {},
            "eta_s": 0.0,
            "elapsed_s": 30.0,
        }
        jobs.append(
            {
                "id": job_id, "tenant": tenant, "name": f"job-{i:04d}", "status": status,
                "stage": "eval_after", "spec": spec, "progress": progress,
                "metrics": METRICS if status == "succeeded" else None,
                "error": "out of memory" if status == "failed" else None, "queue": "cpu",
                "attempts": 1, "cancel_requested": status == "cancelled", "created_at": created,
                "started_at": started, "finished_at": finished, "heartbeat_at": finished,
                "submitted_by": "bootstrap", "submitted_by_name": "bootstrap",
            }
        )  # fmt: skip
        kinds = [
            ("status", {"status": "queued"}),
            ("status", {"status": "running"}),
            ("stage", {"stage": "unlearn"}),
        ]
        kinds += [("progress", progress), ("stage", {"stage": "eval_after"}), ("status", {"status": status})]
        events += [{"job_id": job_id, "ts": started, "kind": k, "payload": p} for k, p in kinds]
    return jobs, events


def seed(database_url: str, count: int) -> float:
    """Write `count` jobs of TENANT and of another tenant; returns the seconds it took."""
    from sqlalchemy import create_engine, insert

    from lethe.service.infra.db import Job, JobEvent

    spec = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    start = time.perf_counter()
    engine = create_engine(database_url)
    with engine.begin() as conn:
        for tenant in (TENANT, "neighbour"):
            jobs, events = job_rows(tenant, count, spec)
            conn.execute(insert(Job.__table__), jobs)
            conn.execute(insert(JobEvent.__table__), events)
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")  # as autovacuum would soon: plans for the real row counts
    engine.dispose()
    return time.perf_counter() - start


@contextmanager
def server(count: int) -> Iterator[str]:
    """A seeded PostgreSQL database and `lethe serve` on it."""
    with tempfile.TemporaryDirectory(prefix="lethe-console-bench-") as tmp, ExitStack() as stack:
        folder = Path(tmp)
        env = {
            "LETHE_DATA_DIR": str(folder / "data"), "LETHE_LOG_LEVEL": "warning", "HF_HUB_OFFLINE": "1",
            "LETHE_STORAGE": "local", "LETHE_STORAGE_DIR": str(folder / "storage"),
            "LETHE_DATABASE_URL": stack.enter_context(postgres_database()),
            "LETHE_BROKER_URL": stack.enter_context(redis_database()), "LETHE_BOOTSTRAP_KEY": KEY,
        }  # fmt: skip
        subprocess.run(
            [sys.executable, "-m", "lethe", "db", "upgrade"], env={**os.environ, **env}, check=True, cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        seconds = seed(env["LETHE_DATABASE_URL"], count)
        print(f"seeded {count} jobs (and {count} of another tenant) in {seconds:.1f} s")
        port = _free_port()
        cmd = [sys.executable, "-m", "lethe", "serve", "--host", "127.0.0.1", "--port", str(port)]
        api = _spawn(cmd, env, folder / "api.log")
        url = f"http://127.0.0.1:{port}"
        try:
            wait_up(url, api, folder / "api.log")
            yield url
        finally:
            api.terminate()
            api.wait(timeout=30)


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Up (`/healthz`): no worker runs here, so `/readyz` would wait for one in vain."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"server not up after 120 s:\n{log.read_text()[-2000:]}")


def page_loads(url: str, loads: int) -> list[float]:
    """Milliseconds from navigation start to the first page's rows, per load (the first cold)."""
    from playwright.sync_api import sync_playwright

    times = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"]
        )
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        page.goto(f"{url}/sign-in")
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_function(ROWS_SHOWN)
        for _ in range(loads):
            page.goto("about:blank")
            page.goto(f"{url}/jobs", wait_until="commit")
            times.append(page.wait_for_function(f"() => ({ROWS_SHOWN})() && performance.now()").json_value())
        browser.close()
    return times


def api_latency(url: str, n: int = 40) -> None:
    """The list route as the console calls it: the first page, page 20, a status filter."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        cursor = None
        for _ in range(19):
            cursor = client.get(
                "/v1/jobs", params={"limit": PAGE_ROWS, **({"cursor": cursor} if cursor else {})}
            ).json()["next_cursor"]
        cases = {
            "first page": {"limit": PAGE_ROWS},
            "page 20": {"limit": PAGE_ROWS, "cursor": cursor},
            "status=failed": {"limit": PAGE_ROWS, "status": "failed"},
        }
        for name, params in cases.items():
            ms = []
            for _ in range(n):
                start = time.perf_counter()
                client.get("/v1/jobs", params=params).raise_for_status()
                ms.append((time.perf_counter() - start) * 1000)
            p50, p99 = percentile(ms, 50), percentile(ms, 99)
            print(f"  GET /v1/jobs {name:14s} p50={p50:6.1f} ms  p99={p99:6.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args()
    with server(args.jobs) as url:
        times = page_loads(url, args.loads)
        print(
            f"jobs page, {args.jobs} jobs: first page rendered in "
            + ", ".join(f"{t:.0f}" for t in times)
            + " ms"
        )
        print(f"  median {statistics.median(times):.0f} ms (goal: under 1000 ms)")
        print("API list latency (client side, one connection):")
        api_latency(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
