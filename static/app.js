// ApraNova in the browser: a small router over the views.
// No build step: plain ES modules loaded by index.html.
import { api, onConnectionChange, session } from "./js/api.js";
import { dashboardPath, LOGIN_ROLES, loginView, signupView } from "./js/auth.js";
import { h } from "./js/dom.js";
import { dashboardView, profileView } from "./js/pages.js";
import { forgotPasswordView, resetPasswordView, verifyEmailView } from "./js/email-links.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const banner = document.getElementById("connection-banner");
const ROLES = LOGIN_ROLES.map(([role]) => role);
let current = null; // the shown view's {destroy}
let notice = "";

/** Go to a path inside the app (history entry unless replace). */
export function navigate(path, { replace = false, message = "" } = {}) {
  notice = message;
  if (path !== location.pathname + location.search) {
    history[replace ? "replaceState" : "pushState"]({}, "", path);
  }
  render();
}

function route(path) {
  const user = session.user;
  const loggedIn = session.loggedIn && user && ROLES.includes(user.role);
  const home = loggedIn ? dashboardPath(user.role) : "/login";
  if (path === "/") return { redirect: home };
  // Pages that mailed links open: logged in or not.
  if (path === "/verify-email") return { title: "Verify your email", view: verifyEmailView };
  if (path === "/reset-password") return { title: "Choose a new password", view: () => resetPasswordView({ navigate }) };
  if (path === "/forgot-password") return { title: "Forgot your password?", view: forgotPasswordView };
  if (path === "/login" || path === "/signup") {
    if (loggedIn) return { redirect: home };
    return { title: path === "/login" ? "Log in" : "Sign up",
      view: () => (path === "/login" ? loginView : signupView)({ navigate, notice }) };
  }
  if (!loggedIn) return { redirect: "/login", message: "Please log in to continue." };
  if (path === "/profile") return { title: "Profile", view: profileView };
  const match = path.match(/^\/(student|trainer|admin|superadmin)\/dashboard\/?$/);
  if (match) {
    // A superadmin may log in under any role (the API allows it) and see that dashboard.
    if (match[1] !== user.role && user.role !== "superadmin") return { redirect: home };
    return { title: "Dashboard", view: () => dashboardView({ role: match[1] }) };
  }
  return { redirect: home };
}

function render() {
  const target = route(location.pathname);
  if (target.redirect) return navigate(target.redirect, { replace: true, message: target.message || notice });
  if (current && current.destroy) current.destroy();
  const result = target.view();
  current = result instanceof Node ? { element: result } : result;
  main.replaceChildren(current.element);
  document.title = `${target.title} · ApraNova`;
  renderNav();
  notice = "";
  // Move focus to the new page's heading so keyboard and screen-reader users start there.
  const heading = main.querySelector("h1");
  if (heading) heading.focus({ preventScroll: true });
}

function renderNav() {
  const user = session.user;
  if (session.loggedIn && user) {
    nav.replaceChildren(
      h("a", { href: dashboardPath(user.role), "data-link": true }, "Dashboard"),
      h("a", { href: "/profile", "data-link": true }, "Profile"),
      h("button", { type: "button", id: "logout", class: "link-button", onclick: logout }, "Log out"));
  } else {
    nav.replaceChildren(
      h("a", { href: "/login", "data-link": true }, "Log in"),
      h("a", { href: "/signup", "data-link": true }, "Sign up"));
  }
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === location.pathname) link.setAttribute("aria-current", "page");
  }
}

async function logout() {
  const button = document.getElementById("logout");
  if (button) button.disabled = true;
  try {
    // The body is built per attempt: after a refresh it must carry the new refresh token.
    await api("/api/users/logout/", { method: "POST", body: () => ({ refresh: session.refreshToken }) });
  } catch {
    // Even if the server cannot be told, this tab forgets the tokens.
  }
  session.clear(); // first: it tells this login's other tabs
  for (const key of Object.keys(sessionStorage)) {
    if (key.startsWith("apranova.")) sessionStorage.removeItem(key);
  }
  navigate("/login", { message: "You have been logged out." });
}

session.onExpired(() => navigate("/login", { replace: true, message: "Your session has ended. Please log in again." }));

onConnectionChange((down) => {
  banner.hidden = !down;
  banner.textContent = down
    ? "Cannot reach the ApraNova server. Check your connection; we will keep trying and carry on when it is back."
    : "";
});

// In-app links: no full page load.
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
  event.preventDefault();
  navigate(link.getAttribute("href"));
});
window.addEventListener("popstate", () => render());

// A Google/GitHub sign-in finished by /accounts/<provider>/login/callback/ hands
// the tokens over in the fragment (never sent to a server); take them and drop it.
const handed = new URLSearchParams(location.hash.slice(1));
if (handed.get("access") && handed.get("refresh")) {
  history.replaceState({}, "", location.pathname + location.search);
  try {
    session.start({ access: handed.get("access"), refresh: handed.get("refresh"),
      user: JSON.parse(handed.get("user") || "null") });
  } catch {
    // A malformed hand-over: stay logged out.
  }
}
render();
