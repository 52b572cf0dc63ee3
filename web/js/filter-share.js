// The link to this stream's output-only page (/view), for an OBS Browser Source. On a server with a token the
// copied link carries the view token (GET /view-token): it plays the stream and does nothing else.
import { request } from "./api.js";
import { $, state } from "./filter-state.js";

function viewUrl() {
  return `${location.origin}/view?stream=${encodeURIComponent(state.streamId)}`;
}

export function showShareLink() {
  const url = viewUrl();
  $("view-url").textContent = url.slice(location.origin.length);
  $("view-url").title = url;
  $("share").hidden = false;
}

async function sharedUrl(withToken) {
  if (!withToken) return viewUrl();
  const { view_token: token } = await request("/view-token");
  return `${viewUrl()}#token=${encodeURIComponent(token)}`;
}

export async function copyViewLink() {
  const withToken = Boolean(state.config && state.config.token_required);
  try {
    await navigator.clipboard.writeText(await sharedUrl(withToken));
    $("copy-view").textContent = withToken ? "Copied (with view token)" : "Copied";
  } catch {
    $("copy-view").textContent = "Select and copy";
  }
  setTimeout(() => { $("copy-view").textContent = "Copy"; }, 2000);
}
