// setTimeout that keeps time in a background tab: the waiting happens in a worker (wake-clock-worker.js) whose
// message wakes the page. Where no worker runs (it failed to load), plain setTimeout, said once in the console.
let worker = null;
let nextId = 0;
const pending = new Map(); // id -> { callback, due (performance.now() ms) }

function fire(id) {
  const timer = pending.get(id);
  pending.delete(id);
  if (timer) timer.callback();
}

function withoutWorker(err) {
  console.warn("sana-stream: the retry clock's worker did not start; a background tab may retry late " +
               "(the browser throttles its timers)", err);
  worker = null;
  pending.forEach((timer, id) => setTimeout(() => fire(id), Math.max(0, timer.due - performance.now())));
}

try {
  worker = new Worker("/js/wake-clock-worker.js");
  worker.addEventListener("message", (event) => fire(event.data));
  worker.addEventListener("error", withoutWorker);
} catch (err) {
  withoutWorker(err);
}

// calls `callback` after `ms` milliseconds; returns an id for `cancel`
export function after(ms, callback) {
  const id = ++nextId;
  pending.set(id, { callback, due: performance.now() + ms });
  if (worker) worker.postMessage({ id, ms });
  else setTimeout(() => fire(id), ms);
  return id;
}

export function cancel(id) {
  if (!pending.delete(id)) return;
  if (worker) worker.postMessage({ cancel: id });
}
