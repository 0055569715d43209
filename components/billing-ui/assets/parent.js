// The page's side of the embedding (embed.js is the product's side): which origins may talk to
// it, messages to the parent window, and what happens when the token has expired.

import { $, show } from "./dom.js";
import { EMBED_ORIGINS, EMBEDDED, state } from "./state.js";

/** Whether `origin` may frame the page and talk to it: this origin or one of `billing_embed_origins`. */
export function originAllowed(origin) {
  if (origin === window.location.origin) return true;
  return EMBED_ORIGINS.some((allowed) => {
    if (allowed === origin) return true;
    const star = allowed.indexOf("://*.");
    if (star < 0) return false;
    const scheme = allowed.slice(0, star + 3);
    const suffix = allowed.slice(star + 4);
    return origin.startsWith(scheme) && origin.endsWith(suffix) && origin.length > scheme.length + suffix.length;
  });
}

/** Posts `message` to the parent window, to the origin that gave the token only. */
export function tell(message) {
  if (EMBEDDED && state.parentOrigin) window.parent.postMessage(message, state.parentOrigin);
}

/** The API answered 401: says so, and asks the embedding product for a fresh token. */
export function tokenExpired() {
  state.loadedWorkspace = null;
  if (EMBEDDED) {
    $("page-status").textContent = "Your session has expired. Signing you in again…";
    tell({ type: "voice-billing:token-expired" });
  } else {
    $("page-status").textContent = "Your session has expired. Paste a new token to go on.";
    show($("signin"), true);
  }
}

/** Tells the embedding product the page's height, to size its frame. */
export function watchHeight() {
  new ResizeObserver(() => tell({ type: "voice-billing:height", height: Math.ceil(document.body.getBoundingClientRect().height) })).observe(document.body);
}
