// The webcam filter page's status line and message box: what went wrong, said so a person can act on it.
import { ApiFailure, savedToken } from "./api.js";
import { IceFailure } from "./rtc.js";
import { $, state } from "./filter-state.js";

export function setStatus(name, text) {
  document.body.dataset.state = name;
  $("status-text").textContent = text;
}

export function showMessage(kind, title, detail, action = "Retry") {
  const box = $("message");
  box.dataset.kind = kind;
  $("message-title").textContent = title;
  $("message-detail").textContent = detail;
  $("message-action").textContent = action;
  $("message-action").hidden = kind === "token";
  $("token-form").hidden = kind !== "token";
  $("message-countdown").hidden = true;
  box.hidden = false;
  $("output-placeholder").textContent = "Not connected";
  setStatus("error", title);
}

export function hideMessage() {
  $("message").hidden = true;
  delete $("message").dataset.kind;
}

export function askForToken(refused) {
  $("token").value = savedToken();
  if (refused) {
    showMessage("token", "Token refused", "The server did not accept this access token. Correct it and press Connect.");
  } else {
    showMessage("token", "Token required", "This server needs an access token (its --token). Enter it and press Connect; this browser remembers it.");
  }
  $("token").focus();
}

// What went wrong, said so a person can act on it, and whether waiting and trying again can fix it: a refused token
// or an offer the server cannot use stay refused; an unreachable or full server, a failed ICE or anything else
// may pass. { kind, title, detail, retry, waitMs (the server's Retry-After) }
export function describeFailure(err) {
  if (err instanceof IceFailure) return { kind: "relay", title: err.title, detail: err.detail, retry: true };
  if (!(err instanceof ApiFailure)) {
    return { kind: "error", title: "Something went wrong", detail: String(err && err.message ? err.message : err),
             retry: true };
  }
  switch (err.kind) {
    case "unreachable":
      return { kind: "unreachable", title: "Server unreachable", detail: `${err.detail}. Is sana-stream running?`,
               retry: true };
    case "full": {
      const max = state.config ? state.config.max_peers : "its";
      return { kind: "server-full", title: "Server full", retry: true, waitMs: (err.retryAfter || 0) * 1000,
               detail: `All ${max} camera streams of this server are in use (a larger --max-peers makes room).` };
    }
    case "unauthorized":
      return { kind: "token", retry: false, refused: err.sentToken };
    case "invalid":
      return { kind: "error", title: "The server refused the connection", detail: err.detail, retry: false };
    default:
      return { kind: "error", title: "The server refused the connection", detail: err.detail, retry: true };
  }
}

// shows a failure that retrying cannot fix; the page waits for a person
export function explainFailure(failure) {
  if (failure.kind === "token") askForToken(failure.refused);
  else showMessage(failure.kind, failure.title, failure.detail);
}

export function explainCameraFailure(err) {
  switch (err.name) {
    case "NotAllowedError":
    case "SecurityError":
      showMessage("camera-denied", "Camera access denied",
                  "Allow the camera for this page (the camera icon in the address bar), then press Retry.");
      break;
    case "NotFoundError":
    case "OverconstrainedError":
      showMessage("no-camera", "No camera found", "Connect a camera, then press Retry.");
      break;
    case "NotReadableError":
    case "AbortError":
      showMessage("camera-busy", "Camera busy", "Another application is using the camera. Close it, then press Retry.");
      break;
    default:
      showMessage("error", "The camera could not be opened", `${err.name}: ${err.message}`);
  }
}
