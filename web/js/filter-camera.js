// The webcam filter page's camera: open it (the remembered one if it is still there), list the others.
import { $, CAMERA_KEY, state } from "./filter-state.js";
import { showMessage } from "./filter-messages.js";

function cameraConstraints(deviceId) {
  const { width, height } = state.config;
  const video = { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: 30 } };
  if (deviceId) video.deviceId = { exact: deviceId };
  return { video, audio: false };
}

export async function openCamera(deviceId = localStorage.getItem(CAMERA_KEY)) {
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

export async function listCameras(current) {
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  const select = $("camera-select");
  select.replaceChildren(...cameras.map((d, i) => new Option(d.label || `Camera ${i + 1}`, d.deviceId, false, d.deviceId === current)));
  $("camera-field").hidden = cameras.length < 2;
}

export function cameraLive() {
  return state.camera && state.camera.getVideoTracks().some((t) => t.readyState === "live");
}
