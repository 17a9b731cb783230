// Every call the console makes: the /v1 API with the key in the Authorization header. The key
// lives in sessionStorage (this tab only, gone when it closes), never in a URL.

const KEY = "lethe.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  signIn(key) { sessionStorage.setItem(KEY, key); },
  signOut() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, detail) {
    const text = Array.isArray(detail) ? detail.map((p) => `${p.field}: ${p.msg}`).join("; ") : String(detail);
    super(`${status}: ${text}`);
    this.status = status;
    this.problems = Array.isArray(detail) ? detail : [];
    this.detail = detail;
  }
}

function headers(extra = {}) {
  const out = { ...extra };
  if (session.key) out.Authorization = `Bearer ${session.key}`;
  return out;
}

async function fail(response) {
  let detail = response.statusText;
  try { detail = (await response.json()).detail ?? detail; } catch { /* not JSON */ }
  if (response.status === 401) window.dispatchEvent(new CustomEvent("lethe:unauthorized"));
  throw new ApiError(response.status, detail);
}

// JSON in (optional), JSON out; a FormData body is sent as multipart.
export async function api(path, { method = "GET", body, form, extraHeaders = {}, signal } = {}) {
  const init = { method, headers: headers(extraHeaders), signal };
  if (form) init.body = form;
  else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) await fail(response);
  return response.status === 204 ? null : response.json();
}

// The raw answer (a file), checked for errors.
export async function fetchFile(path, { signal } = {}) {
  const response = await fetch(path, { headers: headers({ Accept: "application/octet-stream" }), signal });
  if (!response.ok) await fail(response);
  return response;
}

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// Downloads an artifact through the API (the key in a header, so no link can carry it), checks
// its SHA-256 against the server's `X-Content-SHA256`, and saves it. Returns the hash check.
export async function download(path, name) {
  const response = await fetchFile(path);
  const buffer = await response.arrayBuffer();
  const expected = response.headers.get("X-Content-SHA256");
  const actual = await sha256Hex(buffer);
  const url = URL.createObjectURL(new Blob([buffer]));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return { expected, actual, ok: !expected || expected === actual, size: buffer.byteLength };
}

// Server-sent events read with fetch (EventSource cannot send a header). `openEvents` resolves
// once the server has answered (the stream is open and its start fixed), then yields each
// event as {id, event, data} until the server ends the stream or `signal` aborts it.
export async function openEvents(path, { after = 0, signal } = {}) {
  const response = await fetch(path, {
    headers: headers({ Accept: "text/event-stream", "Last-Event-ID": String(after) }),
    signal,
  });
  if (!response.ok) await fail(response);
  const position = { last: null };  // the last `id` the server sent, with or without data
  const stream = readEvents(response, position);
  stream.position = position;
  return stream;
}

export async function* events(path, options = {}) {
  yield* await openEvents(path, options);
}

async function* readEvents(response, position = {}) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseEvent(block);
      if (event.id !== null) position.last = Number(event.id);
      if (event.data !== null) yield event;
    }
  }
}

function parseEvent(block) {
  const event = { id: null, event: "message", data: "" };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;  // a keep-alive comment
    const colon = line.indexOf(":");
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data += value;
    else if (field in event) event[field] = value;
  }
  return { ...event, data: event.data ? JSON.parse(event.data) : null };
}

// Follows one job's events: calls `onEvent` for each, resumes after a dropped connection, and
// returns when the job has ended (the server closes the stream) or `signal` aborts.
export async function follow(jobId, after, onEvent, signal) {
  let last = after;
  for (let tries = 0; !signal.aborted && tries < 5; tries += 1) {
    try {
      for await (const event of events(`/v1/jobs/${jobId}/events/stream`, { after: last, signal })) {
        last = event.data.id;
        tries = 0;
        onEvent(event.data);
      }
      return last;
    } catch (err) {
      if (signal.aborted || (err instanceof ApiError && err.status < 500)) throw err;
      await new Promise((r) => setTimeout(r, 1000 * (tries + 1)));
    }
  }
  return last;
}

// Follows every job of the tenant through one stream (GET /v1/events/stream), starting with the
// already open `stream`, and calls `onEvent` for each event. The server ends a stream when no
// job is active (or on shutdown); it is then reopened after a pause, resuming after the last id
// the server sent, so a job submitted meanwhile (another tab, the API) is seen too.
export async function followTenant(stream, onEvent, { signal, pauseMs = 5000 } = {}) {
  let last = null;
  for (let tries = 0; !signal.aborted && tries < 10;) {
    try {
      for await (const event of stream) {
        tries = 0;
        onEvent(event.data);
      }
    } catch (err) {
      if (signal.aborted || (err instanceof ApiError && err.status < 500)) return;
      tries += 1;
    }
    last = stream.position?.last ?? last;
    await new Promise((r) => setTimeout(r, pauseMs * Math.max(1, tries)));
    if (signal.aborted) return;
    const after = last === null ? "" : `?after=${last}`;
    stream = await openEvents(`/v1/events/stream${after}`, { signal }).catch(() => {
      tries += 1;
      return (async function* () {})();  // failed to open: counted, and tried again after a pause
    });
  }
}
