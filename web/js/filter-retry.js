// The webcam page's reconnecting: after a lost connection or an unreachable server it tries again for as long as
// the page is open, waiting 0.5 s, 1 s, 2 s, 4 s, then 8 s between attempts, each wait shortened by up to a quarter
// at random so that a restarted server is not hit by every page at once. The message bar says why, counts down to
// the next attempt and offers "Retry now". Waits run on wake-clock.js, which a background tab does not slow down.
import { after, cancel } from "./wake-clock.js";
import { hideMessage, setStatus, showMessage } from "./filter-messages.js";
import { $, state } from "./filter-state.js";

const FIRST_WAIT_MS = 500;
const MAX_WAIT_MS = 8000; // tests/test_browser_reconnect.py bounds its waits by this
const JITTER = 0.25;
const STABLE_MS = 10000; // a connection that lasted this long starts the waits over at FIRST_WAIT_MS

// the wait before attempt number `attempt` (0 first)
function backoffMs(attempt) {
  return Math.min(MAX_WAIT_MS, FIRST_WAIT_MS * 2 ** attempt) * (1 - JITTER * Math.random());
}

let run = () => {};

// `start` is the page's connect; the retries and "Retry now" call it
export function onRetry(start) {
  run = start;
}

// Schedules the next attempt (not before `atLeastMs`, a server's Retry-After) and shows why and when.
export function retryLater(kind, title, detail, atLeastMs = 0) {
  const retry = state.retry;
  stopCountdown();
  if (retry.connectedAt && performance.now() - retry.connectedAt >= STABLE_MS) retry.attempt = 0;
  retry.connectedAt = 0;
  const wait = Math.max(backoffMs(retry.attempt), atLeastMs);
  retry.attempt += 1;
  retry.due = performance.now() + wait;
  retry.timer = after(wait, attemptNow);
  showMessage(kind, title, detail, "Retry now");
  $("output-placeholder").textContent = "Reconnecting…";
  tick();
}

function tick() {
  const retry = state.retry;
  if (retry.due === null) return;
  const seconds = Math.max(0, Math.ceil((retry.due - performance.now()) / 1000));
  const text = `Reconnecting in ${seconds} s (attempt ${retry.attempt})`;
  $("message-countdown").textContent = `${text}.`;
  $("message-countdown").hidden = false;
  setStatus("reconnecting", `${text}…`);
  retry.tick = after(Math.min(1000, Math.max(50, retry.due - performance.now())), tick);
}

function stopCountdown() {
  const retry = state.retry;
  cancel(retry.timer);
  cancel(retry.tick);
  retry.timer = retry.tick = null;
  retry.due = null;
}

function attemptNow() {
  stopCountdown();
  const text = `Reconnecting now (attempt ${state.retry.attempt})…`;
  $("message-countdown").textContent = text;
  setStatus("reconnecting", text);
  run({ retrying: true });
}

// "Retry now" while waiting: skip the rest of the wait
export function retryNow() {
  if (state.retry.due === null) return false;
  attemptNow();
  return true;
}

// a person asked to (re)connect: no retry is pending and the waits start over
export function resetRetries() {
  stopCountdown();
  state.retry.attempt = 0;
  $("message-countdown").hidden = true;
}

// the connection is up: the message goes; a loss within STABLE_MS goes on with longer waits (a server that
// drops every connection at once is not hammered), a later one starts them over
export function connected() {
  stopCountdown();
  state.retry.connectedAt = performance.now();
  hideMessage();
}
