"""Unlearning certificates: canonical JSON, Ed25519 signing, and offline verification.

A certificate file is one JSON object `{"certificate": {...}, "signature": {...}}` written in
canonical form: keys sorted, no whitespace, UTF-8, Python's shortest round-trip floats, no NaN.
The signature is Ed25519 over the canonical bytes of `certificate`. Because the file itself must be
canonical, any changed byte is detected: it breaks the JSON, the canonical form, the key id or
the signature. Nothing here needs the service: the SDK and `lethe verify` use it offline.

`signature` = {"algorithm": "Ed25519", "key_id": SHA-256 of the raw 32-byte public key (hex),
"public_key": the raw key (base64), "value": the 64-byte signature (base64)}.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "Ed25519"
FORMAT = "lethe-unlearning-certificate/1"
SIGNATURE_FIELDS = {"algorithm", "key_id", "public_key", "value"}


def canonical_json(value: Any) -> bytes:
    """The one byte string a JSON value signs as (raises ValueError on NaN or infinity)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None, so it can be written canonically."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """The key's fingerprint: SHA-256 of its raw 32 bytes, hex."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def sign(private_key: Ed25519PrivateKey, certificate: dict[str, Any]) -> bytes:
    """The canonical certificate file for `certificate`, signed with `private_key`."""
    public = private_key.public_key()
    signature = private_key.sign(canonical_json(certificate))
    return canonical_json(
        {
            "certificate": certificate,
            "signature": {
                "algorithm": ALGORITHM,
                "key_id": key_id(public),
                "public_key": base64.b64encode(raw_public_key(public)).decode(),
                "value": base64.b64encode(signature).decode(),
            },
        }
    )


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM text, or from the base64 of its raw 32 bytes."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError) as err:
        raise ValueError(f"not an Ed25519 public key (PEM or base64 of 32 bytes): {err}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key but {type(key).__name__}")
    return key


def read_public_key(value: str) -> Ed25519PublicKey:
    """A public key given as a file path (PEM or base64) or as the base64 text itself."""
    path = Path(value).expanduser()
    return load_public_key(path.read_text(encoding="utf-8") if path.is_file() else value)


@dataclass(frozen=True)
class Verification:
    """The outcome of checking a certificate file; `reason` says what failed (or what was shown)."""

    ok: bool
    reason: str
    key_id: str | None = None
    pinned: bool = False
    certificate: dict[str, Any] | None = None


def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"not a JSON document ({err})"
    if not isinstance(doc, dict) or set(doc) != {"certificate", "signature"}:
        return None, "not a certificate: expected exactly the fields 'certificate' and 'signature'"
    sig = doc["signature"]
    if not isinstance(doc["certificate"], dict) or not isinstance(sig, dict) or set(sig) != SIGNATURE_FIELDS:
        return None, f"malformed signature block: expected the fields {sorted(SIGNATURE_FIELDS)}"
    try:
        canonical = canonical_json(doc)
    except ValueError as err:
        return None, f"not canonical JSON ({err})"
    if canonical != raw:
        return None, (
            "not in canonical form: the file was changed after signing (use the file "
            "exactly as downloaded; do not reformat it)"
        )
    return doc, ""


def _strict_b64decode(text: str) -> bytes:
    """Base64 that accepts exactly one spelling per value.

    Plain decoding ignores the unused low bits of the last character before '=', so a changed
    byte there would still verify; requiring the canonical re-encoding closes that gap.
    """
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode() != text:
        raise ValueError("non-canonical base64 (unused bits are set)")
    return data


def verify_bytes(
    raw: bytes, pinned: Ed25519PublicKey | None = None, pinned_key_id: str | None = None
) -> Verification:
    """Check a certificate file's bytes; pin the signer with a public key or a key id."""
    doc, problem = _parse(raw)
    if doc is None:
        return Verification(False, problem)
    sig = doc["signature"]
    if sig["algorithm"] != ALGORITHM:
        return Verification(False, f"unsupported algorithm {sig['algorithm']!r}: expected {ALGORITHM}")
    try:
        embedded = Ed25519PublicKey.from_public_bytes(_strict_b64decode(sig["public_key"]))
        signature = _strict_b64decode(sig["value"])
    except (ValueError, binascii.Error, TypeError) as err:
        return Verification(False, f"malformed public key or signature: {err}")
    kid = key_id(embedded)
    if sig["key_id"] != kid:
        return Verification(False, f"key_id {sig['key_id']} is not the fingerprint of the embedded key {kid}")
    expected = key_id(pinned) if pinned is not None else pinned_key_id
    if expected is not None and expected.lower() != kid:
        return Verification(False, f"signed by key {kid}, not by the pinned key {expected}", kid)
    try:
        embedded.verify(signature, canonical_json(doc["certificate"]))
    except InvalidSignature:
        return Verification(False, "the signature does not match the certificate's content", kid)
    pinned_ok = expected is not None
    reason = (
        f"signature valid, signed by the pinned key {kid}"
        if pinned_ok
        else f"signature valid for the embedded key {kid}; pin it (--public-key or --key-id) "
        "to check who signed"
    )
    return Verification(True, reason, kid, pinned_ok, doc["certificate"])


def verify_file(
    path: Path, pinned: Ed25519PublicKey | None = None, pinned_key_id: str | None = None
) -> Verification:
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return Verification(False, f"cannot read {path}: {err.strerror or err}")
    return verify_bytes(raw, pinned, pinned_key_id)


def openssl_inputs(raw: bytes, folder: Path) -> dict[str, Path]:
    """Write what `openssl pkeyutl -verify -rawin` needs: payload, signature and public key PEM."""
    doc, problem = _parse(raw)
    if doc is None:
        raise ValueError(problem)
    sig = doc["signature"]
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"]))
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "payload": folder / "payload.bin",
        "signature": folder / "signature.bin",
        "public_key": folder / "public_key.pem",
    }
    files["payload"].write_bytes(canonical_json(doc["certificate"]))
    files["signature"].write_bytes(base64.b64decode(sig["value"]))
    files["public_key"].write_text(public_key_pem(key), encoding="utf-8")
    return files
