// The webcam filter page's shared state and its one DOM helper.

export const $ = (id) => document.getElementById(id);
export const STREAM_KEY = "sana-stream.stream"; // per tab: a reload or reconnect keeps the stream id (and /view links)
export const CAMERA_KEY = "sana-stream.camera";

export const state = {
  config: null,
  camera: null, // MediaStream
  pc: null,
  streamId: sessionStorage.getItem(STREAM_KEY),
  settings: null, // the stream's settings as the server last confirmed them
  generation: 0, // bumped by every (re)connect; stale callbacks compare against it
  // reconnecting (filter-retry.js): attempts since the last good connection, when the next is due
  // (performance.now() ms, null when none is pending), its clock ids, when the connection came up
  retry: { attempt: 0, due: null, timer: null, tick: null, connectedAt: 0 },
  connectTimer: null,
  statsTimer: null,
  lastStats: null,
};
window.sanaStream = state; // for tests and the curious
