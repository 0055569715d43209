// The client of the public HTTP contract, with the user's token (a bearer token, never stored,
// never in a URL). Errors carry the contract's code and its plain-words message.

import { tokenExpired } from "./parent.js";
import { state } from "./state.js";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The request failed (HTTP ${status}).`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.details = error;
  }
}

/** Calls the contract. Errors carry the contract's code and its plain-words message. */
export async function api(method, path, body, { idempotencyKey, accept } = {}) {
  const headers = { authorization: `Bearer ${state.token}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  if (accept) headers.accept = accept;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { error: { code: "network_error", message: "The billing service could not be reached. Check your connection and try again." } });
  }
  if (response.status === 401) tokenExpired();
  if (accept === "text/csv" && response.ok) return response.blob();
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

export const wsPath = (rest) => `/v1/workspaces/${encodeURIComponent(state.workspace)}${rest}`;

export function newKey() {
  return crypto.randomUUID();
}

/** The claims of a user token (its workspace), or null when it cannot be read. */
export function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), "=")));
  } catch {
    return null;
  }
}
