"""A bounded schemathesis run over the OpenAPI schema (embedded defaults, fake engine): whatever
it generates for each operation, sent with a valid admin key, nothing answers 5xx.

    pytest tests/unit/test_api_fuzz.py -s      # prints how many requests were generated

Each operation gets `MAX_EXAMPLES` generated requests, derandomised, so the run is repeatable and
fits in CI (about 30 s on two cores). Hypothesis drives schemathesis' strategies directly (its
pytest plugin does not support this pytest).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from service_helpers import AUTH, fake_run_job, fast_settings

from lethe.cli.wiring import build_app
from lethe.service.infra import migrate

pytestmark = pytest.mark.timeout(300)
MAX_EXAMPLES = 50  # per operation


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("lethe.core.run.pipeline.run_job", fake_run_job)
        folder = tmp_path_factory.mktemp("fuzz")
        s = fast_settings(folder, allowed_s3_buckets=["corpora"], max_upload_mb=1)
        migrate.upgrade(s)
        yield schemathesis.openapi.from_asgi("/openapi.json", build_app(s))


def fuzz(operation: Any, tally: Counter[str], failures: list[str]) -> None:
    @given(case=operation.as_strategy())
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: Any) -> None:
        if case.query and str(case.query.get("stream", "")).lower() in ("true", "1"):
            case.query["stream"] = "false"  # an endless stream is not a request/response case
        try:
            response = case.call(headers=AUTH)
        except Exception as err:  # noqa: BLE001 - the in-process app raised: a server error
            tally["5xx"] += 1
            failures.append(
                f"{case.method} {case.path} {case.path_parameters} {case.query} -> "
                f"{type(err).__name__}: {err}"
            )
            return
        tally[f"{response.status_code // 100}xx"] += 1
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.path} {case.path_parameters} {case.query} -> "
                f"{response.status_code} {response.text[:300]}"
            )

    send()


def test_no_generated_request_makes_the_api_fail(api_schema: Any) -> None:
    tally: Counter[str] = Counter()
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:
        fuzz(operation, tally, failures)
    total = sum(tally.values())
    print(
        f"EVIDENCE fuzz: {len(operations)} operations, {total} generated requests, "
        f"{dict(sorted(tally.items()))}, {len(failures)} server errors"
    )
    assert not failures, "\n".join(failures[:20])
    assert len(operations) >= 15 and total >= 10 * len(operations)
