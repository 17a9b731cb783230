"""The job page's evidence for a job that has all of it: checkpoint selection (`select:`), the
robustness probes (relearn, quantize, rephrase), harmful and benign prompts and a book's
continuations (`eval.copyright`), under a spec `criterion:` with every bound set. The job is
submitted through the API (the new-job page has its own test); every figure the page shows is
compared with the job's metrics.json, read through the API. The page is screenshotted into
docs/console/job-probes.png (the README shows it)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from test_console import EXAMPLES, api, open_page, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
Stack = Any  # tests/integration/conftest.py:Stack
BOOK = {"prefix_chars": 40, "continuation_chars": 40}
# every bound of the criterion set, so each goal cell has a figure to check; forget_nll as the
# objective because the tiny model's harmful rate is often 0 before and after (nothing to compare);
# 0.29, whose product with 100 is 28.999999999999996 in floating point, to be shown as "+29%"
CRITERION: dict[str, Any] = {
    "objective": "forget_nll",
    "max_normal_ppl_increase": 0.29,
    "max_over_refusal": 0.5,
    "min_improvement": 0.01,
}
SAMPLE_TABLES = {
    "harmful_prompts": "Harmful prompts",
    "benign_prompts": "Benign prompts",
    "copyright_forget": "Book continuations: the forgotten book",
}


def upload(client: httpx.Client, name: str, schema: str) -> str:
    with open(EXAMPLES / "data" / name, "rb") as f:
        answer = client.post("/v1/datasets", files={"file": (name, f)}, data={"schema": schema})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["reference"])


def evidence_spec(client: httpx.Client) -> dict[str, Any]:
    """examples/tiny.yaml over uploaded datasets, made small (seconds on one CPU thread), with
    selection every 2 steps, the three probes and the book's continuations."""
    forget = upload(client, "tiny_forget.jsonl", "pairs")
    normal = upload(client, "tiny_normal.jsonl", "pairs")
    book = upload(client, "book_forget.txt", "book")
    spec = yaml.safe_load((EXAMPLES / "tiny.yaml").read_text())
    spec["name"] = "tiny-probes"
    spec["finetune"]["data"]["source"] = spec["unlearn"]["forget"]["source"] = forget
    spec["eval"]["harmful_prompts"]["source"] = forget
    for ref in (spec["unlearn"]["normal"], spec["eval"]["benign_prompts"], spec["eval"]["normal"]):
        ref["source"] = normal
    spec["finetune"]["train"]["steps"] = 30  # enough for answers that are not empty
    # a rate that moves forget_nll by more than probes.MIN_GAIN_FOR_RATIO, so "retained" has figures
    spec["unlearn"]["train"].update(steps=6, lr=0.08)
    spec["eval"].update(max_examples=2, generation={"max_new_tokens": 6})
    spec["eval"]["copyright"] = {
        "forget_text": {"source": book, "schema": "book", "book": BOOK, "limit": 2},
        "max_examples": 2,
    }
    spec["criterion"] = CRITERION
    # patience null: all three evaluations after step 0 happen, so the table has four rows
    spec["select"] = {"every": 2, "patience": None, "probe_examples": 2}
    spec["probes"] = {
        "relearn": {"steps": 2, "lr": 0.01},
        "quantize": {"bits": [8, 4]},
        "rephrase": {"max_prompts": 2, "kinds": ["roleplay", "language_fr"]},
        "max_examples": 2,
    }
    return spec


def wait_for_end(client: httpx.Client, job_id: str, timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)  # a job of seconds: a handful of reads, not a polling storm
    raise AssertionError(f"job {job_id} did not end in {timeout} s")


@pytest.fixture(scope="module")
def metrics(celery_stack: Stack) -> dict[str, Any]:
    """The job's metrics.json, from the API, once the job has succeeded."""
    with api(celery_stack, celery_stack.env["LETHE_BOOTSTRAP_KEY"]) as client:
        answer = client.post("/v1/jobs", json=evidence_spec(client))
        assert answer.status_code == 201, answer.text
        job = wait_for_end(client, answer.json()["id"])
        assert job["status"] == "succeeded", job.get("error")
        found: dict[str, Any] = client.get(f"/v1/jobs/{job['id']}/artifacts/metrics.json").json()
    found["job_id"] = job["id"]
    return found


@pytest.fixture(scope="module")
def page_a(chromium: Any, celery_stack: Stack, metrics: dict[str, Any]) -> Iterator[Any]:
    """The job's page, signed in as tenant A; named as conftest's failure hook expects."""
    page = open_page(chromium, celery_stack, [])
    sign_in(page, celery_stack.url, celery_stack.env["LETHE_BOOTSTRAP_KEY"])
    page.goto(f"{celery_stack.url}/jobs/{metrics['job_id']}")
    page.get_by_role("heading", name="Robustness probes").wait_for()
    yield page
    assert not page.errors, page.errors
    page.context.close()


def js_number(value: float | None) -> str:
    """The console's fmtNumber (dom.js): integers as they are, 1000 and over without decimals,
    else three significant digits as Number.prototype.toPrecision(3) writes them (exponential
    only below 1e-6, where Python's `g` would switch below 1e-4)."""
    if value is None:
        return "–"
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 1000:
        return f"{value:.0f}"
    mantissa, exponent = f"{value:.2e}".split("e")
    power = int(exponent)
    if power < -6 or power >= 3:  # 999.7 rounds to 1.00e+3
        return f"{mantissa}e{'+' if power >= 0 else '-'}{abs(power)}"
    return f"{value:.{2 - power}f}"


def section(page: Any, title: str) -> Any:
    return page.locator("section", has=page.get_by_role("heading", name=title, exact=True))


def row_cells(table: Any, first_cell: str) -> list[str]:
    """The cells of the one row of `table` whose first cell is `first_cell`, as shown."""
    exact = re.compile(rf"^\s*{re.escape(first_cell)}\s*$")  # not harmful_rate for harmful_rate_roleplay
    rows = table.locator("tbody tr").filter(has=table.page.locator("td:first-child", has_text=exact))
    assert rows.count() == 1, f"{first_cell!r}: {rows.count()} rows"
    return [c.strip() for c in rows.first.locator("td").all_inner_texts()]


def test_every_probe_and_its_figures(page_a: Any, metrics: dict[str, Any]) -> None:
    probes = metrics["probes"]
    key, summary = probes["objective"], probes["summary"]
    assert key == "forget_nll"
    box = section(page_a, "Robustness probes")
    table = box.locator("table", has=page_a.locator("caption", has_text="What survives each probe"))
    relearn, quantize, rephrase = probes["relearn"], probes["quantize"], probes["rephrase"]
    label = f"relearn: {relearn['steps']} steps on {relearn['relearned_examples']} forget examples"
    expected = {
        label: [relearn[k][key] for k in ("original", "unlearned", "probed")]
        + [None, summary["relearn"]["retained"]]
    }
    for bits in (8, 4):
        expected[f"{bits}-bit weights"] = [
            quantize[k][key] for k in ("original", "unlearned", f"unlearned_{bits}bit", f"original_{bits}bit")
        ] + [summary[f"quantize_{bits}bit"]["retained"]]
    assert set(rephrase["probed"]) == {"harmful_rate", "harmful_rate_roleplay", "harmful_rate_language_fr"}
    for name, value in rephrase["probed"].items():
        expected[f"rephrased prompts: {name}"] = [None, None, value, rephrase["original"][name], None]
    assert table.locator("tbody tr").count() == len(expected) == 6
    for first, figures in expected.items():
        assert row_cells(table, first) == [first, *map(js_number, figures)], first
    assert quantize["method"] in box.inner_text()


def test_the_kept_checkpoint_its_step_and_why(page_a: Any, metrics: dict[str, Any]) -> None:
    selection = metrics["selection"]
    box = section(page_a, "Kept checkpoint")
    said = box.locator("#kept-checkpoint").inner_text()
    step, reason = selection["chosen_step"], selection["reason"]
    assert reason.startswith(f"step {step}: ")  # the page says the step once, then why
    assert said == f"Kept the checkpoint of step {step}: {reason.removeprefix(f'step {step}: ')}"
    steps = [e["step"] for e in selection["evaluations"]]
    assert steps == [0, 2, 4, 6]
    table = box.locator("table")
    assert table.locator("tbody tr").count() == len(steps)
    for evaluation in selection["evaluations"]:
        cells = row_cells(table, str(evaluation["step"]))
        figures = [evaluation["metrics"][n] for n in ("forget_nll", "normal_ppl")]
        assert cells[1:3] == list(map(js_number, figures))
        assert (cells[-1] == "✓ kept") == (evaluation["step"] == selection["chosen_step"])


def test_sample_answers_before_and_after_side_by_side(page_a: Any, metrics: dict[str, Any]) -> None:
    before, after = metrics["per_example"]["before"], metrics["per_example"]["after"]
    box = section(page_a, "Sample answers")
    for kind, caption in SAMPLE_TABLES.items():
        table = box.locator("table", has=page_a.locator("caption", has_text=caption))
        old = {e["id"]: e for e in before[kind]}
        rows = table.locator("tbody tr")
        assert rows.count() == len(after[kind]) == 2, kind
        for i, new in enumerate(after[kind]):
            cells = rows.nth(i).locator("td")
            assert cells.nth(0).text_content() == new["prompt"]
            # the answer's own text (the quote), without the harmful/refusal tag beside it
            said = [cells.nth(c).locator("q").text_content() for c in (1, 2)]
            assert said == [old[new["id"]]["response"] or "(empty)", new["response"] or "(empty)"], kind
            if kind.startswith("copyright"):
                assert cells.nth(3).text_content() == new["reference"]


def goal_bounds(metrics: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The goal each metric has under CRITERION, as the page should write it, and whether it is met."""
    before, after = metrics["before"], metrics["after"]
    ppl = before["normal_ppl"] * (1 + CRITERION["max_normal_ppl_increase"])
    nll = before["forget_nll"] * (1 + CRITERION["min_improvement"])
    return {
        "normal_ppl": (f"≤ {js_number(ppl)} (+29%)", after["normal_ppl"] <= ppl),
        "over_refusal": ("≤ 0.5", after["over_refusal"] <= CRITERION["max_over_refusal"]),
        "forget_nll": (f"≥ {js_number(nll)} (objective)", after["forget_nll"] >= nll),
    }


def test_metrics_before_and_after_beside_the_goal_bounds(page_a: Any, metrics: dict[str, Any]) -> None:
    table = section(page_a, "Metrics before and after").locator("table")
    before, after = metrics["before"], metrics["after"]
    for name, (bound, met) in goal_bounds(metrics).items():
        cells = row_cells(table, name)
        assert cells[1:3] == [js_number(before[name]), js_number(after[name])], name
        assert cells[4:] == [bound, "✓ yes" if met else "✗ no"], name
    assert row_cells(table, "bleu")[4:] == ["", ""]  # no bound on it: nothing claimed
    shot(page_a, "job-probes")
