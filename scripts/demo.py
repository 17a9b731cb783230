"""Submit a spec to a running Lethe service with the client SDK, follow it, print before/after,
download the artifacts and the signed certificate, and say how to check them.

Local dataset files named by the spec are uploaded first (POST /v1/datasets) and referred to as
`dataset:<id>`; built-in and hub references are passed as they are. Requests carry the API key
of LETHE_API_KEY (or --key) as `Authorization: Bearer KEY`. Everything goes through
`lethe.client.LetheClient`, the same client as the `lethe jobs ...` verbs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lethe.client.sdk import ClientError, Dataset, LetheClient, read_spec
from lethe.core.run.report import before_after_table


def run(lethe: LetheClient, spec_path: Path, out: Path) -> int:
    def uploaded(source: str, dataset: Dataset) -> None:
        print(f"uploaded {source}: dataset {dataset.id} ({dataset.row_count} rows)")

    spec = lethe.upload_local_files(read_spec(spec_path), spec_path.resolve().parent, on_upload=uploaded)
    job = lethe.submit(spec)
    print(f"submitted job {job.id}: GET {lethe.url}/v1/jobs/{job.id}", flush=True)
    job = lethe.wait(job.id, poll_s=2.0)  # status lines and a progress bar per stage on stderr
    if job.status != "succeeded":
        print(f"job {job.status}: {job.error}", file=sys.stderr)
        return 1
    print(before_after_table(job.metrics or {}))
    lethe.download(job.id, out)  # every artifact, each SHA-256 checked; adapter.tar.gz extracted
    certificate, public_key = out / "certificate.json", out / "signing_key.pem"
    lethe.certificate(job.id, certificate)
    public_key.write_text(lethe.signing_key()["public_key_pem"], encoding="utf-8")
    checked = lethe.verify_certificate(certificate, pin_to_server=True)
    print(f"adapter:     {out / 'adapter.tar.gz'} (SHA-256 checked; extracted to {out / 'adapter'})")
    print(f"report:      {out / 'report.html'} (one file, readable offline: open it in a browser)")
    print(f"certificate: {certificate} ({'OK' if checked.ok else 'FAILED'}: {checked.reason})")
    print(f"signing key: {public_key} (also GET {lethe.url}/v1/signing-key)")
    print("verify the certificate yourself, offline, against the key it must be signed with:")
    print(f"  lethe verify {certificate} --public-key {public_key} --adapter {out / 'adapter.tar.gz'}")
    print("or with openssl alone (docs/compliance.md):")
    print(f"  lethe verify {certificate} --public-key {public_key} --openssl {out / 'openssl'}")
    print(
        f"  openssl pkeyutl -verify -pubin -inkey {public_key} -rawin "
        f"-in {out / 'openssl' / 'payload.bin'} -sigfile {out / 'openssl' / 'signature.bin'}"
    )
    return 0 if checked.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--out", default="result")
    parser.add_argument(
        "--key", default=os.environ.get("LETHE_API_KEY", ""), help="API key (default: LETHE_API_KEY)"
    )
    args = parser.parse_args()
    if not args.key:
        sys.exit("error: no API key: set LETHE_API_KEY (or --key); create one with `lethe keys create`")
    try:
        with LetheClient(args.url, args.key) as lethe:
            return run(lethe, Path(args.spec), Path(args.out))
    except ClientError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    sys.exit(main())
