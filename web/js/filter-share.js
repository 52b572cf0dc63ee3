// The link to this stream's output-only page (/view), for an OBS Browser Source.
import { savedToken } from "./api.js";
import { $, state } from "./filter-state.js";

function viewUrl(withToken) {
  const url = `${location.origin}/view?stream=${encodeURIComponent(state.streamId)}`;
  const token = savedToken();
  return withToken && token ? `${url}#token=${encodeURIComponent(token)}` : url;
}

export function showShareLink() {
  const url = viewUrl(false);
  $("view-url").textContent = url.slice(location.origin.length);
  $("view-url").title = url;
  $("share").hidden = false;
}

export async function copyViewLink() {
  const withToken = Boolean(state.config && state.config.token_required);
  try {
    await navigator.clipboard.writeText(viewUrl(withToken));
    $("copy-view").textContent = withToken ? "Copied (with token)" : "Copied";
  } catch {
    $("copy-view").textContent = "Select and copy";
  }
  setTimeout(() => { $("copy-view").textContent = "Copy"; }, 2000);
}
