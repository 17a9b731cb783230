"""The signing key (`GET /v1/signing-key`) and a succeeded job's certificate
(`GET /v1/jobs/{id}/certificate`), byte for byte as signed."""

from __future__ import annotations

import base64
import uuid

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from lethe.api.deps import ReadDep, RuntimeDep
from lethe.api.schemas import CertificateFile, errors
from lethe.evidence.certificate import ALGORITHM, key_id, public_key_pem, raw_public_key
from lethe.service.trust import certificates

router = APIRouter(tags=["certificates"])


class SigningKeyOut(BaseModel):
    algorithm: str = ALGORITHM
    key_id: str = Field(
        description="SHA-256 (hex) of the raw public key: pin it with `lethe verify --key-id`"
    )
    public_key: str = Field(description="the raw 32-byte public key, base64")
    public_key_pem: str = Field(description="the same key as PEM (SubjectPublicKeyInfo), for openssl")


@router.get("/v1/signing-key", name="signing_key")
def signing_key(request: Request) -> SigningKeyOut:
    """The public key that signs this service's certificates (no key needed to read it)."""
    public = request.app.state.signing_key.public_key()
    return SigningKeyOut(
        key_id=key_id(public),
        public_key=base64.b64encode(raw_public_key(public)).decode(),
        public_key_pem=public_key_pem(public),
    )


@router.get(
    "/v1/jobs/{job_id:uuid}/certificate",
    name="get",
    response_class=Response,
    responses={
        **errors(401, 403, 404, 409, 422, 503),
        200: {
            "model": CertificateFile,
            "description": "the canonical certificate file: verify these bytes as they are "
            "(`lethe verify`), since a re-serialisation need not be canonical",
        },
    },
)
async def job_certificate(
    request: Request, rt: RuntimeDep, principal: ReadDep, job_id: uuid.UUID
) -> Response:
    """The signed unlearning certificate of a succeeded job (signed on the first request)."""
    document = await run_in_threadpool(
        certificates.issue, rt, request.app.state.signing_key, job_id, principal.tenant, principal.key_id
    )
    return Response(
        document,
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="certificate-{job_id}.json"'},
    )
