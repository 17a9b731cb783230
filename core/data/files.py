"""What Lethe reads without help: the data files shipped in `core/data/builtin/` and the file formats.

`core.data` turns rows into examples; this module only finds and reads rows: `builtin:NAME`
files, JSON lines, CSV, parquet, plain text, and model-hub datasets. Import `DataError` from
`lethe.core.data.examples`, which re-exports it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".md": "text",
}
_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE_WORDS = ("1", "ON", "YES", "TRUE")


class DataError(ValueError):
    """A dataset cannot be used as given; the message names the file, row or column and the fix."""


def _builtin_dir() -> Path:
    # importlib.resources finds the folder whether Lethe is installed editable or from a wheel
    return Path(str(resources.files("lethe.core.data") / "builtin"))


def builtin_names() -> list[str]:
    """Names usable as `builtin:NAME`: the file stems of the data shipped in `core/data/builtin/`."""
    return sorted({p.stem for p in _builtin_dir().iterdir() if p.is_file()})


def builtin_path(name: str) -> Path:
    """The shipped file whose stem (or full file name) is `name`."""
    files = [p for p in sorted(_builtin_dir().iterdir()) if p.is_file()]
    matches = [p for p in files if name in (p.stem, p.name)]
    if not matches:
        raise DataError(f"builtin:{name} does not exist; shipped datasets: {', '.join(builtin_names())}")
    if len(matches) > 1:
        raise DataError(
            f"builtin:{name} is ambiguous ({', '.join(p.name for p in matches)}); "
            f"add the extension, e.g. builtin:{matches[0].name}"
        )
    return matches[0]


def file_format(path: Path, declared: str) -> str:
    """The format to read `path` with: the declared one, or (for `auto`) the extension's."""
    if declared != "auto":
        return declared
    inferred = _EXTENSION_FORMATS.get(path.suffix.lower())
    if inferred is None:
        known = ", ".join(sorted(_EXTENSION_FORMATS))
        raise DataError(
            f"cannot tell the format of {path} from its extension {path.suffix!r} "
            f"(known: {known}); set format: jsonl, csv, parquet or text"
        )
    return inferred


def _decode(path: Path) -> str:
    """The file's text: UTF-8, a byte-order mark dropped; undecodable or empty files are errors."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path} is not UTF-8 text (undecodable byte at line {line}); save it as UTF-8"
        ) from exc
    if not text.strip():
        raise DataError(f"{path} is empty")
    return text


def _objects(values: list[Any], places: list[str], path: Path) -> list[dict[str, Any]]:
    """Check that every parsed JSON value is an object (a row); `places` name them for errors."""
    for place, value in zip(places, values, strict=True):
        if not isinstance(value, dict):
            raise DataError(
                f"{path}: {place} holds a JSON {type(value).__name__}, not an object; "
                'each row must be an object, e.g. {"prompt": "..."}'
            )
    return values


def _jsonl_rows(text: str, path: Path) -> list[dict[str, Any]]:
    """One JSON object per line (blank lines skipped); a file that is one JSON array also works."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from exc
        return _objects(values, [f"item {i}" for i in range(1, len(values) + 1)], path)
    values, places = [], []
    # split on "\n" only: str.splitlines() would also split at U+2028 inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {number} is not valid JSON ({exc.msg}, column "
                f"{exc.colno}); write one JSON object per line"
            ) from exc
        places.append(f"line {number}")
    return _objects(values, places, path)


def _csv_rows(text: str, path: Path) -> list[dict[str, Any]]:
    """CSV with a header row; every value is a string."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[dict[str, Any]] = []
    try:
        for row in reader:
            if None in row:  # DictReader files surplus fields under the key None
                raise DataError(
                    f"{path}: line {reader.line_num} has more fields than the header; "
                    "quote values that contain commas"
                )
            rows.append(row)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num} is not valid CSV ({exc})") from exc
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc}); re-export it") from exc


def parse_file(path: Path, declared: str) -> list[dict[str, Any]]:
    """The rows of a local file; format `text` gives one row {"text": the whole file}."""
    fmt = file_format(path, declared)
    if fmt == "parquet":
        return _parquet_rows(path)
    text = _decode(path)
    if fmt == "text":
        return [{"text": text}]
    return _jsonl_rows(text, path) if fmt == "jsonl" else _csv_rows(text, path)


@contextlib.contextmanager
def _hub_offline_mode() -> Iterator[bool]:
    """Apply HF_HUB_OFFLINE / HF_DATASETS_OFFLINE as set now; yield whether offline mode is on.

    `datasets` and `huggingface_hub` read these variables once, at import; a process that sets
    them later would still reach for the network and wait for its time-outs.
    """
    import datasets.config
    import huggingface_hub.constants

    wanted = any(os.environ.get(v, "").strip().upper() in _TRUE_WORDS for v in _OFFLINE_VARIABLES)
    saved = (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE)
    if wanted:
        datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield bool(datasets.config.HF_HUB_OFFLINE)
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved


def hub_rows(name: str, split: str, revision: str | None) -> list[dict[str, Any]]:
    """The rows of one split of a model-hub dataset (from the local cache when offline)."""
    import datasets

    with _hub_offline_mode() as offline:
        try:
            dataset = datasets.load_dataset(name, split=split, revision=revision)
        # datasets raises many unrelated types here (ConnectionError, FileNotFoundError,
        # ValueError, its own errors); every one means this dataset cannot be read as named
        except Exception as exc:
            if offline:
                raise DataError(
                    f"hub dataset {name!r} is not in the local cache and offline mode "
                    "is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); download it once "
                    "with network access, or use a local file as source"
                ) from exc
            raise DataError(
                f"cannot load hub dataset {name!r} (split {split!r}, revision {revision or 'latest'}): {exc}"
            ) from exc
    if len(dataset) == 0:
        raise DataError(f"hub dataset {name!r} split {split!r} has no rows")
    return [dict(row) for row in dataset]
