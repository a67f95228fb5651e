// The workspace panel's view: its elements, how a model is drawn, the live
// region, errors and the password box. WorkspacePanel (workspace.js)
// extends it with the data: the model, the socket and the REST actions.
import { ApiError, NetworkError } from "./api.js";
import { STATE_LABELS } from "./console.js";
import { h } from "./dom.js";
import { announcement, duration, stepList, timeLine } from "./workspace-steps.js";

const AUTO_OPEN_KEY = "apranova.workspace.autoOpen"; // localStorage: a preference, not a session
const ACTIVE = ["provisioning", "stopping", "deleting"];
export const LABELS = { loading: "Checking…", none: "No workspace yet", ...STATE_LABELS };

function readPreference() {
  try {
    return localStorage.getItem(AUTO_OPEN_KEY) === "1";
  } catch {
    return false; // storage refused (privacy mode): unchecked
  }
}

export class WorkspaceView {
  /** The pressed button may be gone (Open, Stop, Delete hide themselves) or
   * disabled: then focus goes to Try again after a failure, else the panel's heading. */
  keepFocus() {
    const active = document.activeElement;
    const lost = !active || active === document.body || (this.element.contains(active)
      && (active.disabled || !active.offsetParent));
    if (!lost) return;
    const retry = !this.errorBox.hidden && !this.retryButton.hidden ? this.retryButton : null;
    (retry || this.heading).focus();
  }

  build() {
    this.stateText = h("span", { id: "ws-state", class: "state-pill" });
    this.liveText = h("span", { id: "ws-live", class: "live", hidden: true }, "Reconnecting…");
    // The one live region: present from the start, written only when its text changes.
    this.announcer = h("p", { id: "ws-announce", class: "visually-hidden", role: "status", "aria-live": "polite" });
    this.fill = h("div", { class: "progress-fill" });
    this.bar = h("div", { id: "ws-progress", class: "progress", role: "progressbar", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": "0", "aria-labelledby": "ws-progress-label" }, this.fill);
    this.percent = h("span", { id: "ws-percent" }, "0%");
    this.message = h("p", { id: "ws-message", class: "step" });
    this.timeText = h("p", { id: "ws-time", class: "hint" });
    this.progressBox = h("div", { class: "progress-box" },
      h("div", { class: "progress-head" }, h("span", { id: "ws-progress-label" }, "Progress"), this.percent),
      this.bar, this.message, this.timeText);
    this.logList = h("div", { id: "ws-log", class: "runs" });
    this.logBox = h("details", { class: "log", open: true }, h("summary", {}, "Steps"), this.logList);
    this.errorText = h("p", { id: "ws-error-text" });
    this.retryButton = h("button", { type: "button", id: "ws-retry" }, "Try again");
    this.errorBox = h("div", { id: "ws-error", class: "error-box", role: "alert", hidden: true },
      this.errorText, this.retryButton);
    this.link = h("a", { id: "ws-link", class: "button primary", target: "_blank", rel: "noopener noreferrer",
      onclick: (event) => this.openIde(event) }, "Open the IDE");
    this.password = h("input", { id: "ws-password", type: "password", readonly: true, autocomplete: "off",
      spellcheck: "false" });
    this.showButton = h("button", { type: "button", id: "ws-show", "aria-pressed": "false",
      onclick: () => this.togglePassword() }, "Show");
    this.copyButton = h("button", { type: "button", id: "ws-copy", onclick: () => this.copyPassword() }, "Copy");
    this.copyStatus = h("span", { id: "ws-copy-status", role: "status", class: "hint" });
    this.autoStatus = h("p", { id: "ws-auto-status", class: "hint" });
    this.runningBox = h("div", { id: "ws-running", class: "running-box", hidden: true },
      h("p", {}, this.link, " ", h("span", { class: "hint", id: "ws-url" })), this.autoStatus,
      this.passwordField = h("div", { class: "field", id: "ws-password-field" },
        h("label", { for: "ws-password" }, "IDE password"),
        h("div", { class: "inline" }, this.password, this.showButton, this.copyButton), this.copyStatus));
    this.openButton = h("button", { type: "button", id: "ws-open", class: "primary", onclick: () => this.open() },
      "Open my workspace");
    this.restartButton = h("button", { type: "button", id: "ws-restart", onclick: () => this.restart() }, "Restart");
    this.stopButton = h("button", { type: "button", id: "ws-stop", onclick: () => this.stop() }, "Stop");
    this.deleteButton = h("button", { type: "button", id: "ws-delete", class: "danger", onclick: () => this.remove() },
      "Delete");
    this.actions = h("div", { class: "actions" }, this.openButton, this.restartButton, this.stopButton,
      this.deleteButton);
    this.autoOpen = h("input", { type: "checkbox", id: "ws-auto-open", checked: readPreference(),
      onchange: () => this.rememberAutoOpen() });
    this.autoOpenBox = h("div", { class: "check" }, this.autoOpen,
      h("label", { for: "ws-auto-open" }, "Open the IDE in a new tab when it is ready"));
    this.notice = h("p", { id: "ws-notice", class: "notice", role: "status" });
    return h("section", { class: "card workspace", id: "workspace", "aria-labelledby": "ws-title" },
      h("div", { class: "panel-head" }, this.heading = h("h2", { id: "ws-title", tabindex: "-1" }, "Your workspace"),
        this.stateText, this.liveText),
      h("p", { class: "hint" }, "A browser IDE (VS Code) with Python, Node.js, Java and C/C++, kept for you."),
      this.announcer, this.notice, this.progressBox, this.runningBox, this.errorBox, this.actions, this.autoOpenBox,
      this.logBox);
  }

  rememberAutoOpen() {
    try {
      localStorage.setItem(AUTO_OPEN_KEY, this.autoOpen.checked ? "1" : "0");
    } catch { /* not remembered; it still applies in this tab */ }
  }

  render() {
    const { state, message, url, password, log } = this.model;
    this.element.dataset.state = state;
    this.stateText.textContent = LABELS[state] || state;
    this.progressBox.hidden = !["provisioning", "running", "failed", "stopping", "deleting"].includes(state);
    this.renderBar();
    this.message.textContent = message || "";
    this.message.hidden = state === "failed"; // the error box says it, with "Try again"
    const running = state === "running" && Boolean(url);
    this.runningBox.hidden = !running;
    if (running) {
      this.link.href = url;
      this.element.querySelector("#ws-url").textContent = url;
      this.password.value = password || "";
      this.passwordField.hidden = !password; // behind the proxy the IDE has no password of its own
    }
    if (state === "failed" && this.errorBox.dataset.kind !== "request") {
      this.showError(new Error(message || "Your workspace could not start. Try again."), () => this.open(), "state");
    } else if (state !== "failed" && this.errorBox.dataset.kind === "state") {
      this.clearError();
    }
    this.openButton.hidden = !["none", "stopped"].includes(state); // failed: the error box has "Try again"
    this.openButton.textContent = state === "stopped" ? "Start my workspace" : "Open my workspace";
    this.restartButton.hidden = state !== "running";
    this.stopButton.hidden = state !== "running";
    this.deleteButton.hidden = !["running", "stopped", "failed"].includes(state);
    this.actions.hidden = [...this.actions.children].every((button) => button.hidden);
    this.autoOpenBox.hidden = ["loading", "deleting"].includes(state);
    this.logList.replaceChildren(...stepList(log, state, this.serverNow()));
    this.logBox.hidden = log.filter((entry) => !entry.internal).length === 0;
    this.notice.hidden = state !== "none" || !this.notice.textContent;
    this.timeText.textContent = timeLine(this.model, this.serverNow());
    this.timeText.hidden = !this.timeText.textContent;
    this.announce(announcement(this.model));
    // Times "so far" move every second while something is under way.
    if (ACTIVE.includes(state) && !this.ticker) this.ticker = setInterval(() => this.tick(), 1000);
    else if (!ACTIVE.includes(state) && this.ticker) this.ticker = clearInterval(this.ticker) || null;
  }

  /** The bar: a value while starting; "indeterminate" (no value) while stopping or deleting. */
  renderBar() {
    const { state, progress, message } = this.model;
    const indeterminate = state === "stopping" || state === "deleting";
    this.bar.classList.toggle("indeterminate", indeterminate);
    this.bar.classList.toggle("failed", state === "failed");
    if (indeterminate) {
      this.bar.removeAttribute("aria-valuenow"); // ARIA: a progressbar without a value is indeterminate
      this.bar.setAttribute("aria-valuetext", message || LABELS[state]);
      this.fill.style.width = "";
      this.percent.textContent = `${LABELS[state]}…`;
      return;
    }
    this.bar.setAttribute("aria-valuenow", String(progress));
    this.bar.setAttribute("aria-valuetext", message ? `${progress}%: ${message}` : `${progress}%`);
    this.fill.style.width = `${progress}%`;
    this.percent.textContent = `${progress}%`;
  }

  tick() {
    const now = this.serverNow();
    this.timeText.textContent = timeLine(this.model, now);
    for (const span of this.logList.querySelectorAll(".duration[data-from]")) {
      span.textContent = ` · ${duration(now - Date.parse(span.dataset.from))} so far`;
    }
  }

  serverNow() {
    return Date.now() - this.skew;
  }

  /** Write the live region only with new text (and only once it is in the page). */
  announce(text) {
    if (!text || text === this.lastAnnounced) return;
    this.lastAnnounced = text;
    if (this.element.isConnected) this.announcer.textContent = text;
  }

  setLive(live) {
    if (!live && this.liveText.hidden) this.announce("Reconnecting");
    this.liveText.hidden = live;
  }

  setBusy(isBusy) {
    for (const button of this.actions.querySelectorAll("button")) button.disabled = isBusy;
    this.retryButton.disabled = isBusy;
    this.element.setAttribute("aria-busy", String(isBusy));
  }

  showError(error, retry, kind = "request") {
    let text = error.message;
    if (error instanceof ApiError) {
      const body = error.body;
      text = [body.message || error.message, typeof body.details === "string" ? body.details : ""]
        .filter(Boolean).join(" ");
      if (error.status === 429) text = body.message || "Too many workspace requests. Please wait and try again.";
    } else if (error instanceof NetworkError) {
      text = error.message;
    }
    this.errorText.textContent = text;
    this.errorBox.dataset.kind = kind;
    this.retryButton.hidden = !retry;
    this.retryButton.onclick = retry || null;
    this.errorBox.hidden = false;
  }

  clearError() {
    this.errorBox.hidden = true;
    delete this.errorBox.dataset.kind;
  }

  togglePassword() {
    const show = this.password.type === "password";
    this.password.type = show ? "text" : "password";
    this.showButton.textContent = show ? "Hide" : "Show";
    this.showButton.setAttribute("aria-pressed", String(show));
  }

  async copyPassword() {
    const value = this.model.password;
    try {
      await navigator.clipboard.writeText(value);
    } catch {
      // No clipboard permission (or an insecure origin): select it for Ctrl+C.
      this.password.type = "text";
      this.password.select();
      this.copyStatus.textContent = "Press Ctrl+C to copy.";
      return;
    }
    this.copyStatus.textContent = "Password copied.";
    setTimeout(() => { this.copyStatus.textContent = ""; }, 3000);
  }
}
