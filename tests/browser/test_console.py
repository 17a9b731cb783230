"""The web console in a real browser against a real stack: tenant A signs in, uploads the tiny
example's datasets, submits examples/tiny.yaml from the new-job page, watches it succeed live,
reads its evidence, downloads the adapter, verifies the certificate, cancels a second job,
compares two jobs and uses the admin page; tenant B sees none of it. Every page is screenshotted
into docs/console/ (the README shows them).

The tests run in order and share one browser page per tenant (module scope)."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHOTS = ROOT / "docs" / "console"
# the live loss curve has `n` points (or the job has ended and shows its whole run)
CURVE_HAS_POINTS = """n => [...document.querySelectorAll('.chart path.line')]
    .some(p => p.getAttribute('d').split('L').length >= n)"""
SEEN: dict[str, Any] = {}  # what earlier tests made: job ids, the URLs the browser asked for
Stack = Any  # tests/integration/conftest.py:Stack


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def open_page(chromium: Any, stack: Stack, urls: list[str]) -> Any:
    context = chromium.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("request", lambda request: urls.append(request.url))
    page.on("dialog", lambda dialog: dialog.accept())
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Jobs").wait_for()


@pytest.fixture(scope="module")
def page_a(chromium: Any, celery_stack: Stack) -> Iterator[Any]:
    urls: list[str] = []
    SEEN["urls"] = urls
    page = open_page(chromium, celery_stack, urls)
    yield page
    assert not page.errors, page.errors
    page.context.close()


def api(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=30, headers={"Authorization": f"Bearer {key}"})


def upload(page: Any, file: Path) -> None:
    page.get_by_label("File (JSONL, CSV, Parquet or text)").set_input_files(str(file))
    page.get_by_label("Schema").select_option("pairs")
    page.get_by_role("button", name="Upload").click()
    page.get_by_text(re.compile(rf"Uploaded {re.escape(file.name)}: \d+ rows")).wait_for()


def test_sign_in_upload_submit_and_watch_the_tiny_job_succeed_live(page_a: Any, celery_stack: Stack) -> None:
    page = page_a
    page.goto(f"{celery_stack.url}/jobs")
    page.get_by_label("API key").wait_for()
    shot(page, "sign-in")
    page.get_by_label("API key").fill("lethe_nope_wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("This key is unknown or revoked.").wait_for()
    sign_in(page, celery_stack.url, celery_stack.env["LETHE_BOOTSTRAP_KEY"])

    page.get_by_role("link", name="New job").first.click()
    # an upload the schema refuses: the error is shown on the file field
    page.get_by_label("File (JSONL, CSV, Parquet or text)").set_input_files(
        str(EXAMPLES / "data" / "book_forget.txt")
    )
    page.get_by_label("Schema").select_option("pairs")
    page.get_by_role("button", name="Upload").click()
    page.locator("#ds-file[aria-invalid=true] + .field-error").wait_for()
    for name in ("tiny_forget.jsonl", "tiny_normal.jsonl"):
        upload(page, EXAMPLES / "data" / name)

    page.get_by_label("Start from an example").select_option("tiny.yaml")
    page.get_by_role("button", name="Validate").click()  # local paths: refused by the API's checks
    page.locator("#spec-verdict", has_text="problem").wait_for()
    assert "finetune.data.source" in page.locator("#spec-problems").inner_text()
    shot(page, "new-job")
    page.get_by_role("button", name="Use these datasets").click()
    page.get_by_role("button", name="Validate").click()
    page.locator("#spec-verdict", has_text="Valid").wait_for()
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    job_id = page.url.rsplit("/", 1)[1]
    SEEN["job"] = job_id
    _queue_a_job_to_compare(celery_stack, job_id)

    # live: the stage list and the loss curve move while it trains, without a reload
    page.locator(".stage.st-running").first.wait_for(timeout=60_000)
    page.get_by_role("img", name=re.compile(r"losses \(live\)")).first.wait_for(timeout=60_000)
    page.wait_for_function(CURVE_HAS_POINTS, arg=10, timeout=60_000)  # drawn from events as they come
    shot(page, "job-running")
    page.locator("h1 .badge", has_text="succeeded").wait_for(timeout=90_000)
    assert page.locator(".stage.st-done").count() >= 5


def _queue_a_job_to_compare(stack: Stack, first: str) -> None:
    """A second succeeded job for the compare page: the same spec at another learning rate."""
    with api(stack, stack.env["LETHE_BOOTSTRAP_KEY"]) as client:
        spec = client.get(f"/v1/jobs/{first}").json()["spec"]
        spec["name"] = "tiny-lr-0.05"
        spec["unlearn"]["train"]["lr"] = 0.05
        answer = client.post("/v1/jobs", json=spec)
        assert answer.status_code == 201, answer.text
        SEEN["second"] = answer.json()["id"]


def test_job_page_shows_the_evidence_downloads_and_verifies(
    page_a: Any, celery_stack: Stack, tmp_path: Path
) -> None:
    page = page_a
    page.get_by_role("heading", name="Metrics before and after").wait_for()
    table = page.locator("table", has_text="forget_nll").first
    assert "harmful_rate" in table.inner_text() and "normal_ppl" in table.inner_text()
    assert page.get_by_role("heading", name="The judge").is_visible()
    assert page.locator("table", has=page.locator("caption", has_text="Harmful prompts")).is_visible()
    assert page.get_by_text(re.compile("The last step was kept|Kept the checkpoint")).is_visible()

    with page.expect_download() as download:
        page.get_by_role("button", name="Download adapter.tar.gz").click()
    path = tmp_path / "adapter.tar.gz"
    download.value.save_as(path)
    row = page.locator("tr", has_text="adapter.tar.gz")
    row.get_by_text("✓ SHA-256 checked").wait_for()
    assert hashlib.sha256(path.read_bytes()).hexdigest() in row.inner_text()

    page.get_by_role("button", name="Verify certificate").click()
    page.locator("#certificate-verdict", has_text="✓ Certificate verified").wait_for()
    shot(page, "job")


def test_cancel_a_second_job(page_a: Any, celery_stack: Stack) -> None:
    page = page_a
    page.goto(f"{celery_stack.url}/jobs")
    page.get_by_role("heading", name="Jobs").wait_for()
    asked = len(SEEN["urls"])
    with api(celery_stack, celery_stack.env["LETHE_BOOTSTRAP_KEY"]) as client:
        spec = client.get(f"/v1/jobs/{SEEN['job']}").json()["spec"]
        answer = client.post("/v1/jobs", json={**spec, "name": "to-cancel"})
        assert answer.status_code == 201, answer.text
        third = answer.json()["id"]
    # the new job appears on the open list, from the tenant's event stream, without a reload
    row = page.locator("tr", has_text="to-cancel")
    row.wait_for()
    assert "LETHE_BOOTSTRAP_KEY" in row.inner_text()  # who submitted it: the key's name
    assert not [u for u in SEEN["urls"][asked:] if re.search(r"/v1/jobs\?", u)]  # no list reread
    row.get_by_role("link", name="to-cancel").click()
    page.get_by_role("button", name="Cancel job").click()
    page.locator("h1 .badge", has_text="cancelled").wait_for(timeout=30_000)
    with api(celery_stack, celery_stack.env["LETHE_BOOTSTRAP_KEY"]) as client:
        assert client.get(f"/v1/jobs/{third}").json()["status"] == "cancelled"


def test_jobs_list_filters_and_compare(page_a: Any, celery_stack: Stack) -> None:
    page = page_a
    asked = len(SEEN["urls"])
    page.goto(f"{celery_stack.url}/jobs")
    page.locator("tr", has_text="tiny-lr-0.05").locator(".badge", has_text="succeeded").wait_for(
        timeout=90_000
    )
    # live through one stream for the whole list, not one per job
    urls = SEEN["urls"][asked:]
    assert [u for u in urls if "/v1/events/stream" in u]
    assert not [u for u in urls if re.search(r"/v1/jobs/[^/]+/events", u)], urls
    shot(page, "jobs")
    page.get_by_label("Status").select_option("cancelled")
    page.wait_for_url(re.compile(r"status=cancelled"))
    page.get_by_role("link", name="to-cancel").wait_for()
    assert page.locator("tbody tr").count() == 1
    page.get_by_label("Status").select_option("succeeded")
    page.get_by_label("Compare tiny-lr-0.05").check()
    page.get_by_label("Compare tiny", exact=True).check()
    page.get_by_role("button", name="Compare selected").click()
    page.get_by_role("img", name=re.compile("Forget NLL change against")).wait_for()
    page.get_by_role("img", name="unlearn: total loss by step").wait_for()
    shot(page, "compare")


def test_admin_keys_and_audit_chain(page_a: Any, celery_stack: Stack) -> None:
    page = page_a
    page.get_by_role("link", name="Admin").click()
    page.get_by_label("Name").fill("console-made")
    page.get_by_label("submit").check()
    page.get_by_role("button", name="Create key").click()
    new_key = page.get_by_label("The new key").input_value()
    assert new_key.startswith("lethe_")
    with api(celery_stack, new_key) as client:
        assert client.get("/v1/jobs").status_code == 200
    key_id = new_key.split("_")[1]
    page.get_by_role("button", name=f"Revoke key {key_id}").click()
    page.locator("tr", has_text=key_id).get_by_role("button").wait_for(state="detached")
    with api(celery_stack, new_key) as client:
        assert client.get("/v1/jobs").status_code == 401
    page.get_by_role("button", name="Verify the chain").click()
    page.locator("#chain-verdict", has_text="✓ The chain is intact").wait_for()
    shot(page, "admin")


def test_tenant_b_sees_none_of_tenant_a(chromium: Any, celery_stack: Stack, tenant_b_key: str) -> None:
    urls: list[str] = []
    page = open_page(chromium, celery_stack, urls)
    sign_in(page, celery_stack.url, tenant_b_key)
    page.get_by_text("No jobs yet").wait_for()
    assert page.locator("tbody tr").count() == 0
    page.goto(f"{celery_stack.url}/jobs/{SEEN['job']}")
    page.get_by_role("heading", name="Job not found").wait_for()
    shot(page, "not-found")
    page.get_by_role("link", name="Admin").click()
    page.get_by_text("This key has no admin scope").wait_for()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    page.goto(f"{celery_stack.url}/jobs")
    page.get_by_label("API key").wait_for()  # signed out: the key is gone
    assert not page.errors, page.errors  # type: ignore[attr-defined]
    page.context.close()
    SEEN["urls_b"] = urls
    SEEN["key_b"] = tenant_b_key


def test_no_key_in_urls_or_logs_and_pages_forbid_inline_script(celery_stack: Stack) -> None:
    keys = [celery_stack.env["LETHE_BOOTSTRAP_KEY"], SEEN["key_b"]]
    urls = SEEN["urls"] + SEEN["urls_b"]
    assert urls and not [u for u in urls for k in keys if k in u]
    time.sleep(0.5)  # the access log is written after each answer
    for log in celery_stack.logs:
        text = log.read_text(errors="replace")
        assert not [k for k in keys if k in text], log
    for path in ("/jobs", f"/jobs/{SEEN['job']}", "/console/app.js"):
        answer = httpx.get(celery_stack.url + path)
        policy = answer.headers["content-security-policy"]
        assert answer.status_code == 200 and "script-src 'self'" in policy
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "content-security-policy" not in httpx.get(celery_stack.url + "/healthz").headers
