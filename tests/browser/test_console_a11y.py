"""Accessibility checks that can fail: the colours of style.css against WCAG 2.1 AA (computed here
from its CSS variables and rules), and, in the browser on every page of the console, one h1 and
one main landmark, an accessible name on every form control, button and link, and every
interactive element reached by the Tab key (the sign-in field, then its button, first of all).

Runs after test_console.py (which leaves tenant A with jobs to show); alone, the job page is the
not-found one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
CSS = Path(__file__).resolve().parents[2] / "api" / "console" / "static" / "style.css"
TEXT_AA, NON_TEXT_AA = 4.5, 3.0  # normal-size text; focus rings and chart lines (1.4.3, 1.4.11)
RULE = re.compile(r"([^{}]+)\{([^{}]*)\}")
DECL = re.compile(r"(?<![\w-])(color|fill|background|background-color|outline)\s*:\s*([^;]+)")
HEX = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")
HEADER_BG = ".top"  # the dark header: its links and text sit on its background

# in the page, for each element given: its accessible name as a screen reader computes it in the
# simple cases the console uses (aria-label, aria-labelledby, <label>, text, title)
NAME_OF = """el => {
  const text = (n) => (n?.textContent || '').trim();
  if (el.getAttribute('aria-label')?.trim()) return el.getAttribute('aria-label').trim();
  const by = el.getAttribute('aria-labelledby');
  if (by) return by.split(/\\s+/).map((id) => text(document.getElementById(id))).join(' ').trim();
  if (el.labels && el.labels.length) return [...el.labels].map(text).join(' ').trim();
  if (!['INPUT', 'SELECT', 'TEXTAREA'].includes(el.tagName) && text(el)) return text(el);
  return (el.getAttribute('title') || '').trim();
}"""
INTERACTIVE = (
    "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]:not([tabindex='-1'])"
)
# numbers every visible, enabled interactive element (data-a11y) and returns how many there are
MARK = f"""() => {{
  const all = [...document.querySelectorAll("{INTERACTIVE}")].filter((el) =>
    !el.disabled && el.getClientRects().length && getComputedStyle(el).visibility !== 'hidden');
  all.forEach((el, i) => el.setAttribute('data-a11y', String(i)));
  return all.length;
}}"""


# ------------------------------------------------------------------ contrast, from the style sheet
def luminance(colour: str) -> float:
    digits = colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def rules() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The `:root` variables, and each rule's colours by selector (variables resolved)."""
    css = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S)
    variables = dict(re.findall(r"(--[\w-]+)\s*:\s*(#[0-9a-fA-F]{3,6})", css))
    out: dict[str, dict[str, str]] = {}
    for selectors, body in RULE.findall(css):
        found = {}
        for prop, value in DECL.findall(body):
            value = re.sub(r"var\((--[\w-]+)\)", lambda m: variables[m.group(1)], value)
            colour = HEX.search(value)
            if colour:
                found["background" if prop.startswith("background") else prop] = colour.group(0)
        for selector in selectors.split(","):
            out.setdefault(selector.strip(), {}).update(found)
    return variables, out


def text_pairs() -> list[tuple[str, str, str]]:
    """(where, text colour, background) for every rule that sets a text colour: on its own
    background, or on the header's (`.top …`), or else on both page backgrounds (white, panel)."""
    variables, by_selector = rules()
    pages = [variables["--bg"], variables["--panel"]]
    pairs = []
    for selector, colours in by_selector.items():
        text = colours.get("color") or colours.get("fill")
        if text is None or selector.startswith(("button:disabled", ".swatch")):
            continue  # a disabled control is exempt (WCAG 1.4.3)
        if "background" in colours:
            grounds = [colours["background"]]
        elif selector.startswith(HEADER_BG):
            grounds = [by_selector[HEADER_BG]["background"]]
        else:
            grounds = pages
        pairs += [(selector, text, ground) for ground in grounds]
    badge = by_selector[".badge"]["color"]  # the status badges: white on each status colour
    pairs += [(s, badge, c["background"]) for s, c in by_selector.items() if s.startswith(".s-")]
    return pairs


def test_text_colours_meet_wcag_aa_contrast() -> None:
    pairs = text_pairs()
    assert len(pairs) >= 20, pairs  # the parser found the style sheet's colours
    low = [(w, t, g, round(contrast(t, g), 2)) for w, t, g in pairs if contrast(t, g) < TEXT_AA]
    assert not low, f"below {TEXT_AA}:1 — {low}"


def test_focus_ring_and_chart_colours_stand_out() -> None:
    variables, by_selector = rules()
    ring = by_selector[":focus-visible"]["outline"]
    grounds = [variables["--bg"], variables["--panel"], by_selector[HEADER_BG]["background"]]
    low = [(ring, g, round(contrast(ring, g), 2)) for g in grounds if contrast(ring, g) < NON_TEXT_AA]
    lines = {s: c["background"] for s, c in by_selector.items() if re.fullmatch(r"\.c\d", s)}
    low += [
        (s, c, round(contrast(c, variables["--bg"]), 2))
        for s, c in lines.items()
        if contrast(c, variables["--bg"]) < NON_TEXT_AA
    ]
    assert lines and not low, f"below {NON_TEXT_AA}:1 — {low}"


# ------------------------------------------------------------------ pages, in the browser
def check_page(page: Any, where: str) -> list[str]:
    """What is wrong with the page as shown: landmarks, headings, names, keyboard reach."""
    problems = []
    if page.locator("h1").count() != 1:
        problems.append(f"{where}: {page.locator('h1').count()} h1 elements, not one")
    if page.locator("main, [role=main]").count() != 1:
        problems.append(f"{where}: not exactly one main landmark")
    controls = page.locator("input:not([type=hidden]), select, textarea, button, a[href]")
    for i in range(controls.count()):
        control = controls.nth(i)
        if not control.is_visible():
            continue
        if not control.evaluate(NAME_OF):
            problems.append(f"{where}: no accessible name: {control.evaluate('el => el.outerHTML')[:120]}")
    missed = unreached(page)
    if missed:
        problems.append(f"{where}: not reached by Tab: {missed}")
    return problems


def tab_walk(page: Any, limit: int) -> list[str]:
    """The `data-a11y` numbers of the elements Tab visits, from the top, until it comes round."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    page.evaluate("window.scrollTo(0, 0); document.body.focus()")
    seen: list[str] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        mark = page.evaluate("document.activeElement?.getAttribute('data-a11y') ?? ''")
        if mark and seen and mark == seen[0]:
            break
        if mark:
            seen.append(mark)
    return seen


def unreached(page: Any) -> list[str]:
    count = page.evaluate(MARK)
    seen = set(tab_walk(page, count + 20))
    # the outer HTML of those never focused (and still on the page: a live update may replace one)
    return page.evaluate(
        "seen => [...document.querySelectorAll('[data-a11y]')]"
        ".filter((el) => !seen.includes(el.getAttribute('data-a11y')))"
        ".map((el) => el.outerHTML.slice(0, 100))",
        sorted(seen),
    )


def ready(page: Any, url: str, heading: str) -> None:
    """The page with its heading, and a moment for the parts it loads after it (not
    `networkidle`: the jobs list keeps its event stream open)."""
    page.goto(url)
    page.get_by_role("heading", name=re.compile(heading), level=1).wait_for()
    page.wait_for_timeout(1500)


def test_sign_in_is_reached_by_keyboard_and_every_page_passes(chromium: Any, celery_stack: Any) -> None:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    base, key = celery_stack.url, celery_stack.env["LETHE_BOOTSTRAP_KEY"]
    page.goto(f"{base}/sign-in")
    page.locator("#api-key").wait_for()  # by id: whether it has a label is what is checked
    problems = check_page(page, "/sign-in")
    order = [
        page.locator(f"[data-a11y='{m}']").evaluate("el => el.id || el.textContent.trim()")
        for m in tab_walk(page, 20)
    ]
    assert "api-key" in order and "Sign in" in order, order
    assert order.index("api-key") < order.index("Sign in"), order
    # signed in by keyboard alone: the field has focus, type, Enter
    page.locator("#api-key").focus()
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Jobs", level=1).wait_for()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as client:
        items = client.get("/v1/jobs", params={"limit": 1}).json()["items"]
    job = f"/jobs/{items[0]['id']}" if items else "/jobs/00000000-0000-4000-8000-000000000000"
    pages = [
        ("/jobs", "Jobs"),
        ("/jobs/new", "New job"),
        (job, "."),
        ("/compare", "Compare"),
        ("/admin", "Admin"),
    ]
    for path, heading in pages:
        ready(page, base + path, heading)
        problems += check_page(page, path)
    context.close()
    assert not problems, "\n".join(problems)
