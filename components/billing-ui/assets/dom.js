// Small DOM helpers: find by id, build elements (text is never parsed as HTML), show and hide,
// error slots.

export const $ = (id) => document.getElementById(id);

/** Creates an element: `h("td", {class: "num"}, "text", child)`. Text is never parsed as HTML. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false || child === "") continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function show(el, visible) {
  el.hidden = !visible;
}

/** Shows `message` in the error slot `el` (and marks `field` invalid), or clears it. */
export function setError(el, message, field) {
  el.textContent = message || "";
  show(el, Boolean(message));
  if (field) field.setAttribute("aria-invalid", message ? "true" : "false");
}
