// The timers of wake-clock.js. A dedicated worker's timers are not throttled with a background tab's (Chromium
// wakes a hidden page's chained timers once a second, after a while hidden once a minute), so a hidden webcam page
// still retries on time.
const timers = new Map();

onmessage = ({ data }) => {
  if (data.cancel !== undefined) {
    clearTimeout(timers.get(data.cancel));
    timers.delete(data.cancel);
    return;
  }
  timers.set(data.id, setTimeout(() => {
    timers.delete(data.id);
    postMessage(data.id);
  }, data.ms));
};
