// The admin console: users (search, pages, detail with role change and
// disable/enable), every workspace (stop/start/delete, event history) and
// the audit log. The server enforces every rule; the console only offers
// what the caller may do (`roleChoices`, `mayDisable` mirror services/admin.py).
import { api } from "./api.js";
import { amount } from "./disk-usage.js";
import { describe, LOGIN_ROLES } from "./auth.js";
import {
  confirmStep, consoleCard, enrolment, PagedTable, query, searchForm, STATE_LABELS, statePill, when,
} from "./console.js";
import { h, selectField } from "./dom.js";

const ADMIN_ROLES = ["admin", "superadmin"];
const ROLE_TITLES = Object.fromEntries(LOGIN_ROLES);

/** The roles `actor` may give `target` (empty: none). */
export function roleChoices(actor, target) {
  if (actor.role === "superadmin") return LOGIN_ROLES.map(([role]) => role);
  if (actor.role !== "admin" || ADMIN_ROLES.includes(target.role)) return [];
  return ["student", "trainer"];
}

export function mayDisable(actor, target) {
  return actor.id !== target.id && (actor.role === "superadmin" || !ADMIN_ROLES.includes(target.role));
}

/** The whole console for an admin or superadmin `actor`. */
export function adminConsole(actor) {
  const audit = auditSection();
  const users = usersSection(actor, () => audit.table.show());
  const workspaces = workspacesSection(() => audit.table.show());
  return h("div", { class: "console-grid" }, users, workspaces, audit.card);
}

// -- users ---------------------------------------------------------------------------
function usersSection(actor, onChange) {
  const filters = { q: "", role: "" };
  const detailSlot = h("div", { class: "detail-slot" });
  const table = new PagedTable({
    caption: "Users", empty: "No user matches.",
    load: (page) => api(`/api/admin/users/${query({ ...filters, page, page_size: 10 })}`),
    columns: [
      { label: "Name", cell: (user) => h("button", { type: "button", class: "link-button",
        "aria-label": `Manage ${user.name}`, onclick: (event) => openDetail(user.id, event.currentTarget) },
      user.name) },
      { label: "Email", cell: (user) => user.email },
      { label: "Role", cell: (user) => ROLE_TITLES[user.role] || user.role },
      { label: "Track", cell: (user) => user.track || "—" },
      { label: "Enrolment", cell: (user) => enrolment(user.enrollment_status) },
      { label: "Created", cell: (user) => when(user.created_at) },
      { label: "Last login", cell: (user) => when(user.last_login) },
      { label: "Status",
        cell: (user) => (user.disabled ? h("strong", { class: "disabled-tag" }, "Disabled") : "Active") },
    ],
  });
  const search = searchForm("Search users", "user-q",
    selectField({ name: "user-role", label: "Role", options: [["", "Any role"], ...LOGIN_ROLES] }));
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    filters.q = search.elements.q.value.trim();
    filters.role = search.elements["user-role"].value;
    table.show(1);
  });
  const { card, heading, status } = consoleCard("users", "Users", search, table.element, detailSlot);

  async function openDetail(id, trigger) {
    try {
      const user = await api(`/api/admin/users/${id}/`);
      renderDetail(user, trigger);
    } catch (error) {
      status.textContent = describe(error).message;
    }
  }

  function renderDetail(user, trigger) {
    const title = h("h3", { id: "user-detail-title", tabindex: "-1" }, user.name);
    const message = h("p", { class: "console-status", role: "status" });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const confirmSlot = h("div", { hidden: true });
    const rows = [["Email", user.email], ["Role", ROLE_TITLES[user.role] || user.role], ["Track", user.track || "—"],
      ["Enrolment", enrolment(user.enrollment_status)],
      ["Created", when(user.created_at)], ["Last login", when(user.last_login)],
      ["Status", user.disabled ? "Disabled" : "Active"]];
    const close = h("button", { type: "button", onclick: () => {
      detailSlot.replaceChildren();
      if (trigger && trigger.isConnected) trigger.focus();
    } }, "Close");
    const parts = [title, h("dl", { class: "details" }, rows.flatMap(([t, d]) => [h("dt", {}, t), h("dd", {}, d)])),
      error, message];
    const choices = roleChoices(actor, user);
    if (choices.length) {
      const form = h("form", { class: "inline-form" },
        selectField({ name: "detail-role", label: "Role", value: user.role,
          options: choices.map((role) => [role, ROLE_TITLES[role]]) }),
        h("button", { type: "submit", class: "primary" }, "Change role"));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const role = form.elements["detail-role"].value;
        save({ role }, `Role changed to ${ROLE_TITLES[role]}.`);
      });
      parts.push(form);
    } else {
      parts.push(h("p", { class: "hint" }, "Only a superadmin can change this account's role."));
    }
    const actions = h("div", { class: "actions" });
    if (mayDisable(actor, user)) {
      const label = user.disabled ? "Enable account" : "Disable account";
      const toggle = h("button", { type: "button", class: user.disabled ? "" : "danger", onclick: async () => {
        const question = user.disabled
          ? `Enable ${user.name}'s account? They can log in again.`
          : `Disable ${user.name}'s account? They are logged out everywhere and their workspace stops.`;
        if (await confirmStep(confirmSlot, { question, confirmLabel: `Yes, ${label.toLowerCase()}`,
          danger: !user.disabled, returnTo: toggle })) {
          save({ disabled: !user.disabled }, user.disabled ? "Account enabled." : "Account disabled.");
        }
      } }, label);
      const remove = h("button", { type: "button", class: "danger", onclick: async () => {
        if (!(await confirmStep(confirmSlot, { confirmLabel: "Yes, delete account", returnTo: remove,
          question: `Delete ${user.name}'s account? They can no longer log in; their payments and the audit `
            + "log are kept, and the email address may sign up again." }))) return;
        try {
          await api(`/api/admin/users/${user.id}/`, { method: "DELETE" });
          detailSlot.replaceChildren();
          status.textContent = `${user.name}'s account was deleted.`;
          heading.focus(); // the row and its detail are gone
          table.show();
          onChange();
        } catch (failure) {
          error.textContent = describe(failure).message;
          error.hidden = false;
        }
      } }, "Delete account");
      actions.append(toggle, remove);
    } else if (user.id !== actor.id) {
      parts.push(h("p", { class: "hint" }, "Only a superadmin can disable an admin account."));
    }
    actions.append(close);
    parts.push(actions, confirmSlot);
    detailSlot.replaceChildren(h("section", { class: "detail", "aria-labelledby": "user-detail-title" }, ...parts));
    title.focus();

    async function save(body, done) {
      try {
        const updated = await api(`/api/admin/users/${user.id}/`, { method: "PUT", body });
        renderDetail(updated, trigger);
        detailSlot.querySelector(".console-status").textContent = done;
        table.show();
        onChange();
      } catch (failure) {
        error.textContent = describe(failure).message;
        error.hidden = false;
        title.focus();
      }
    }
  }

  table.show(1);
  return card;
}

// -- workspaces ------------------------------------------------------------------------
const MIB = 2 ** 20;

/** "12.5% CPU · 300 MiB of 2,048 MiB" from the engine's stats now; "—" when unknown (not running, slow engine). */
export function usageText(ws) {
  const parts = [];
  if (typeof ws.cpu_percent === "number") parts.push(`${ws.cpu_percent.toFixed(1)}% CPU`);
  if (typeof ws.memory_bytes === "number") {
    const limit = ws.memory_limit ? ` of ${Math.round(ws.memory_limit / MIB).toLocaleString()} MiB` : "";
    parts.push(`${Math.round(ws.memory_bytes / MIB).toLocaleString()} MiB${limit}`);
  }
  return parts.join(" · ") || "—";
}

/** "1.2 of 2 GiB (quota 2 GiB)" from the latest disk reading; the quota alone when not read yet; "—" unlimited. */
export function diskText(ws) {
  const quota = ws.disk_quota ? `quota ${amount(ws.disk_quota, ws.disk_quota).split(" of ")[1]}` : "";
  if (typeof ws.disk_used_bytes === "number" && ws.disk_size_bytes) {
    return `${amount(ws.disk_used_bytes, ws.disk_size_bytes)}${quota ? ` (${quota})` : ""}`;
  }
  return quota || "—";
}

function workspacesSection(onChange) {
  const filters = { state: "" };
  const confirmSlot = h("div", { hidden: true });
  const historySlot = h("div", { class: "detail-slot" });
  const table = new PagedTable({
    caption: "Workspaces", empty: "No workspace in this state.",
    load: (page) => api(`/api/admin/workspaces/${query({ ...filters, page, page_size: 10 })}`),
    columns: [
      { label: "Owner", cell: (ws) => h("span", {}, ws.owner.name || `User ${ws.owner.id}`, h("br"),
        h("small", {}, ws.owner.email || "")) },
      { label: "State", cell: (ws) => statePill(ws.state) },
      { label: "Since", cell: (ws) => when(ws.since) },
      { label: "CPU / memory", cell: usageText },
      { label: "Disk", cell: diskText },
      { label: "Last message", cell: (ws) => ws.stop_reason && ws.state === "stopped" ? `${ws.message} (stopped: ${ws.stop_reason})` : ws.message },
      { label: "Actions", cell: (ws) => h("div", { class: "row-actions" }, actionsFor(ws)) },
    ],
  });
  const filter = h("form", { class: "filters", "aria-label": "Filter workspaces" },
    selectField({ name: "ws-state", label: "State",
      options: [["", "Any state but deleted"], ...Object.entries(STATE_LABELS)] }),
    h("button", { type: "submit", class: "primary" }, "Show"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    filters.state = filter.elements["ws-state"].value;
    table.show(1);
  });
  // No auto-refresh: rebuilding the rows under a keyboard user would drop their focus.
  const refresh = h("button", { type: "button", onclick: () => table.show() }, "Refresh workspaces");
  const { card, heading, status } = consoleCard("workspaces", "Workspaces", filter, table.element,
    h("div", { class: "actions" }, refresh), confirmSlot, historySlot);

  function actionsFor(ws) {
    const who = ws.owner.name || `user ${ws.owner.id}`;
    const buttons = [];
    const add = (label, verb, method, path, danger) => {
      const button = h("button", { type: "button", class: danger ? "danger" : "",
        "aria-label": `${label} ${who}'s workspace`, onclick: async () => {
          const question = `${label} ${who}'s workspace?${verb === "delete" ? " Their files are kept." : ""}`;
          if (!(await confirmStep(confirmSlot, { question, confirmLabel: `Yes, ${label.toLowerCase()}`, danger,
            returnTo: button }))) return;
          status.textContent = `${label}: working…`;
          try {
            const result = await api(`/api/admin/workspaces/${ws.owner.id}/${path}`, { method });
            status.textContent = `${who}'s workspace: ${result.message}`;
          } catch (error) {
            status.textContent = describe(error).message;
          }
          heading.focus(); // the pressed button is rebuilt with the table
          table.show();
          onChange();
        } }, label);
      buttons.push(button);
    };
    if (["running", "provisioning"].includes(ws.state)) add("Stop", "stop", "POST", "stop/", false);
    if (["stopped", "failed", "deleted"].includes(ws.state)) add("Start", "start", "POST", "start/", false);
    if (!["deleted", "deleting"].includes(ws.state)) add("Delete", "delete", "DELETE", "", true);
    buttons.push(h("button", { type: "button", "aria-label": `Event history of ${who}'s workspace`,
      onclick: (event) => showHistory(ws, who, event.currentTarget) }, "History"));
    return buttons;
  }

  function showHistory(ws, who, trigger) {
    const title = h("h3", { id: "history-title", tabindex: "-1" }, `Event history: ${who}`);
    const events = new PagedTable({
      caption: `Event history of ${who}'s workspace`, empty: "No events.",
      load: (page) => api(`/api/admin/workspaces/${ws.owner.id}/events/${query({ page, page_size: 15 })}`),
      columns: [{ label: "#", cell: (e) => String(e.seq) }, { label: "When", cell: (e) => when(e.at) },
        { label: "State", cell: (e) => statePill(e.state) }, { label: "Message", cell: (e) => e.message }],
    });
    const close = h("button", { type: "button", onclick: () => {
      historySlot.replaceChildren();
      if (trigger.isConnected) trigger.focus(); else heading.focus();
    } }, "Close history");
    historySlot.replaceChildren(h("section", { class: "detail", "aria-labelledby": "history-title" },
      title, events.element, h("div", { class: "actions" }, close)));
    events.show(1).then(() => title.focus());
  }

  table.show(1);
  return card;
}

// -- audit log ---------------------------------------------------------------------------
function auditSection() {
  const table = new PagedTable({
    caption: "Audit log, newest first", empty: "No admin action yet.",
    load: (page) => api(`/api/admin/audit/${query({ page, page_size: 10 })}`),
    columns: [
      { label: "When", cell: (e) => when(e.at) },
      { label: "Who", cell: (e) => e.actor_email || `User ${e.actor_id}` },
      { label: "Action", cell: (e) => e.action },
      { label: "Whom", cell: (e) => e.target_email || (e.target_id ? `User ${e.target_id}` : "—") },
      { label: "Details",
        cell: (e) => Object.entries(e.details || {}).map(([k, v]) => `${k}: ${v}`).join(", ") || "—" },
    ],
  });
  const refresh = h("button", { type: "button", onclick: () => table.show(1) }, "Refresh");
  const { card } = consoleCard("audit", "Audit log", table.element, h("div", { class: "actions" }, refresh));
  table.show(1);
  return { card, table };
}
