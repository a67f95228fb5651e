// Building blocks of the admin and trainer consoles: a paginated table, an
// inline confirm step, and date/label formatting. No dialogs or popups: a
// confirm is a small group of buttons next to what it confirms, so keyboard
// and screen-reader users stay where they were.
import { describe } from "./auth.js";
import { h } from "./dom.js";

export const STATE_LABELS = {
  provisioning: "Starting", running: "Running", stopping: "Stopping", stopped: "Stopped",
  failed: "Failed", deleting: "Deleting", deleted: "Deleted",
};

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** "in progress" from "IN_PROGRESS"; "" when unknown. */
export function enrolment(status) {
  return (status || "").replaceAll("_", " ").toLowerCase();
}

/** A search form: a "Name or email" box (`name` q, id `inputId`), any `extra` fields, and a Search button. */
export function searchForm(label, inputId, ...extra) {
  return h("form", { class: "filters", role: "search", "aria-label": label },
    h("div", { class: "field" }, h("label", { for: inputId }, "Name or email"),
      h("input", { id: inputId, name: "q", type: "search", maxlength: "100", autocomplete: "off" })),
    ...extra,
    h("button", { type: "submit", class: "primary" }, "Search"));
}

export function statePill(state) {
  return h("span", { class: "state-pill", "data-state": state || "none" }, STATE_LABELS[state] || "No workspace");
}

/** A card with an h2 (focusable: actions move focus there) and a polite status line. */
export function consoleCard(id, title, ...children) {
  const heading = h("h2", { id: `${id}-title`, tabindex: "-1" }, title);
  const status = h("p", { class: "console-status", role: "status" });
  const card = h("section", { class: "card console", id, "aria-labelledby": `${id}-title` }, heading, ...children,
    status);
  return { card, heading, status };
}

/**
 * A table over a paginated endpoint. columns: [{label, cell(row) -> Node|string}].
 * load(page) must resolve to {results, count, page, page_size}.
 */
export class PagedTable {
  constructor({ caption, columns, load, empty = "Nothing to show." }) {
    this.columns = columns;
    this.load = load;
    this.empty = empty;
    this.page = 1;
    this.body = h("tbody");
    this.error = h("p", { class: "form-error", role: "alert", hidden: true });
    this.summary = h("p", { class: "pager-summary", "aria-live": "polite" });
    this.prev = h("button", { type: "button", onclick: () => this.show(this.page - 1) }, "Previous page");
    this.next = h("button", { type: "button", onclick: () => this.show(this.page + 1) }, "Next page");
    this.element = h("div", { class: "paged" }, this.error,
      h("table", { class: "data-table" }, h("caption", { class: "visually-hidden" }, caption),
        h("thead", {}, h("tr", {}, columns.map((column) => h("th", { scope: "col" }, column.label)))), this.body),
      h("div", { class: "pager" }, this.prev, this.summary, this.next));
  }

  async show(page = this.page) {
    const pressed = document.activeElement;
    const request = (this.requests = (this.requests || 0) + 1);
    this.element.setAttribute("aria-busy", "true");
    try {
      const data = await this.load(Math.max(1, page));
      if (request !== this.requests) return; // a newer show() answers instead (answers may come out of order)
      this.page = data.page;
      this.rows = data.results;
      this.body.replaceChildren(...data.results.map((row) => h("tr", {},
        this.columns.map((column) => h("td", { "data-label": column.label }, column.cell(row))))));
      if (!data.results.length) {
        this.body.replaceChildren(h("tr", {}, h("td", { colspan: String(this.columns.length), class: "empty" },
          this.empty)));
      }
      const pages = Math.max(1, Math.ceil(data.count / data.page_size));
      this.summary.textContent = `Page ${data.page} of ${pages} · ${data.count} in all`;
      this.prev.disabled = data.page <= 1;
      this.next.disabled = data.page >= pages;
      this.prev.hidden = this.next.hidden = pages <= 1; // one page: nothing to move to
      // The pager button just pressed may now be disabled: keep focus on the pager.
      if ((pressed === this.prev || pressed === this.next) && pressed.disabled) {
        (pressed === this.next ? this.prev : this.next).focus();
      }
      this.error.hidden = true;
    } catch (error) {
      this.error.textContent = describe(error).message;
      this.error.hidden = false;
    } finally {
      this.element.setAttribute("aria-busy", "false");
    }
  }
}

/**
 * An inline confirm step in `slot`: a question and two buttons. Resolves
 * true (confirmed) or false; focus goes to the confirm button, and back to
 * `returnTo` on cancel.
 */
export function confirmStep(slot, { question, confirmLabel, danger = true, returnTo }) {
  return new Promise((resolve) => {
    const done = (answer) => {
      slot.replaceChildren();
      slot.hidden = true;
      if (!answer && returnTo && returnTo.isConnected) returnTo.focus();
      resolve(answer);
    };
    const yes = h("button", { type: "button", class: danger ? "primary danger-fill" : "primary",
      onclick: () => done(true) }, confirmLabel);
    const no = h("button", { type: "button", onclick: () => done(false) }, "Cancel");
    const text = h("p", { id: `confirm-${Date.now()}` }, question);
    slot.replaceChildren(h("div", { class: "confirm", role: "group", "aria-labelledby": text.id,
      onkeydown: (event) => { if (event.key === "Escape") done(false); } },
    text, h("div", { class: "actions" }, yes, no)));
    slot.hidden = false;
    yes.focus();
  });
}

/** Query string of the non-empty values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
