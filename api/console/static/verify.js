// Checks a certificate in the browser, as `lethe verify` does offline: the Ed25519 signature
// over the canonical `certificate` bytes, made by the key this service publishes
// (GET /v1/signing-key), for this job and its adapter as listed by the API.
import { sha256Hex } from "./api.js";

const b64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

// The file is canonical JSON (sorted keys, no spaces): `{"certificate":…,"signature":{…}}`, so
// the signed bytes are exactly the text between those two keys.
function signedBytes(text) {
  const start = '{"certificate":';
  const end = text.lastIndexOf(',"signature":');
  if (!text.startsWith(start) || end < 0) return null;
  return new TextEncoder().encode(text.slice(start.length, end));
}

async function signatureValid(publicKey, signature, payload) {
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, payload);
  } catch (err) {
    return `this browser cannot check Ed25519 (${err.name}): use \`lethe verify\``;
  }
}

// Returns [{check, ok, note}] and whether all passed.
export async function verifyCertificate(bytes, published, jobId, artifacts) {
  const text = new TextDecoder().decode(bytes);
  const doc = JSON.parse(text);
  const sig = doc.signature || {};
  const payload = signedBytes(text);
  const adapter = artifacts.find((a) => a.name === "adapter.tar.gz");
  const keyHash = await sha256Hex(b64(published.public_key));
  const valid = payload ? await signatureValid(b64(published.public_key), b64(sig.value || ""), payload) : false;
  const checks = [
    { check: "Signed with Ed25519", ok: sig.algorithm === "Ed25519", note: sig.algorithm },
    { check: "Signed by this service's published key", ok: sig.key_id === published.key_id && sig.public_key === published.public_key && keyHash === published.key_id, note: `key id ${published.key_id.slice(0, 16)}…` },
    { check: "Signature matches the certificate's content", ok: valid === true, note: typeof valid === "string" ? valid : valid ? "valid" : "does not verify: the certificate was changed or signed by another key" },
    { check: "Certifies this job", ok: doc.certificate?.job?.id === jobId, note: doc.certificate?.job?.id },
    { check: "Adapter hash matches the stored adapter", ok: Boolean(adapter) && doc.certificate?.adapter?.archive_sha256 === adapter.sha256, note: adapter ? `${adapter.sha256.slice(0, 16)}…` : "no adapter listed" },
  ];
  return { checks, ok: checks.every((c) => c.ok), certificate: doc.certificate };
}
