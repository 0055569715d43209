// The workspace's billing summary (`GET .../billing`): reading it again after a change, and
// handing it to the panels that show it (balances, buy credits, auto-recharge). The panels are
// set by app.js, so that the panels, which read the summary again after they change something,
// and this module do not import each other.

import { api, wsPath } from "./api.js";
import { renderBanner } from "./banner.js";
import { $ } from "./dom.js";
import { state } from "./state.js";

/** What else shows the summary, in order (set once by app.js: see `setSummaryPanels`). */
let panels = [];

/** Sets the panels that show each summary read (each a function of the summary). */
export function setSummaryPanels(...renderers) {
  panels = renderers;
}

/** Shows an owner's or admin's summary: kept in `state.summary`, then drawn by every panel. */
export function renderSummary(s) {
  state.summary = s;
  for (const render of panels) render(s);
}

/** Reads the summary again and shows it (after a change, or to follow a payment). */
export async function refreshSummary() {
  const summary = await api("GET", wsPath("/billing"));
  renderBanner(summary);
  if ("currency" in summary) {
    renderSummary(summary);
    stampUpdated();
  }
  return summary;
}

/** Says when the figures on screen were read ("Updated 14:02"), in the user's own time. */
export function stampUpdated() {
  const now = new Date();
  const status = $("page-status");
  status.textContent = `Updated ${now.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" })}`;
  status.dataset.updatedAt = now.toISOString();
}
