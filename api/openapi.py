"""The OpenAPI document as client generators and validators read it.

- Operation ids read as method names, `TAG.NAME` (`jobs.submit`, `datasets.upload`): the route's
  first tag and its `name=` (its function's name when none is given). openapi-python-client turns
  `jobs.submit` into `api/jobs/jobs_submit.py`; openapi-typescript keys `operations` by the id.
- A file field (`UploadFile`) is `format: binary` as well as `contentMediaType`: generators read
  `format: binary` as a file to send with its name, and type a bare `contentMediaType` as a string.
- A form body's model is named after its operation (`DatasetsUploadForm`).
- No operation keeps FastAPI's default 422 body (`HTTPValidationError`), which is not what the
  server sends: each route declares its errors with `lethe.api.schemas.errors`, and
  `test_api_openapi.py` checks that none is left.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute

OCTET_STREAM = "application/octet-stream"
BINARY: dict[str, Any] = {"schema": {"type": "string", "format": "binary"}}
FORM_TYPES = {"multipart/form-data", "application/x-www-form-urlencoded"}


def operation_id(route: APIRoute) -> str:
    """`TAG.NAME`: the app's `generate_unique_id_function`."""
    tag = str(route.tags[0]) if route.tags else "api"
    return f"{tag}.{route.name}"


def file_content(*media_types: str) -> dict[str, Any]:
    """A 200 `content` of a file in one of `media_types`, with `application/octet-stream` first:
    the one generators read as bytes (openapi-python-client takes the first type it knows). The
    server sends that type when the request's `Accept` asks for it (`served_type`)."""
    return {OCTET_STREAM: BINARY, **{media: {"schema": _file_schema(media)} for media in media_types}}


def _file_schema(media_type: str) -> dict[str, Any]:
    if media_type in ("application/json", "application/yaml"):
        return {}  # any value: validators parse these types before they compare
    if media_type.startswith("text/") or media_type.endswith("ndjson"):
        return {"type": "string"}
    return {"type": "string", "format": "binary"}


def event_stream(data_schema: str) -> dict[str, Any]:
    """A `text/event-stream` 200 `content`. Its schema says both what the body is (text: what
    generators read, openapi-python-client included) and what each event is (`id`, `event`, and
    `data`: JSON of `data_schema`), which validators such as schemathesis read from `schema` in an
    OpenAPI 3.1 document (3.2's `itemSchema` is not valid in 3.1)."""
    event = {
        "type": "object",
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "description": "resume after it with `Last-Event-ID`"},
            "event": {"type": "string", "description": "the event's kind"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": f"#/components/schemas/{data_schema}"},
            },
        },
    }
    return {"text/event-stream": {"schema": {"anyOf": [{"type": "string"}, event]}}}


def served_type(request: Request, media_type: str) -> str:
    """`media_type`, or `application/octet-stream` for a client that asks for raw bytes first."""
    accept = request.headers.get("accept", "")
    return OCTET_STREAM if accept.split(",")[0].split(";")[0].strip() == OCTET_STREAM else media_type


def _class_name(operation: str) -> str:
    """`datasets.upload` -> `DatasetsUploadForm`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", operation)) + "Form"


def _rename_form_bodies(schema: dict[str, Any]) -> None:
    """FastAPI names a form body's model after the operation id with the prefix cut at its dot
    (`upload`); it becomes `DatasetsUploadForm`."""
    components = schema.get("components", {}).get("schemas", {})
    prefix, renames = "#/components/schemas/", {}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            for media in FORM_TYPES & content.keys():
                old = content[media].get("schema", {}).get("$ref", "").removeprefix(prefix)
                if old in components:
                    renames[old] = _class_name(operation["operationId"])
    for old, new in renames.items():
        components[new] = {**components.pop(old), "title": new}
    _replace_refs(schema, {prefix + old: prefix + new for old, new in renames.items()})


def _replace_refs(node: Any, refs: dict[str, str]) -> None:
    if isinstance(node, dict):
        if node.get("$ref") in refs:
            node["$ref"] = refs[node["$ref"]]
        for value in node.values():
            _replace_refs(value, refs)
    elif isinstance(node, list):
        for value in node:
            _replace_refs(value, refs)


def _binary_files(node: Any) -> None:
    """`format: binary` on every string schema whose content is raw bytes (an upload's file)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and node.get("contentMediaType") == OCTET_STREAM:
            node.setdefault("format", "binary")
        for value in node.values():
            _binary_files(value)
    elif isinstance(node, list):
        for value in node:
            _binary_files(value)


def install(app: FastAPI) -> None:
    """Serve the post-processed document at /openapi.json (built once, as FastAPI does)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)  # builds and caches it; the edits below are in place
            _rename_form_bodies(schema)
            _binary_files(schema)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
