// The output-only page for OBS Browser Source: /view?stream=ID, full window, no controls, reconnects by itself.
// It plays over WHEP (POST /whep), the one viewer path every WHEP player uses too.
// A server started with --token needs it too: /view?stream=ID#token=TOKEN (the fragment never reaches logs),
// or the token remembered by the webcam page in the same browser. ?relay=1 forces media through the server's TURN server.
import { ApiFailure, request, savedToken } from "./api.js";
import { IceFailure, negotiate, rtcConfiguration } from "./rtc.js";

const video = document.getElementById("output");
const statusBox = document.getElementById("view-status");
const params = new URLSearchParams(location.search);
const streamId = params.get("stream");
const token = new URLSearchParams(location.hash.slice(1)).get("token") || savedToken();
const RETRY_MS = 2000;
const STALL_MS = 5000; // no new frame for this long while playing: start over

// frames: video frames shown so far (a WebRTC video's currentTime runs on even when no frame arrives)
// live: the video shows the current connection's track (not the last frames of one that ended)
const state = { pc: null, session: null, generation: 0, timer: null, frames: 0, lastFrameAt: 0, live: false };
window.sanaView = state; // for tests

function show(name, text) {
  document.body.dataset.state = name;
  statusBox.textContent = text;
  statusBox.hidden = name === "playing";
}

function retry(text, name = "waiting") {
  state.live = false;
  show(name, text);
  clearTimeout(state.timer);
  state.timer = setTimeout(connect, RETRY_MS);
}

async function connect() {
  const generation = ++state.generation;
  clearTimeout(state.timer);
  state.live = false;
  if (state.pc) state.pc.close();
  state.pc = null;
  endSession();
  let pc = null;
  try {
    const servers = await request(`/ice-servers?stream=${encodeURIComponent(streamId)}`, { token });
    if (generation !== state.generation) return;
    pc = new RTCPeerConnection(rtcConfiguration(servers));
    state.pc = pc;
    wire(pc, generation);
    // WHEP, as any WHEP player plays a stream (docs/api.md); DELETE on its Location when the page goes
    const path = `/whep?stream=${encodeURIComponent(streamId)}&repeat=false`;
    const answer = await negotiate(pc, (sdp) => request(path, { method: "POST", token, sdp }));
    state.session = answer.location;
    show("connecting", "Connecting…");
  } catch (err) {
    if (generation !== state.generation) return;
    state.generation += 1; // what this closing fires is not news
    if (pc) pc.close();
    if (err instanceof IceFailure) retry(`${err.title}: ${err.detail} Retrying…`, "relay");
    else if (!(err instanceof ApiFailure)) retry(`Error: ${err.message}; retrying…`);
    else if (err.kind === "unknown_stream") retry(`Waiting for stream ${streamId}…`);
    else if (err.kind === "unauthorized") retry(`This server needs its token: add #token=TOKEN to this page's address.`, "token");
    else if (err.kind === "full") retry("The server has all the viewers it allows; retrying…", "full");
    else if (err.kind === "unreachable") retry("Server unreachable; retrying…");
    else retry(`${err.detail}; retrying…`);
  }
}

// ends the WHEP session on the server at once (closing the connection alone ends it only after ICE notices)
function endSession() {
  if (!state.session) return;
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  fetch(state.session, { method: "DELETE", headers, keepalive: true }).catch(() => {});
  state.session = null;
}

function wire(pc, generation) {
  pc.addTransceiver("video", { direction: "recvonly" });
  // the server closes a viewer when its stream ends; the channel closing says so at once (ICE would take ~10 s)
  const channel = pc.createDataChannel("sana-view");
  channel.addEventListener("close", () => {
    if (generation === state.generation) retry(`Stream ${streamId} ended; waiting for it…`);
  });
  pc.addEventListener("track", (event) => {
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
    state.live = true;
  });
  pc.addEventListener("connectionstatechange", () => {
    if (generation !== state.generation) return;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") retry("Connection lost; reconnecting…");
  });
}

function onFrame() {
  state.frames += 1;
  state.lastFrameAt = performance.now();
  if (state.live && document.body.dataset.state !== "playing") show("playing", "");
  video.requestVideoFrameCallback(onFrame);
}

// a connection that stops delivering frames is replaced
function watch() {
  if (document.body.dataset.state === "playing" && performance.now() - state.lastFrameAt > STALL_MS) {
    show("connecting", "The stream paused; reconnecting…");
    connect();
  }
}

if (!streamId) {
  show("no-stream", "Add ?stream=ID to the address: the stream id is shown on the webcam page (or use /whip?stream=NAME in OBS).");
} else {
  video.requestVideoFrameCallback(onFrame);
  connect();
  setInterval(watch, 1000);
  window.addEventListener("pagehide", endSession);
}
