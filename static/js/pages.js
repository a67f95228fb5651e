// Dashboard and profile views.
import { api, ApiError, config, session } from "./api.js";
import { describe, LOGIN_ROLES } from "./auth.js";
import { adminConsole } from "./admin.js";
import { enrolment } from "./console.js";
import { busy, field, h, selectField, showErrors } from "./dom.js";
import { trainerConsole } from "./trainer.js";
import { WorkspacePanel } from "./workspace.js";

const ROLE_TITLES = Object.fromEntries(LOGIN_ROLES);

function trackTitle(code) {
  const tracks = config().tracks || {};
  return code ? `${tracks[code] || code} (${code})` : "None";
}

/** The role's dashboard; students get their workspace panel at its centre. */
export function dashboardView({ role }) {
  const user = session.user || {};
  const cleanup = [];
  const intro = {
    student: "Your workspace is a browser IDE that keeps your files between sessions.",
    trainer: "Follow your students' progress and prepare your sessions.",
    admin: "Manage users, their workspaces and roles; every change is written to the audit log.",
    superadmin: "Manage users, their workspaces and every role, admin roles included.",
  }[role];
  const children = [
    h("h1", { id: "page-title", tabindex: "-1" }, `Welcome, ${user.name || "there"}`),
    h("p", { class: "lead" }, `${ROLE_TITLES[role]} dashboard`,
      user.track ? ` · Track: ${trackTitle(user.track)}` : ""),
    h("p", {}, intro),
  ];
  if (role === "student") {
    const panel = new WorkspacePanel(user);
    cleanup.push(() => panel.destroy());
    children.push(panel.element);
  } else if (role === "trainer") {
    children.push(trainerConsole());
  } else if (["admin", "superadmin"].includes(user.role)) {
    children.push(adminConsole(user)); // what it offers follows the caller's own role
  }
  children.push(h("p", {}, h("a", { href: "/profile", "data-link": true }, "View your profile")));
  const element = h("section", { class: "page", "aria-labelledby": "page-title" }, ...children);
  return { element, destroy: () => cleanup.forEach((fn) => fn()) };
}

export function profileView() {
  const details = h("dl", { class: "details", id: "profile-details" });
  const status = h("p", { class: "notice", role: "status", hidden: true });
  const tracks = Object.entries(config().tracks || {});
  const form = h("form", { class: "stack", novalidate: true, hidden: true },
    h("h2", {}, "Edit your details"),
    h("div", { class: "form-error", role: "alert", hidden: true }),
    field({ name: "name", label: "Full name", autocomplete: "name" }),
    selectField({ name: "track", label: "Track", options: tracks.map(([code, title]) => [code, `${title} (${code})`]) }),
    h("button", { type: "submit", class: "primary" }, "Save changes"));

  function show(profile) {
    session.setUser({ id: profile.id, name: profile.name, email: profile.email, role: profile.role,
      track: profile.track });
    const rows = [
      ["Name", profile.name], ["Email", profile.email], ["Role", ROLE_TITLES[profile.role] || profile.role],
      ["Track", trackTitle(profile.track)],
      ["Member since", new Date(profile.created_at).toLocaleDateString(undefined, { dateStyle: "long" })],
      ["Enrollment", enrolment(profile.enrollment_status)],
      // A student's trainer, assigned at sign-up ("—" when the track has none).
      ...(profile.role === "student" ? [["Trainer", profile.assigned_trainer && profile.assigned_trainer.name]] : []),
    ];
    details.replaceChildren(...rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value || "—")]));
    form.elements.name.value = profile.name;
    if (profile.track) form.elements.track.value = profile.track;
    form.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(form, true);
    status.hidden = true;
    try {
      const body = { name: form.elements.name.value.trim(), track: form.elements.track.value || null };
      show(await api("/api/users/profile/", { method: "PATCH", body }));
      showErrors(form, {});
      status.textContent = "Your details were saved.";
      status.hidden = false;
    } catch (error) {
      showErrors(form, describe(error));
    } finally {
      busy(form, false);
    }
  });

  const errorBox = h("p", { class: "form-error", role: "alert", hidden: true });
  api("/api/users/profile/").then(show).catch((error) => {
    if (error instanceof ApiError || error.message) {
      errorBox.textContent = describe(error).message;
      errorBox.hidden = false;
    }
  });

  return h("section", { class: "card", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, "Your profile"),
    errorBox, details, status, form);
}
