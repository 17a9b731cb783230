"""/v1/audit/verify: the audit log's hash chain checked where it is stored (admin), as
`lethe audit verify` checks it: every line's hash, every link, and the end against the head."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lethe.api.deps import AdminDep, RuntimeDep
from lethe.api.schemas import errors
from lethe.service.trust import audit

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class ChainOut(BaseModel):
    ok: bool = Field(description="every line is intact and linked, and the log ends at its head")
    checked: int = Field(description="lines checked (the whole log, every tenant's: one chain)")
    last_seq: int
    problems: list[str] = Field(description="what is wrong, line by line (the first few)")


@router.get("/verify", name="verify", responses=errors(401, 403, 503))
async def verify_chain(rt: RuntimeDep, principal: AdminDep) -> ChainOut:
    """Check the audit log's hash chain in the database against its head."""
    report = await run_in_threadpool(audit.verify_database, rt.sessions)
    return ChainOut(ok=report.ok, checked=report.checked, last_seq=report.last_seq, problems=report.problems)
