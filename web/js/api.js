// HTTP side of the pages: the remembered token, JSON requests, and errors sorted into what a person can act on.

const TOKEN_KEY = "sana-stream.token";
const REQUEST_TIMEOUT_MS = 20000; // a server that accepted the connection but never answers counts as unreachable

export function savedToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function saveToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

// kind: "unreachable" | "unauthorized" | "full" | "unknown_stream" | "invalid" | "error"
export class ApiFailure extends Error {
  constructor(kind, detail, { status = 0, retryAfter = null, sentToken = false } = {}) {
    super(detail);
    this.kind = kind;
    this.detail = detail;
    this.status = status;
    this.retryAfter = retryAfter;
    this.sentToken = sentToken;
  }
}

function describe(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${d.field}: ${d.message}`).join("; ");
  return JSON.stringify(detail);
}

// POST or GET JSON; resolves with the parsed body, rejects with an ApiFailure. With `sdp` (WHEP, WHIP): posts it as
// application/sdp and resolves with the answer, { type: "answer", sdp, location }.
export async function request(path, { method = "GET", body, sdp, token = savedToken() } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (sdp !== undefined) headers["Content-Type"] = "application/sdp";
  if (token) headers.Authorization = `Bearer ${token}`;
  const payload = sdp !== undefined ? sdp : body === undefined ? undefined : JSON.stringify(body);
  let response;
  try {
    response = await fetch(path, { method, headers, body: payload, cache: "no-store",
                                   signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  } catch (err) {
    throw new ApiFailure("unreachable", `the server at ${location.host} does not answer (${err.message})`);
  }
  if (response.ok && sdp !== undefined) {
    return { type: "answer", sdp: await response.text(), location: response.headers.get("Location") };
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.ok) return data;
  const detail = data && data.detail !== undefined ? describe(data.detail) : `HTTP ${response.status}`;
  const options = { status: response.status, sentToken: Boolean(token),
                    retryAfter: Number(response.headers.get("Retry-After")) || null };
  const kinds = { 401: "unauthorized", 503: "full", 404: "unknown_stream", 400: "invalid", 409: "invalid",
                  415: "invalid", 422: "invalid" };
  if (response.status >= 500 && response.status !== 503) throw new ApiFailure("unreachable", detail, options);
  throw new ApiFailure(kinds[response.status] || "error", detail, options);
}

export const getConfig = () => request("/config");
