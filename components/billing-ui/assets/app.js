// The billing page (docs/billing-page.md), its entry point. No framework and no build step: ES
// modules served as they are written. The page talks to the public HTTP contract with the user's
// token, which the embedding product hands over by postMessage (or the sign-in form when the page
// is opened on its own). This module takes the token, loads the page, and wires every panel.

import { renderAutoRecharge, wireAutoRecharge } from "./auto-recharge.js";
import { renderBalances, wireBalances } from "./balances.js";
import { renderBanner } from "./banner.js";
import { api, claimsOf, wsPath } from "./api.js";
import { loadAgents } from "./agents.js";
import { renderBuy, wireBuy } from "./buy.js";
import { loadDocuments, wireDocuments } from "./documents.js";
import { $, show } from "./dom.js";
import { originAllowed, watchHeight } from "./parent.js";
import { loadPlans, wirePlans } from "./plans.js";
import { EMBEDDED, root, state } from "./state.js";
import { renderSummary, setSummaryPanels, stampUpdated } from "./summary.js";
import { loadTransactions, wireTransactions } from "./transactions.js";
import { loadUsage, wireUsage } from "./usage.js";

/** Takes a user token (from the parent window or the sign-in form) and loads its workspace. */
function useToken(token) {
  const claims = claimsOf(token);
  if (!claims || typeof claims.workspace_id !== "string") {
    $("page-status").textContent = "The sign-in token could not be read.";
    return;
  }
  state.token = token;
  state.workspace = claims.workspace_id;
  // A fresh token for the page already shown changes nothing on screen; a first token, another
  // workspace, or a token after a load that failed (e.g. it had expired) loads the page.
  if (claims.workspace_id !== state.loadedWorkspace) loadAll();
}

/** Loads the whole page: the summary first (a member sees only the banner), then every panel. */
async function loadAll() {
  $("page-status").textContent = "Loading…";
  let summary;
  try {
    summary = await api("GET", wsPath("/billing"));
  } catch (error) {
    if (error.status !== 401) $("page-status").textContent = error.message;
    return;
  }
  state.loadedWorkspace = state.workspace;
  renderBanner(summary);
  const manager = "currency" in summary;
  show($("member-note"), !manager);
  show($("owner-view"), manager);
  show($("signin"), false);
  if (!manager) {
    $("page-status").textContent = "";
    return;
  }
  renderSummary(summary);
  $("page-status").textContent = "";
  await Promise.all([loadPlans(), loadAgents(), loadUsage(), loadTransactions(), loadDocuments()]);
  stampUpdated();
}

// ---- start -----------------------------------------------------------------------------------

// Listeners and observers are set up in the order the page has always made them (listeners of
// one element, and observers, run in the order they were made).
window.addEventListener("message", (event) => {
  if (!EMBEDDED || event.source !== window.parent || !originAllowed(event.origin)) return;
  const data = event.data;
  if (!data || typeof data !== "object") return;
  if (data.type === "voice-billing:token" && typeof data.token === "string") {
    state.parentOrigin = event.origin;
    useToken(data.token);
  } else if (data.type === "voice-billing:theme" && ["light", "dark", "auto"].includes(data.theme)) {
    if (data.theme === "auto") delete root.dataset.theme;
    else root.dataset.theme = data.theme;
  }
});

watchHeight();
wireBalances();
wireBuy();
wireAutoRecharge();
wirePlans();
wireUsage();
wireTransactions();
wireDocuments();

// Each summary read is shown by these panels, in this order.
setSummaryPanels(renderBalances, renderBuy, renderAutoRecharge);

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("signin-token").value.trim();
  $("signin-token").value = "";
  if (token) useToken(token);
});

if (EMBEDDED) {
  // Nothing secret: the embedding product answers with the token, to this origin only.
  window.parent.postMessage({ type: "voice-billing:ready" }, "*");
} else {
  show($("signin"), true);
  $("page-status").textContent = "";
}
