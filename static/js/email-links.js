// The pages that mailed links open (PUBLIC_BASE_URL/verify-email?key=...,
// /reset-password?uid=...&token=...), and the "forgot password" form.
import { api } from "./api.js";
import { describe } from "./auth.js";
import { busy, field, h, showErrors } from "./dom.js";

function page(title, ...children) {
  return h("section", { class: "card narrow", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", tabindex: "-1" }, title), ...children);
}

function loginLink(text = "Go to the login page") {
  return h("p", {}, h("a", { href: "/login", "data-link": true }, text));
}

/** Posts the link's key once, on arrival, and says how it went. */
export function verifyEmailView() {
  const key = new URLSearchParams(location.search).get("key") || "";
  const status = h("p", { role: "status" }, "Verifying your email address…");
  const section = page("Verify your email", status, loginLink());
  api("/api/auth/registration/verify-email/", { method: "POST", body: { key }, auth: false })
    .then(() => status.replaceChildren("Your email address is verified. Thank you!"))
    .catch((error) => {
      const { fields, message } = describe(error);
      status.replaceChildren((fields.key || [message]).join(" "));
      status.setAttribute("role", "alert");
    });
  return section;
}

/** Asks for a reset link; the answer is the same whether or not the email is known. */
export function forgotPasswordView() {
  const form = h("form", { class: "stack", novalidate: true },
    h("div", { class: "form-error", role: "alert", hidden: true }),
    field({ name: "email", label: "Email", type: "email", autocomplete: "email" }),
    h("button", { type: "submit", class: "primary" }, "Send me a reset link"));
  const section = page("Forgot your password?", form, loginLink("Back to the login page"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const email = String(new FormData(form).get("email") || "").trim(); // before busy(): disabled inputs are not sent
    busy(form, true);
    try {
      const result = await api("/api/auth/password/reset/", { method: "POST", body: { email }, auth: false });
      form.replaceWith(h("p", { class: "notice", role: "status" }, result.message));
    } catch (error) {
      busy(form, false);
      showErrors(form, describe(error));
    }
  });
  return section;
}

/** Sets a new password with the link's uid and token. */
export function resetPasswordView({ navigate }) {
  const params = new URLSearchParams(location.search);
  const form = h("form", { class: "stack", novalidate: true },
    h("div", { class: "form-error", role: "alert", hidden: true }),
    field({ name: "new_password1", label: "New password", type: "password", autocomplete: "new-password",
      hint: "At least 8 characters; not a common password or one like your name or email." }),
    field({ name: "new_password2", label: "Confirm new password", type: "password", autocomplete: "new-password" }),
    h("button", { type: "submit", class: "primary" }, "Set the new password"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { uid: params.get("uid") || "", token: params.get("token") || "",
      new_password1: String(data.get("new_password1") || ""), new_password2: String(data.get("new_password2") || "") };
    busy(form, true);
    try {
      await api("/api/auth/password/reset/confirm/", { method: "POST", body, auth: false });
      navigate("/login", { message: "Your password has been reset. Log in with the new password." });
    } catch (error) {
      busy(form, false);
      const { fields, message } = describe(error);
      // A bad link is not a field of this form: say so on top.
      showErrors(form, { fields, message: fields.token ? fields.token.join(" ") : message });
    }
  });
  return page("Choose a new password", form);
}
