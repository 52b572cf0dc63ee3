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

export function explainFailure(err) {
  if (err instanceof IceFailure) {
    showMessage("relay", err.title, err.detail);
    return;
  }
  if (!(err instanceof ApiFailure)) {
    showMessage("error", "Something went wrong", String(err && err.message ? err.message : err));
    return;
  }
  switch (err.kind) {
    case "unreachable":
      showMessage("unreachable", "Server unreachable", `${err.detail}. Is sana-stream running? Retry when it is.`);
      break;
    case "full": {
      const max = state.config ? state.config.max_peers : "its";
      showMessage("server-full", "Server full",
                  `All ${max} camera streams of this server are in use. Try again in ${err.retryAfter || "a few"} ` +
                  "seconds, or start the server with a larger --max-peers.");
      break;
    }
    case "unauthorized":
      askForToken(err.sentToken);
      break;
    default:
      showMessage("error", "The server refused the connection", err.detail);
  }
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
