// What the page was served with (the data attributes the component writes into <html>) and what
// it holds while it runs. Every module reads and writes the one `state`.

export const root = document.documentElement;
export const STRIPE_KEY = root.dataset.stripeKey || "";
export const EMBED_ORIGINS = (root.dataset.embedOrigins || "").split(/\s+/).filter(Boolean);
export const EMBEDDED = window.parent !== window;

export const state = {
  token: null,
  workspace: null,
  parentOrigin: null,
  summary: null,
  plans: null,
  usageMonth: null,
  tx: { cursors: [null], index: 0, next: null, type: "", agent: "" },
  stripe: null,
  card: null,
  cardChange: null,
  chart: null,
  loadedWorkspace: null,
};
