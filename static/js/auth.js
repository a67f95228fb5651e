// Sign-up and login views.
import { api, ApiError, config, NetworkError, session } from "./api.js";
import { busy, field, h, radioGroup, selectField, showErrors } from "./dom.js";

/** Every role, with its title: [[role, title], ...]. */
export const LOGIN_ROLES = [["student", "Student"], ["trainer", "Trainer"], ["admin", "Admin"], ["superadmin", "Super admin"]];
const SIGNUP_ROLES = LOGIN_ROLES.slice(0, 2);

export function dashboardPath(role) {
  return `/${role}/dashboard`;
}

/** Turn an API failure into {fields, message} for showErrors. */
export function describe(error) {
  if (error instanceof ApiError) {
    const fields = error.fields;
    if (error.status === 429) {
      return { message: error.body.message || "Too many attempts. Please wait a moment and try again." };
    }
    if (Object.keys(fields).length) return { fields, message: "Please correct the highlighted fields." };
    return { message: error.message };
  }
  if (error instanceof NetworkError) return { message: error.message };
  return { message: "Something went wrong. Please try again." };
}

export function loginView({ navigate, notice }) {
  const form = h("form", { class: "stack", novalidate: true },
    h("div", { class: "form-error", role: "alert", hidden: true }),
    field({ name: "email", label: "Email", type: "email", autocomplete: "email" }),
    field({ name: "password", label: "Password", type: "password", autocomplete: "current-password" }),
    radioGroup({ name: "role", legend: "Log in as", options: LOGIN_ROLES, value: "student" }),
    h("button", { type: "submit", class: "primary" }, "Log in"));

  async function submit(event) {
    event?.preventDefault();
    const data = new FormData(form);
    const body = { email: String(data.get("email") || "").trim(), password: String(data.get("password") || ""),
      role: String(data.get("role") || "student") };
    busy(form, true);
    try {
      const result = await api("/api/users/login/", { method: "POST", body, auth: false });
      session.start(result);
      navigate(result.redirect_url || dashboardPath(result.user.role));
    } catch (error) {
      busy(form, false);
      const banner = showErrors(form, describe(error));
      const actual = error instanceof ApiError && error.status === 403 && error.body.actual_role;
      if (actual) {
        const label = (LOGIN_ROLES.find(([value]) => value === actual) || [actual, actual])[1];
        banner.append(" ", h("button", { type: "button", class: "link-button", onclick: () => {
          form.querySelector(`input[name="role"][value="${CSS.escape(actual)}"]`).checked = true;
          submit();
        } }, `Log in as ${label.toLowerCase()} instead`));
      }
    }
  }
  form.addEventListener("submit", submit);

  return h("section", { class: "card narrow", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, "Log in"),
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    form,
    h("p", {}, h("a", { href: "/forgot-password", "data-link": true }, "Forgot your password?")),
    h("p", {}, "New to ApraNova? ", h("a", { href: "/signup", "data-link": true }, "Create an account")));
}

export function signupView({ navigate }) {
  const tracks = Object.entries(config().tracks || { DP: "Data Professional", FSD: "Full-Stack Developer" });
  const form = h("form", { class: "stack", novalidate: true },
    h("div", { class: "form-error", role: "alert", hidden: true }),
    field({ name: "name", label: "Full name", autocomplete: "name" }),
    field({ name: "email", label: "Email", type: "email", autocomplete: "email" }),
    field({ name: "password1", label: "Password", type: "password", autocomplete: "new-password",
      hint: "At least 8 characters; not a common password or one like your name or email." }),
    field({ name: "password2", label: "Confirm password", type: "password", autocomplete: "new-password" }),
    radioGroup({ name: "role", legend: "I am a", options: SIGNUP_ROLES, value: "student" }),
    selectField({ name: "track", label: "Track", options: tracks.map(([code, title]) => [code, `${title} (${code})`]),
      value: tracks[0] && tracks[0][0] }),
    h("button", { type: "submit", class: "primary" }, "Create account"));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = Object.fromEntries(["name", "email", "password1", "password2", "role", "track"]
      .map((key) => [key, String(data.get(key) || "")]));
    body.name = body.name.trim();
    body.email = body.email.trim();
    busy(form, true);
    try {
      const result = await api("/api/auth/registration/", { method: "POST", body, auth: false });
      session.start(result);
      navigate(dashboardPath(result.user.role));
    } catch (error) {
      busy(form, false);
      showErrors(form, describe(error));
    }
  });

  return h("section", { class: "card narrow", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, "Create your account"),
    form,
    h("p", {}, "Already registered? ", h("a", { href: "/login", "data-link": true }, "Log in")));
}
