"""What each queue's workers have: `LETHE_QUEUE_CAPACITY`, parsed.

The setting lists queues in the order placement tries them, as `NAME=KIND:COUNTxMEMORY` entries
separated by commas: `gpu=cuda:1x80GiB,cpu=cpu:1x16GiB` says the `gpu` queue's workers have one
CUDA device of 80 GiB each and the `cpu` queue's one CPU process with 16 GiB. For `cpu`, a device
is one training process (data parallel on CPU runs one per device) and its memory that process's
share of RAM. Memory takes a unit: MiB, GiB, TiB (or MB, GB, TB: powers of 1000).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import NoDecode

UNITS = {"MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4, "MB": 10**6, "GB": 10**9, "TB": 10**12}
ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<kind>[a-z]+):(?P<count>\d+)x(?P<size>\d+(\.\d+)?)(?P<unit>[A-Za-z]*)$"
)
FORMAT = "write NAME=KIND:COUNTxMEMORY, comma-separated, e.g. gpu=cuda:1x80GiB,cpu=cpu:1x16GiB"


class QueueCapacity(BaseModel):
    """One queue's workers: the kind of device, devices per worker and memory per device."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["cpu", "cuda"]
    devices: int = Field(ge=1, le=64)
    memory_bytes: int = Field(gt=0)

    def describe(self) -> str:
        return f"{self.kind}, {self.devices} x {self.memory_bytes / 1024**3:.3g} GiB"


def parse_entry(entry: str) -> tuple[str, QueueCapacity]:
    """`NAME=KIND:COUNTxMEMORY` as (queue, capacity); ValueError naming the entry and the form."""
    found = ENTRY.match(entry)
    if found is None:
        raise ValueError(f"{entry!r} is not a queue's capacity: {FORMAT}")
    kind, unit = found["kind"], found["unit"]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"{entry!r}: unknown device kind {kind!r}: use cpu or cuda")
    if unit not in UNITS:
        raise ValueError(f"{entry!r}: memory needs a unit ({', '.join(UNITS)}), not {unit or 'none'!r}")
    count, size = int(found["count"]), float(found["size"]) * UNITS[unit]
    if count < 1 or size <= 0:
        raise ValueError(f"{entry!r}: devices and memory must be above 0")
    return found["name"], QueueCapacity(kind=kind, devices=count, memory_bytes=int(size))


def parse_capacities(value: object) -> object:
    """The setting's text as {queue: capacity}, in its order; a mapping passes through."""
    if not isinstance(value, str):
        return value
    parsed: dict[str, QueueCapacity] = {}
    for entry in (item.strip() for item in value.split(",")):
        if not entry:
            continue
        name, capacity = parse_entry(entry)
        if name in parsed:
            raise ValueError(f"queue {name!r} is listed twice")
        parsed[name] = capacity
    return parsed


QueueCapacities = Annotated[dict[str, QueueCapacity], NoDecode, BeforeValidator(parse_capacities)]


def capacity_text(capacities: dict[str, QueueCapacity]) -> str:
    """The setting's form of parsed capacities (for messages): `gpu=cuda:1x80GiB,...`."""
    return ",".join(
        f"{name}={c.kind}:{c.devices}x{c.memory_bytes / 1024**3:g}GiB" for name, c in capacities.items()
    )
