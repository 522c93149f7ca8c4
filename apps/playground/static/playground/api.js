// A small client of the public API: bearer token, the envelope's message on errors, and
// server-sent events read with fetch + ReadableStream (EventSource cannot send Authorization).

export class ApiError extends Error {
  constructor(message, { status = 0, body = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body;
  }
}

// The envelope {statusCode, message, error, details?} → one readable line (the message is already in
// the language the request asked for with Accept-Language).
export function envelopeMessage(body, status) {
  if (body && typeof body === "object") {
    const inner = body.error && typeof body.error === "object" ? body.error : body; // also OpenAI's shape
    let text = typeof inner.message === "string" ? inner.message : "";
    if (body.details && typeof body.details === "object") {
      const parts = Object.entries(body.details).map(([field, msgs]) => `${field}: ${[].concat(msgs).join(" ")}`);
      if (parts.length) text = text ? `${text} (${parts.join("; ")})` : parts.join("; ");
    }
    if (text) return text;
  }
  return `HTTP ${status}`;
}

export class Api {
  constructor({ base = "", token = "", language = "en" } = {}) {
    this.base = base.replace(/\/+$/, "");
    this.token = token;
    this.language = language;
  }

  url(path) {
    return `${this.base}/api/v1/${path.replace(/^\/+/, "")}`;
  }

  headers(extra = {}) {
    const headers = { Accept: "application/json", "Accept-Language": this.language, ...extra };
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    return headers;
  }

  async send(method, path, { json, form, signal, accept } = {}) {
    const init = { method, headers: this.headers(accept ? { Accept: accept } : {}), signal };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form; // multipart: the browser sets the boundary
    }
    let response;
    try {
      response = await fetch(this.url(path), init);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      // A network failure and a CORS refusal look the same to a page: the browser hides the reason.
      throw new ApiError(
        `Cannot reach the API at ${this.base || location.origin} (network error, or this page's origin ` +
          `${location.origin} is not allowed by CORS_ALLOWED_ORIGINS).`,
      );
    }
    if (!response.ok) {
      let body = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      throw new ApiError(envelopeMessage(body, response.status), { status: response.status, body });
    }
    return response;
  }

  async request(method, path, options = {}) {
    const response = await this.send(method, path, options);
    if (response.status === 204) return null;
    return response.json();
  }

  get(path, options) {
    return this.request("GET", path, options);
  }

  post(path, json, options = {}) {
    return this.request("POST", path, { ...options, json });
  }

  patch(path, json, options = {}) {
    return this.request("PATCH", path, { ...options, json });
  }

  // POST a body to a streaming endpoint; `onEvent` gets every parsed `data:` JSON object as it arrives,
  // `onOpen` the response (headers) before the first event. Resolves when the stream ends; rejects with
  // AbortError when `signal` aborts it, with ApiError for an error answered before the stream.
  async stream(path, json, { signal, onEvent, onOpen } = {}) {
    const response = await this.send("POST", path, { json, signal, accept: "text/event-stream" });
    if (onOpen) onOpen(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = nextBoundary(buffer)) !== null) {
        const block = buffer.slice(0, cut.index);
        buffer = buffer.slice(cut.index + cut.length);
        const data = dataOf(block);
        if (data === null) continue; // a comment (": ping")
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

function nextBoundary(buffer) {
  const match = /\r?\n\r?\n/.exec(buffer);
  return match ? { index: match.index, length: match[0].length } : null;
}

function dataOf(block) {
  const lines = block.split(/\r?\n/).filter((line) => line.startsWith("data:"));
  if (!lines.length) return null;
  return lines.map((line) => line.slice(line.startsWith("data: ") ? 6 : 5)).join("\n");
}
