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

export async function sendSettings(changes, announce = true) {
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
    if (err instanceof ApiFailure && err.kind === "unauthorized") onUnauthorized(err);
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

// After (re)connecting: a new stream starts from the server's defaults, so settings changed on this page are sent
// again; otherwise the controls show what the server uses.
export async function syncSettings() {
  if (state.settings) {
    const { prompt, strength, guidance_scale, seed } = state.settings;
    await sendSettings({ prompt, strength, guidance_scale, seed }, false);
  } else {
    const res = await request(`/prompt?stream=${encodeURIComponent(state.streamId)}`);
    showSettings(res.streams[state.streamId]);
  }
}
