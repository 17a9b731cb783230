"""Serves the console: one HTML shell for each page's path, and its static files under
`/console/` (ES modules and a style sheet; no build step).

Pages carry a Content-Security-Policy that allows scripts, styles and connections from this
origin only: no inline script, no `eval`, nothing fetched from elsewhere. The key never reaches
these routes: the pages hold no data, the browser's modules call `/v1` with the key in a header.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
# every path the console's router knows; each gets the same shell, which reads the path itself
PAGES = ("/sign-in", "/jobs", "/jobs/new", "/jobs/{job_id}", "/compare", "/admin")

router = APIRouter(include_in_schema=False)


def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/jobs", status_code=307)


for path in PAGES:
    router.add_api_route(path, page, methods=["GET"], name=f"console{path}")


class Assets(StaticFiles):
    """The console's static files, with the same headers as its pages."""

    def file_response(
        self,
        full_path: str | PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(PAGE_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """The console's pages and files; `/v1`, `/docs` and the health routes are untouched."""
    app.include_router(router)
    app.mount("/console", Assets(directory=STATIC), name="console")
