// Small DOM helpers: build elements, form fields with labels and error slots.

/** h("button", {class: "primary", onclick: fn}, "Text", child, ...) */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(name, value === true ? "" : value);
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** A labelled input with a hint and an error slot tied by aria-describedby. */
export function field({ name, label, type = "text", autocomplete, hint, required = true, value = "" }) {
  const id = `f-${name}`;
  const input = h("input", {
    id, name, type, autocomplete, required, value,
    "aria-describedby": `${id}-error${hint ? ` ${id}-hint` : ""}`,
  });
  return h("div", { class: "field", "data-field": name },
    h("label", { for: id }, label),
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
    input,
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }));
}

/** A labelled <select>. options: [[value, text], ...] */
export function selectField({ name, label, options, value }) {
  const id = `f-${name}`;
  const select = h("select", { id, name, "aria-describedby": `${id}-error` },
    options.map(([optionValue, text]) => h("option", { value: optionValue, selected: optionValue === value }, text)));
  return h("div", { class: "field", "data-field": name },
    h("label", { for: id }, label), select,
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }));
}

/** A radio group in a fieldset with a legend. options: [[value, text], ...] */
export function radioGroup({ name, legend, options, value }) {
  return h("fieldset", { class: "field radios", "data-field": name, "aria-describedby": `f-${name}-error` },
    h("legend", {}, legend),
    h("div", { class: "radio-row" }, options.map(([optionValue, text]) => h("label", { class: "radio" },
      h("input", { type: "radio", name, value: optionValue, checked: optionValue === value }), text))),
    h("p", { class: "field-error", id: `f-${name}-error`, hidden: true }));
}

/** Clear previous errors; show new ones next to their fields and the rest on top. */
export function showErrors(form, { fields = {}, message = "" } = {}) {
  for (const slot of form.querySelectorAll(".field-error")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const control of form.querySelectorAll("[aria-invalid]")) control.removeAttribute("aria-invalid");
  const leftover = [];
  for (const [name, messages] of Object.entries(fields)) {
    const container = form.querySelector(`[data-field="${CSS.escape(name)}"]`);
    if (!container) {
      leftover.push(...messages);
      continue;
    }
    const slot = container.querySelector(".field-error");
    slot.textContent = messages.join(" ");
    slot.hidden = false;
    for (const control of container.querySelectorAll("input, select")) control.setAttribute("aria-invalid", "true");
  }
  // The first invalid field in page order (not in the server's order).
  const first = form.querySelector('[aria-invalid="true"]');
  const banner = form.querySelector(".form-error");
  const text = [message, ...leftover].filter(Boolean).join(" ");
  banner.replaceChildren(text);
  banner.hidden = !text;
  if (first) {
    first.focus();
  } else if (text) {
    banner.tabIndex = -1; // e.g. wrong password: the message, not the page body, takes focus
    banner.focus();
  }
  return banner;
}

/** Disable a form's controls while a request is in flight. Disabling the
 * focused button drops focus to the page body, so it is given back after. */
const focusBeforeBusy = new WeakMap();
export function busy(form, isBusy) {
  if (isBusy && form.contains(document.activeElement)) focusBeforeBusy.set(form, document.activeElement);
  for (const control of form.querySelectorAll("button, input, select")) control.disabled = isBusy;
  form.setAttribute("aria-busy", String(isBusy));
  const previous = focusBeforeBusy.get(form);
  if (!isBusy && previous) {
    focusBeforeBusy.delete(form);
    const lost = !document.activeElement || document.activeElement === document.body;
    if (lost && previous.isConnected) (form.querySelector('[aria-invalid="true"]') || previous).focus();
  }
}
