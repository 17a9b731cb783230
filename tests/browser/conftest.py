"""The browser tier: headless Debian `chromium` driven by Playwright against the integration
tier's production-shaped stack (PostgreSQL, Redis, S3 on moto, a Celery worker process and
`lethe serve`), reused from tests/integration/conftest.py. Missing chromium or Playwright is a
skip with the reason, and a failure under CI=true (`.ci/run` installs both)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
sys.path.insert(0, str(INTEGRATION))  # the stack's helpers (stackbase, faultstack)
_spec = importlib.util.spec_from_file_location("lethe_browser_stack", INTEGRATION / "conftest.py")
assert _spec is not None and _spec.loader is not None
stack = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = stack  # dataclasses look their module up there
_spec.loader.exec_module(stack)
from stackbase import unavailable  # noqa: E402

# the fixtures the browser tests share with the integration tier (each tier starts its own stack)
postgres_url = stack.postgres_url
redis_url = stack.redis_url
s3_endpoint = stack.s3_endpoint
celery_stack = stack.celery_stack
ADMIN_KEY = stack.ADMIN_KEY


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A headless chromium (the Debian package, not a downloaded browser)."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("no chromium on PATH: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def tenant_b_key(celery_stack: Any) -> str:
    """A read+submit key of a second tenant, `beta`."""
    from lethe.service.infra.db import make_engine, make_sessionmaker
    from lethe.service.infra.settings import Settings
    from lethe.service.trust.auth import create_key

    engine = make_engine(Settings(database_url=celery_stack.database_url))
    try:
        return create_key(make_sessionmaker(engine), "beta", ["read", "submit"], "browser-b")[1]
    finally:
        engine.dispose()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, the page as it was: its text in the report, a screenshot next to the logs."""
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page_a")
    if report.when != "call" or not report.failed or page is None:
        return
    try:
        shot = Path(str(item.config.rootpath)) / ".lethe" / f"failed-{item.name}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        report.sections.append(
            ("page", f"{page.url}\n{page.inner_text('main')[:3000]}\n(screenshot: {shot})")
        )
    except Exception as err:  # noqa: BLE001 - the failure itself is what matters
        report.sections.append(("page", f"no screenshot: {err}"))
