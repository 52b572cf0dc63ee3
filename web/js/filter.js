// The webcam filter page: camera in, restyled video out, live prompt and settings.
import { ApiFailure, getConfig, request, savedToken, saveToken } from "./api.js";
import { IceFailure, formatStats, negotiate, rtcConfiguration, videoStats } from "./rtc.js";

const $ = (id) => document.getElementById(id);
const STREAM_KEY = "sana-stream.stream"; // per tab: a reload or reconnect keeps the stream id (and /view links)
const CAMERA_KEY = "sana-stream.camera";
const AUTO_RECONNECTS = 3;

const state = {
  config: null,
  camera: null, // MediaStream
  pc: null,
  streamId: sessionStorage.getItem(STREAM_KEY),
  settings: null, // the stream's settings as the server last confirmed them
  generation: 0, // bumped by every (re)connect; stale callbacks compare against it
  autoReconnects: 0,
  statsTimer: null,
  lastStats: null,
};
window.sanaStream = state; // for tests and the curious

// ---- messages and status ---------------------------------------------------------------------------

function setStatus(name, text) {
  document.body.dataset.state = name;
  $("status-text").textContent = text;
}

function showMessage(kind, title, detail, action = "Retry") {
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

function hideMessage() {
  $("message").hidden = true;
  delete $("message").dataset.kind;
}

function askForToken(refused) {
  $("token").value = savedToken();
  if (refused) {
    showMessage("token", "Token refused", "The server did not accept this access token. Correct it and press Connect.");
  } else {
    showMessage("token", "Token required", "This server needs an access token (its --token). Enter it and press Connect; this browser remembers it.");
  }
  $("token").focus();
}

function fail(err) {
  teardown();
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

function cameraFailure(err) {
  teardown();
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

// ---- camera -------------------------------------------------------------------------------------------

function cameraConstraints(deviceId) {
  const { width, height } = state.config;
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  return { video, audio: false };
}

async function openCamera(deviceId = localStorage.getItem(CAMERA_KEY)) {
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(cameraConstraints(deviceId));
  } catch (err) {
    if (!deviceId || (err.name !== "OverconstrainedError" && err.name !== "NotFoundError")) throw err;
    localStorage.removeItem(CAMERA_KEY); // the remembered camera is gone: take any
    stream = await navigator.mediaDevices.getUserMedia(cameraConstraints(null));
  }
  const old = state.camera;
  state.camera = stream;
  $("camera").srcObject = stream;
  const track = stream.getVideoTracks()[0];
  track.addEventListener("ended", () => {
    if (state.camera === stream) showMessage("no-camera", "The camera stopped", "It was unplugged or taken by another application. Press Retry.");
  });
  const sender = state.pc && state.pc.getSenders().find((s) => s.track && s.track.kind === "video");
  if (sender) await sender.replaceTrack(track);
  if (old) old.getTracks().forEach((t) => t.stop());
  await listCameras(track.getSettings().deviceId);
}

async function listCameras(current) {
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  const select = $("camera-select");
  select.replaceChildren(...cameras.map((d, i) => new Option(d.label || `Camera ${i + 1}`, d.deviceId, false, d.deviceId === current)));
  $("camera-field").hidden = cameras.length < 2;
}

function cameraLive() {
  return state.camera && state.camera.getVideoTracks().some((t) => t.readyState === "live");
}

// ---- connection ---------------------------------------------------------------------------------------

function teardown() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  state.lastStats = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  $("output").srcObject = null;
  $("output-placeholder").hidden = false;
  $("output-placeholder").textContent = "Waiting for the restyled video…";
}

async function start() {
  const generation = ++state.generation;
  teardown();
  hideMessage();
  setStatus("starting", "Connecting to the server…");
  try {
    state.config = await getConfig();
  } catch (err) {
    fail(err);
    return;
  }
  applyConfig();
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("insecure", "Camera blocked on plain http",
                "Browsers only give the camera to pages on https:// or localhost. Open this page through https " +
                "(start the server with --ssl-certfile and --ssl-keyfile) or as http://localhost:PORT " +
                "(for a remote server: ssh -L 8080:localhost:8080 HOST).");
    return;
  }
  if (!cameraLive()) {
    setStatus("camera", "Opening the camera…");
    try {
      await openCamera();
    } catch (err) {
      cameraFailure(err);
      return;
    }
  }
  if (generation !== state.generation) return;
  setStatus("connecting", "Connecting…");
  try {
    await connect(generation);
  } catch (err) {
    if (generation === state.generation) fail(err);
  }
}

async function connect(generation) {
  // the server's STUN/TURN servers, with TURN credentials minted for this connection (named after the stream)
  const servers = await request(`/ice-servers${state.streamId ? `?stream=${encodeURIComponent(state.streamId)}` : ""}`);
  if (generation !== state.generation) return;
  const pc = new RTCPeerConnection(rtcConfiguration(servers));
  state.pc = pc;
  pc.addTrack(state.camera.getVideoTracks()[0], state.camera);
  // the server announces each frame on this channel; its closing tells at once that the server dropped us
  pc.createDataChannel("sana-stream").addEventListener("close", () => connectionLost(pc, generation, 0));
  pc.addEventListener("track", (event) => {
    $("output").srcObject = event.streams[0] || new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => onConnectionState(pc, generation));
  // browsers complete frames on the RTP marker bit: the server's repeat of slow outputs is for aiortc receivers
  const body = (sdp) => ({ sdp, type: "offer", repeat: false, ...(state.streamId ? { stream: state.streamId } : {}) });
  const answer = await negotiate(pc, (sdp) => request("/offer", { method: "POST", body: body(sdp) }));
  if (generation !== state.generation) return;
  state.streamId = answer.stream;
  sessionStorage.setItem(STREAM_KEY, answer.stream);
  $("stat-stream").textContent = answer.stream;
  showShareLink();
  state.statsTimer = setInterval(() => updateStats(pc), 1000);
  await syncSettings();
}

function onConnectionState(pc, generation) {
  if (generation !== state.generation || pc !== state.pc) return;
  const s = pc.connectionState;
  if (s === "connected") {
    state.autoReconnects = 0;
    hideMessage();
    setStatus("streaming", "Streaming");
  } else if (s === "failed") {
    connectionLost(pc, generation, 500);
  } else if (s === "disconnected" && document.body.dataset.state === "streaming") {
    connectionLost(pc, generation, 3000, true);
  }
}

function connectionLost(pc, generation, delayMs, unlessRecovered = false) {
  setTimeout(() => {
    if (generation !== state.generation || pc !== state.pc) return;
    if (unlessRecovered && pc.connectionState === "connected") return;
    if (state.autoReconnects < AUTO_RECONNECTS) {
      state.autoReconnects += 1;
      setStatus("connecting", `Connection lost; reconnecting (${state.autoReconnects}/${AUTO_RECONNECTS})…`);
      start();
    } else {
      teardown();
      showMessage("connection-lost", "Connection lost", "The stream to the server stopped.", "Reconnect");
    }
  }, delayMs);
}

// After (re)connecting: a new stream starts from the server's defaults, so settings changed on this page are sent
// again; otherwise the controls show what the server uses.
async function syncSettings() {
  if (state.settings) {
    const { prompt, strength, guidance_scale, seed } = state.settings;
    await sendSettings({ prompt, strength, guidance_scale, seed }, false);
  } else {
    const res = await request(`/prompt?stream=${encodeURIComponent(state.streamId)}`);
    showSettings(res.streams[state.streamId]);
  }
}

async function updateStats(pc) {
  if (pc !== state.pc) return;
  const stats = await videoStats(pc, state.lastStats);
  state.lastStats = stats;
  const f = formatStats(stats);
  $("stat-fps").textContent = f.fps;
  $("stat-rtt").textContent = f.rtt;
  $("stat-dropped").textContent = f.dropped;
  $("stat-size").textContent = f.size;
  $("stat-route").textContent = f.route;
}

// ---- settings -----------------------------------------------------------------------------------------

function applyConfig() {
  const { width, height, demo_model: demo, defaults } = state.config;
  document.documentElement.style.setProperty("--aspect", `${width} / ${height}`);
  $("demo-badge").hidden = !demo;
  if (!state.settings) showSettings(defaults);
}

function showSettings(s) {
  if (document.activeElement !== $("prompt")) $("prompt").value = s.prompt;
  $("strength").value = s.strength;
  $("strength-value").textContent = Number(s.strength).toFixed(2);
  $("guidance").value = s.guidance_scale;
  $("guidance-value").textContent = Number(s.guidance_scale).toFixed(1);
  $("seed").value = s.seed;
}

function hint(text, kind = "") {
  const el = $("prompt-hint");
  el.textContent = text;
  el.dataset.kind = kind;
}

async function sendSettings(changes, announce = true) {
  if (!state.streamId || !state.pc) {
    hint("Not connected: press Reconnect first", "error");
    return;
  }
  try {
    const res = await request("/prompt", { method: "POST", body: { ...changes, stream: state.streamId } });
    state.settings = res.streams[state.streamId];
    showSettings(state.settings);
    if (announce && changes.prompt !== undefined) hint(`Applied: “${state.settings.prompt}”`, "ok");
  } catch (err) {
    if (err instanceof ApiFailure && err.kind === "unauthorized") fail(err);
    else hint(`Not applied: ${err.detail || err.message}`, "error");
  }
}

function throttled(fn, ms) {
  let timer = null;
  let last = null;
  return (value) => {
    last = value;
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      fn(last);
    }, ms);
  };
}

function wireControls() {
  $("controls").addEventListener("submit", (e) => e.preventDefault());
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key !== "Enter" || e.isComposing) return;
    e.preventDefault();
    hint("Applying…");
    sendSettings({ prompt: $("prompt").value });
  });
  const sendStrength = throttled((v) => sendSettings({ strength: v }), 150);
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
    sendStrength(Number($("strength").value));
  });
  const sendGuidance = throttled((v) => sendSettings({ guidance_scale: v }), 150);
  $("guidance").addEventListener("input", () => {
    $("guidance-value").textContent = Number($("guidance").value).toFixed(1);
    sendGuidance(Number($("guidance").value));
  });
  $("seed").addEventListener("change", () => {
    const seed = Math.max(0, Math.floor(Number($("seed").value) || 0));
    sendSettings({ seed });
  });
  $("seed-random").addEventListener("click", () => {
    $("seed").value = Math.floor(Math.random() * 2 ** 31);
    sendSettings({ seed: Number($("seed").value) });
  });
  $("camera-select").addEventListener("change", async () => {
    const id = $("camera-select").value;
    localStorage.setItem(CAMERA_KEY, id);
    try {
      await openCamera(id);
    } catch (err) {
      cameraFailure(err);
    }
  });
  if (navigator.mediaDevices) {
    navigator.mediaDevices.addEventListener("devicechange", () => {
      if (cameraLive()) listCameras(state.camera.getVideoTracks()[0].getSettings().deviceId);
    });
  }
  const connectWithToken = () => {
    saveToken($("token").value.trim());
    state.autoReconnects = 0;
    start();
  };
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    connectWithToken();
  });
  $("message-action").addEventListener("click", () => start());
  $("reconnect").addEventListener("click", () => {
    state.autoReconnects = 0;
    start();
  });
  $("output").addEventListener("playing", () => { $("output-placeholder").hidden = true; });
  $("copy-view").addEventListener("click", copyViewLink);
}

// ---- the /view link -----------------------------------------------------------------------------------

function viewUrl(withToken) {
  const url = `${location.origin}/view?stream=${encodeURIComponent(state.streamId)}`;
  const token = savedToken();
  return withToken && token ? `${url}#token=${encodeURIComponent(token)}` : url;
}

function showShareLink() {
  const url = viewUrl(false);
  $("view-url").textContent = url.slice(location.origin.length);
  $("view-url").title = url;
  $("share").hidden = false;
}

async function copyViewLink() {
  const withToken = Boolean(state.config && state.config.token_required);
  try {
    await navigator.clipboard.writeText(viewUrl(withToken));
    $("copy-view").textContent = withToken ? "Copied (with token)" : "Copied";
  } catch {
    $("copy-view").textContent = "Select and copy";
  }
  setTimeout(() => { $("copy-view").textContent = "Copy"; }, 2000);
}

wireControls();
start();
