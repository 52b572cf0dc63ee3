// The webcam filter page's settings: the controls show what the server uses, and changes go to POST /prompt.
import { ApiFailure, request } from "./api.js";
import { $, state } from "./filter-state.js";

let onUnauthorized = () => {};

// what to do when the server refuses a change for want of a token (the page tears down and asks for it)
export function onSettingsUnauthorized(handler) {
  onUnauthorized = handler;
}

export function applyConfig() {
  const { width, height, demo_model: demo, demo_label: label, defaults } = state.config;
  document.documentElement.style.setProperty("--aspect", `${width} / ${height}`);
  $("demo-badge").hidden = !demo;
  if (label) $("demo-badge").textContent = $("demo-badge").title = label;
  if (!state.settings) showSettings(defaults);
}

export function showSettings(s) {
  if (document.activeElement !== $("prompt")) $("prompt").value = s.prompt;
  $("strength").value = s.strength;
  $("strength-value").textContent = Number(s.strength).toFixed(2);
  $("guidance").value = s.guidance_scale;
  $("guidance-value").textContent = Number(s.guidance_scale).toFixed(1);
  $("seed").value = s.seed;
}

export function hint(text, kind = "") {
  const el = $("prompt-hint");
  el.textContent = text;
  el.dataset.kind = kind;
}

// a change made while not connected is kept for the next connection, which sends it first
function keepForReconnect(changes) {
  state.settings = { ...(state.settings || (state.config && state.config.defaults) || {}), ...changes };
  hint("Not connected: applied on reconnecting", "pending");
}

export async function sendSettings(changes) {
  if (!state.streamId || !state.pc) {
    keepForReconnect(changes);
    return;
  }
  try {
    const res = await request("/prompt", { method: "POST", body: { ...changes, stream: state.streamId } });
    state.settings = res.streams[state.streamId];
    showSettings(state.settings);
    if (changes.prompt !== undefined) hint(`Applied: “${state.settings.prompt}”`, "ok");
  } catch (err) {
    if (err instanceof ApiFailure && err.kind === "unauthorized") onUnauthorized(err);
    else if (err instanceof ApiFailure && err.kind === "unreachable") keepForReconnect(changes);
    else hint(`Not applied: ${err.detail || err.message}`, "error");
  }
}

export function throttled(fn, ms) {
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

// After (re)connecting: a new stream (a restarted server's included) starts from the server's defaults, so settings
// changed on this page are sent again; otherwise the controls show what the server uses. A failure here fails the
// connection attempt (and is retried) rather than leaving the stream on other settings.
export async function syncSettings() {
  const stream = state.streamId;
  let res;
  if (state.settings) {
    const { prompt, strength, guidance_scale, seed } = state.settings;
    res = await request("/prompt", { method: "POST", body: { prompt, strength, guidance_scale, seed, stream } });
    state.settings = res.streams[stream];
  } else {
    res = await request(`/prompt?stream=${encodeURIComponent(stream)}`);
  }
  showSettings(res.streams[stream]);
}
