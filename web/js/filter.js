// The webcam filter page: camera in, restyled video out, live prompt and settings. This module connects and
// reconnects; the others hold the page's state, messages, camera, settings and /view link.
import { getConfig, request, saveToken } from "./api.js";
import { formatStats, negotiate, rtcConfiguration, videoStats } from "./rtc.js";
import { cameraLive, listCameras, openCamera } from "./filter-camera.js";
import {
  describeFailure, explainCameraFailure, explainFailure, hideMessage, setStatus, showMessage,
} from "./filter-messages.js";
import { connected, onRetry, resetRetries, retryLater, retryNow } from "./filter-retry.js";
import { applyConfig, hint, onSettingsUnauthorized, sendSettings, syncSettings, throttled } from "./filter-settings.js";
import { copyViewLink, showShareLink } from "./filter-share.js";
import { $, CAMERA_KEY, STREAM_KEY, state } from "./filter-state.js";
import { after, cancel } from "./wake-clock.js";

const CONNECT_TIMEOUT_MS = 20000; // an answered offer whose connection is not up by then is given up and retried

// a failure: retried later when waiting can fix it, else explained and left to a person
function fail(err) {
  teardown();
  const failure = describeFailure(err);
  if (failure.retry) retryLater(failure.kind, failure.title, failure.detail, failure.waitMs);
  else explainFailure(failure);
}

function cameraFailure(err) {
  teardown();
  resetRetries();
  explainCameraFailure(err);
}

// ---- connection ---------------------------------------------------------------------------------------

// closes the connection; the camera stays open and the stream id stays, for the next connection
function teardown() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  state.lastStats = null;
  cancel(state.connectTimer);
  state.connectTimer = null;
  if (state.pc) state.pc.close();
  state.pc = null;
  $("output").srcObject = null;
  $("output-placeholder").hidden = false;
  $("output-placeholder").textContent = "Waiting for the restyled video…";
}

// Connects (or reconnects): a person's click or the first start begin with no message and fresh waits; a retry
// keeps its message and its count.
async function start({ retrying = false } = {}) {
  const generation = ++state.generation;
  teardown();
  if (!retrying) {
    resetRetries();
    hideMessage();
    setStatus("starting", "Connecting to the server…");
  }
  try {
    state.config = await getConfig();
  } catch (err) {
    if (generation === state.generation) fail(err);
    return;
  }
  if (generation !== state.generation) return;
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
      if (generation === state.generation) cameraFailure(err);
      return;
    }
  }
  if (generation !== state.generation) return;
  if (!retrying) setStatus("connecting", "Connecting…");
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
  // the server announces each frame on this channel; its closing (the server's goodbye when it stops, or it
  // dropped us) tells at once that the connection is gone
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
  state.connectTimer = after(CONNECT_TIMEOUT_MS, () => {
    if (pc.connectionState !== "connected") connectionLost(pc, generation, 0);
  });
  await syncSettings();  // a restarted server knows nothing of this stream: its settings go again first
}

function onConnectionState(pc, generation) {
  if (generation !== state.generation || pc !== state.pc) return;
  const s = pc.connectionState;
  if (s === "connected") {
    cancel(state.connectTimer);
    connected();
    setStatus("streaming", "Streaming");
  } else if (s === "failed") {
    connectionLost(pc, generation, 500);
  } else if (s === "disconnected" && document.body.dataset.state === "streaming") {
    connectionLost(pc, generation, 3000, true);
  }
}

// the connection went (or, with `unlessRecovered`, may come back within `delayMs`): reconnect with backoff
function connectionLost(pc, generation, delayMs, unlessRecovered = false) {
  after(delayMs, () => {
    if (generation !== state.generation || pc !== state.pc) return;
    if (unlessRecovered && pc.connectionState === "connected") return;
    teardown();
    retryLater("connection-lost", "Connection lost", "The stream to the server stopped.");
  });
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
    start();
  };
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    connectWithToken();
  });
  $("message-action").addEventListener("click", () => retryNow() || start());
  $("reconnect").addEventListener("click", () => start());
  window.addEventListener("online", () => retryNow()); // the network is back: no need to wait out the countdown
  $("output").addEventListener("playing", () => { $("output-placeholder").hidden = true; });
  $("copy-view").addEventListener("click", copyViewLink);
}

onSettingsUnauthorized(fail);
onRetry(start);
wireControls();
start();
