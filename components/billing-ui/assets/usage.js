// Usage: a month's credits per day as an SVG bar chart (spikes marked), the same numbers as
// tables, totals by kind and by agent, and the months before.

import { api, wsPath } from "./api.js";
import { $, h, setError } from "./dom.js";
import { credits, fixedPlain, kindName, setAmount, toMicros } from "./format.js";
import { state } from "./state.js";

function monthOf(d) {
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

function shiftMonth(month, by) {
  const [y, m] = month.split("-").map(Number);
  return monthOf(new Date(Date.UTC(y, m - 1 + by, 1)));
}

/** Loads a month's usage; without `month`, the workspace's current month (its own clock). */
export async function loadUsage(month = state.usageMonth) {
  setError($("usage-error"), "");
  let summary;
  try {
    summary = await api("GET", wsPath(month ? `/usage/summary?month=${month}` : "/usage/summary"));
  } catch (error) {
    setError($("usage-error"), error.message);
    return;
  }
  month = summary.month;
  state.usageMonth = month;
  state.currentMonth = state.currentMonth || month;
  const [y, m] = month.split("-").map(Number);
  $("usage-month").textContent = new Date(Date.UTC(y, m - 1, 1)).toLocaleString(undefined, { month: "long", year: "numeric", timeZone: "UTC" });
  $("usage-next").disabled = month >= state.currentMonth;
  setAmount($("usage-total"), summary.total);
  const rows = (list, label) =>
    list.map((r) => h("tr", {}, h("th", { scope: "row" }, label(r.key)), h("td", { class: "num" }, String(r.count)), h("td", { class: "num", "data-value": r.amount }, credits(r.amount))));
  $("usage-by-kind").querySelector("tbody").replaceChildren(...rows(summary.by_kind, kindName));
  $("usage-by-agent").querySelector("tbody").replaceChildren(...rows(summary.by_agent, (k) => k));
  $("usage-by-day")
    .querySelector("tbody")
    .replaceChildren(
      ...summary.by_day.map((d) =>
        h("tr", {}, h("th", { scope: "row" }, d.date), h("td", { class: "num" }, String(d.count)), h("td", { class: "num" }, credits(d.amount)), h("td", {}, d.spike ? "Spike" : "")),
      ),
    );
  renderChart(month, summary);
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Credits per day as bars; spikes are marked with a triangle and named in each bar's title.
 *  Drawn at the width it has on screen, one unit a CSS pixel, so that its labels keep their
 *  size at a phone's width (scaled down from a fixed width they would shrink to 7 px). */
function renderChart(month, summary) {
  const measured = Math.floor($("usage-chart").clientWidth);
  state.chart = { month, summary, width: measured };
  const [y, m] = month.split("-").map(Number);
  const days = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const byDate = new Map(summary.by_day.map((d) => [d.date, d]));
  const values = [];
  for (let day = 1; day <= days; day++) {
    const key = `${month}-${String(day).padStart(2, "0")}`;
    const d = byDate.get(key);
    values.push({ key, day, micros: d ? toMicros(d.amount) : 0n, amount: d ? d.amount : "0", spike: Boolean(d?.spike), count: d ? d.count : 0 });
  }
  const max = values.reduce((a, v) => (v.micros > a ? v.micros : a), 0n);
  if (max === 0n) {
    $("usage-chart").replaceChildren(h("p", { class: "muted" }, "No usage this month."));
    return;
  }
  const maxText = credits(fixedPlain(max));
  const width = Math.max(240, measured || 620);
  const height = 180, bottom = 22, top = 16, left = 12 + 8 * maxText.length;
  const plot = height - bottom - top;
  const step = (width - left) / days;
  const spikes = values.filter((v) => v.spike).length;
  const label = `Credits used per day in ${month}: ${summary.total} in total${max > 0n ? `, at most ${credits(fixedPlain(max))} in a day` : ""}${spikes ? `, ${spikes} unusual spike${spikes > 1 ? "s" : ""}` : ""}.`;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "bars" });
  svg.append(s("line", { x1: left, x2: width, y1: top + plot, y2: top + plot, class: "axis" }));
  svg.append(s("text", { x: left - 6, y: top + 4, class: "tick", "text-anchor": "end" }, maxText));
  svg.append(s("text", { x: left - 6, y: top + plot, class: "tick", "text-anchor": "end" }, "0"));
  for (const v of values) {
    const barHeight = max > 0n ? Number((v.micros * BigInt(plot * 100)) / max) / 100 : 0;
    const x = left + (v.day - 1) * step + step * 0.15;
    const bar = s("rect", { x, y: top + plot - barHeight, width: step * 0.7, height: Math.max(barHeight, v.micros > 0n ? 1 : 0), class: v.spike ? "bar spike" : "bar", "data-date": v.key, "data-value": v.amount });
    bar.append(s("title", {}, `${v.key}: ${credits(v.amount)} credits, ${v.count} events${v.spike ? " (unusual spike)" : ""}`));
    svg.append(bar);
    if (v.spike) svg.append(s("text", { x: x + step * 0.35, y: top + plot - barHeight - 3, class: "spike-mark", "text-anchor": "middle" }, "▲"));
    if (v.day === 1 || (v.day % 5 === 0 && (step >= 9 || v.day % 10 === 0))) svg.append(s("text", { x: x + step * 0.35, y: height - 6, class: "tick", "text-anchor": "middle" }, v.day));
  }
  $("usage-chart").replaceChildren(svg);
}

/** Wires the months' buttons, and redraws the chart when its width changes. */
export function wireUsage() {
  $("usage-prev").addEventListener("click", () => loadUsage(shiftMonth(state.usageMonth, -1)));
  $("usage-next").addEventListener("click", () => loadUsage(shiftMonth(state.usageMonth, 1)));
  // Redrawn when its width changes (a phone turned, the frame resized), not on every resize.
  new ResizeObserver(() => {
    const width = Math.floor($("usage-chart").clientWidth);
    if (!state.chart || !width || width === state.chart.width) return;
    renderChart(state.chart.month, state.chart.summary);
  }).observe($("usage-chart"));
}
