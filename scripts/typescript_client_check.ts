// A TypeScript program over the client generated from Lethe's OpenAPI document: `lethe.ts` is
// written by openapi-typescript, the client is openapi-fetch's, and `tsc --strict --noEmit` checks
// that the calls below fit the schema (scripts/check_typescript_client.sh). It is compiled, not
// run: the Python client runs end to end in tests/integration/test_generated_clients.py.
import createClient from "openapi-fetch";
import type { components, operations, paths } from "./lethe";

type Schemas = components["schemas"];
type JobStatus = Schemas["JobOut"]["status"];
type ErrorBody = operations["jobs.submit"]["responses"][422]["content"]["application/json"];
const FINAL: JobStatus[] = ["succeeded", "failed", "cancelled"];

function explain(error: ErrorBody): string {
  // every 4xx body is the one ErrorOut: a message, or one problem per field
  return typeof error.detail === "string"
    ? error.detail
    : error.detail.map((p: Schemas["Problem"]) => `${p.field}: ${p.msg}`).join("; ");
}

export async function runTinyJob(baseUrl: string, key: string, rows: Blob): Promise<Schemas["CertificateFile"]> {
  const lethe = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });
  const ready: Schemas["ReadyOut"] | undefined = (await lethe.GET("/readyz")).data;
  if (ready?.status !== "ready") throw new Error("not ready");

  const form: Schemas["DatasetsUploadForm"] = { file: "", schema: "pairs", format: "jsonl" };
  const upload = await lethe.POST("/v1/datasets", {
    body: form,
    bodySerializer: () => {
      const data = new FormData();
      data.append("file", rows, "forget.jsonl");
      data.append("schema", form.schema ?? "pairs");
      return data;
    },
  });
  if (upload.error) throw new Error(explain(upload.error));
  const reference: string = upload.data.reference;

  const spec: Schemas["JobSpec"] = {
    name: "tiny",
    model: { name: "tiny-llama", device: "cpu" },
    unlearn: { method: "ga", forget: { source: reference }, train: { steps: 2 } },
  };
  const submitted = await lethe.POST("/v1/jobs", { body: spec, headers: { "Idempotency-Key": "ts-1" } });
  if (submitted.error) throw new Error(explain(submitted.error));
  const job_id: string = submitted.data.id;

  let job: Schemas["JobDetail"] = submitted.data;
  while (!FINAL.includes(job.status)) {
    const polled = await lethe.GET("/v1/jobs/{job_id}", { params: { path: { job_id } } });
    if (polled.error) throw new Error(explain(polled.error));
    job = polled.data;
  }
  const listed = await lethe.GET("/v1/jobs", { params: { query: { status: "succeeded", limit: 10 } } });
  const ids: string[] = (listed.data?.items ?? []).map((j: Schemas["JobOut"]) => j.id);

  const events = await lethe.GET("/v1/jobs/{job_id}/events", { params: { path: { job_id }, query: { after: 0 } } });
  const kinds: string[] = (events.data ?? []).map((e: Schemas["EventOut"]) => e.kind);
  const stream = await lethe.GET("/v1/jobs/{job_id}/events/stream", {
    params: { path: { job_id }, header: { "last-event-id": 0 } },
    parseAs: "text",
  });
  const lines: string[] = (stream.data ?? "").split("\n");

  const artifacts = await lethe.GET("/v1/jobs/{job_id}/artifacts", { params: { path: { job_id } } });
  for (const artifact of artifacts.data ?? []) {
    const file = await lethe.GET("/v1/jobs/{job_id}/artifacts/{name}", {
      params: { path: { job_id, name: artifact.name } },
      headers: { Accept: "application/octet-stream" },
      parseAs: "blob",
    });
    const size: number = file.data?.size ?? 0;
    if (size !== artifact.size) throw new Error(`${artifact.name}: ${size} bytes, not ${artifact.size}`);
  }
  const audit = await lethe.GET("/v1/audit", { params: { query: { since: "2025-11-01", limit: 5 } } });
  const next: number | null | undefined = audit.data?.next_after;
  console.log(ids.length, kinds.length, lines.length, next);

  const certificate = await lethe.GET("/v1/jobs/{job_id}/certificate", { params: { path: { job_id } } });
  if (certificate.error) throw new Error(explain(certificate.error));
  const signature: Schemas["CertificateSignature"] = certificate.data.signature;
  if (signature.algorithm !== "Ed25519") throw new Error("unknown signature");
  return certificate.data;
}
