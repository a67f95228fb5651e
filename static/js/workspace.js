// The workspace panel: open, watch provisioning live, use, stop, delete.
//
// Progress comes from the WebSocket /api/users/workspace/status/: a snapshot
// on connect, then every event after `?after=<seq>` (replayed from the
// server's log), then live events. The panel remembers the last seq it has
// shown (and the steps it listed) in sessionStorage, so a reload or a
// dropped connection resumes exactly where it was: no event is shown twice,
// none is skipped, and within one provisioning run the bar never moves back.
import { api, ApiError, checkServer, NetworkError, onConnectionChange, session, SessionExpired } from "./api.js";
import { h } from "./dom.js";

const MAX_LOG = 50;
const MAX_BACKOFF_MS = 15000;
const LABELS = {
  none: "No workspace yet", provisioning: "Starting", running: "Running", stopping: "Stopping",
  stopped: "Stopped", failed: "Failed", deleting: "Deleting", deleted: "Deleted",
};

function emptyModel() {
  return { state: "none", progress: 0, message: "", seq: 0, url: "", password: "", log: [] };
}

export class WorkspacePanel {
  constructor(user) {
    this.storageKey = `apranova.workspace.${user.id}`;
    this.model = this.restore();
    this.snapshotSeq = 0;
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.closed = false;
    this.authRetried = false;
    this.onOnline = () => { if (this.wantSocket()) this.connect(); };
    window.addEventListener("online", this.onOnline);
    // The server is back: reconnect now rather than at the end of a backoff.
    this.offConnection = onConnectionChange((down) => { if (!down && !this.socket) this.onOnline(); });
    this.element = this.build();
    this.render();
    this.load();
  }

  // -- persistence --------------------------------------------------------------
  restore() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(this.storageKey) || "null");
      if (saved && Number.isInteger(saved.seq)) return { ...emptyModel(), ...saved, url: "", password: "" };
    } catch { /* start empty */ }
    return emptyModel();
  }

  save() {
    const { state, progress, message, seq, log } = this.model;
    // The IDE password is not persisted; it is fetched again after a reload.
    sessionStorage.setItem(this.storageKey, JSON.stringify({ state, progress, message, seq, log }));
  }

  forget() {
    this.model = emptyModel();
    this.snapshotSeq = 0; // the seq of the newest whole-state view applied
    sessionStorage.removeItem(this.storageKey);
  }

  // -- applying server data ---------------------------------------------------------
  // A snapshot (the REST object, or the socket's first message) is the whole
  // state as of its `seq`. Events up to the newest snapshot's seq only fill
  // the step list (the snapshot already shows their outcome); later events
  // move the state. So a replay never replays old states on screen.

  /** The REST object or the socket's snapshot. */
  applySnapshot(snapshot, { fromSocket = false } = {}) {
    const model = this.model;
    if (snapshot.url) model.url = snapshot.url;
    if (snapshot.password) model.password = snapshot.password;
    const seq = snapshot.seq;
    if (Number.isInteger(seq)) {
      if (fromSocket && seq < model.seq) {
        // The server numbers from lower than we remember: another workspace
        // (ours was removed for good). Start the step list afresh.
        model.seq = seq;
        model.log = [];
        this.snapshotSeq = seq;
      } else if (seq < Math.max(model.seq, this.snapshotSeq)) {
        return this.render(); // an answer older than what is shown: keep only its URL and password
      }
      this.snapshotSeq = seq;
    }
    this.setState(snapshot.state || snapshot.status, snapshot.progress, snapshot.message);
    this.save();
    this.render();
    if (model.state === "deleted") this.workspaceGone(model.message);
  }

  /** One event from the log; ignored if already shown (seq <= last seq). */
  applyEvent(event) {
    const model = this.model;
    if (!Number.isInteger(event.seq) || event.seq <= model.seq) return;
    model.seq = event.seq;
    model.log.push({ seq: event.seq, state: event.state, progress: event.progress, message: event.message });
    if (model.log.length > MAX_LOG) model.log.splice(0, model.log.length - MAX_LOG);
    const previous = model.state;
    if (event.seq > this.snapshotSeq) this.setState(event.state, event.progress, event.message);
    this.save();
    this.render();
    // Events carry no URL or password: fetch them when the IDE comes up (its port may be new).
    if (model.state === "running" && (previous !== "running" || !model.url)) this.refreshDetails();
    if (model.state === "deleted") this.workspaceGone(model.message);
  }

  setState(state, progress, message) {
    const model = this.model;
    const previous = model.state;
    model.state = state || model.state;
    if (typeof message === "string" && message) model.message = message;
    const value = Number.isFinite(progress) ? Math.max(0, Math.min(100, Math.round(progress))) : model.progress;
    if (model.state === "running") {
      model.progress = 100;
    } else if (model.state === "provisioning") {
      // Within one run the bar only moves forward; a new run starts from its own value.
      model.progress = previous === "provisioning" ? Math.max(model.progress, value) : value;
    } else if (model.state !== "failed") {
      model.progress = value;
    }
  }

  /** No workspace (any more); `notice` says why, e.g. the delete's message. */
  workspaceGone(notice = "") {
    this.closeSocket();
    this.forget();
    this.notice.textContent = notice;
    this.render();
  }

  // -- REST actions ---------------------------------------------------------------
  async load() {
    try {
      const workspace = await api("/api/users/workspace/");
      // Nothing remembered (first visit in this tab): start from the current step.
      if (!this.model.seq && Number.isInteger(workspace.seq)) this.model.seq = workspace.seq - 1;
      this.applySnapshot(workspace);
      this.connect();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.workspaceGone();
      } else {
        this.showError(error, () => this.load());
      }
    }
  }

  async refreshDetails() {
    try {
      const workspace = await api("/api/users/workspace/");
      if (workspace.url) this.model.url = workspace.url;
      if (workspace.password) this.model.password = workspace.password;
      this.render();
    } catch { /* the socket keeps the state; details come on the next load */ }
  }

  /** Run one button's request: buttons disabled meanwhile, errors shown with a retry. */
  async act(request, retry) {
    this.setBusy(true);
    this.clearError();
    try {
      await request();
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) this.workspaceGone(); // deleted elsewhere
      else this.showError(error, retry);
    } finally {
      this.setBusy(false);
      this.keepFocus();
    }
  }

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

  /**
   * The IDE through the server's proxy: a one-time ticket URL on the
   * workspace's own origin, opened in a new tab. The tab is opened before
   * the request (a popup blocker allows it only within the click) and cut
   * from this page (`opener = null`) before it leaves for the workspace.
   */
  async openIde(event) {
    event?.preventDefault();
    const tab = window.open("", "_blank");
    if (tab) tab.opener = null;
    this.clearError();
    try {
      const { url } = await api("/api/users/workspace/open/", { method: "POST" });
      if (tab) tab.location.href = url;
      else window.location.assign(url);
    } catch (error) {
      if (tab) tab.close();
      if (error instanceof ApiError && error.status === 404) this.workspaceGone();
      else this.showError(error, () => this.openIde());
    }
  }

  open() {
    return this.act(async () => {
      const workspace = await api("/api/users/workspace/create/", { method: "POST" });
      const model = this.model;
      if (Number.isInteger(workspace.seq)) {
        // List this run's steps from its first event; older history is not replayed.
        if (model.seq < workspace.seq - 1) model.seq = workspace.seq - 1;
        // A newer answer than anything shown starts a fresh run: the bar
        // starts from the server's value, not from the previous run's.
        const newest = workspace.seq > Math.max(model.seq, this.snapshotSeq);
        if (newest && workspace.state === "provisioning") model.state = "none";
      }
      this.applySnapshot(workspace);
      if (!this.socket) this.connect();
    }, () => this.open());
  }

  stop() {
    return this.act(async () => {
      this.applySnapshot(await api("/api/users/workspace/stop/", { method: "POST" }));
      if (!this.socket) this.connect();
    }, () => this.stop());
  }

  remove() {
    if (!window.confirm("Delete your workspace? The container is removed; your files are kept.")) return undefined;
    return this.act(async () => {
      const result = await api("/api/users/workspace/", { method: "DELETE" });
      if (result.state === "deleted" || !result.state) return this.workspaceGone(result.message);
      this.setState(result.state, 0, result.message);
      this.save();
      this.render();
      if (!this.socket) this.connect();
      return undefined;
    }, () => this.remove());
  }

  // -- the live stream ----------------------------------------------------------------
  wantSocket() {
    return !this.closed && this.model.state !== "none";
  }

  async connect() {
    this.closeSocket();
    if (!this.wantSocket()) return;
    clearTimeout(this.retryTimer);
    let token;
    try {
      token = await session.access();
    } catch (error) {
      return error instanceof SessionExpired ? session.end() : this.reconnectLater();
    }
    if (this.closed) return;
    this.closeSocket(); // another connect() may have run meanwhile
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // The token goes in the first message, never in the URL (URLs end up in logs).
    const socket = new WebSocket(`${scheme}//${location.host}/api/users/workspace/status/?after=${this.model.seq}`);
    this.socket = socket;
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", token })));
    socket.addEventListener("message", (message) => {
      if (socket !== this.socket) return;
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      this.attempt = 0;
      this.authRetried = false;
      this.setLive(true);
      if (data.type === "snapshot") this.applySnapshot(data, { fromSocket: true });
      else if (data.type === "event") this.applyEvent(data);
    });
    socket.addEventListener("close", (event) => this.onClose(socket, event));
  }

  async onClose(socket, event) {
    if (socket !== this.socket) return; // an old socket we replaced
    this.socket = null;
    if (this.closed) return;
    if (event.code === 4404) return this.workspaceGone();
    if (event.code === 4401 && !this.authRetried) {
      this.authRetried = true; // the access token expired: renew once, then reconnect
      try {
        await session.renew(await session.access());
        return this.connect();
      } catch (error) {
        return error instanceof SessionExpired ? session.end() : this.reconnectLater();
      }
    }
    if (event.code === 4403 || event.code === 4401) {
      return this.showError(new Error(event.reason || "You are not allowed to watch this workspace."));
    }
    this.setLive(false);
    checkServer();
    this.reconnectLater();
  }

  reconnectLater() {
    if (!this.wantSocket()) return;
    clearTimeout(this.retryTimer);
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  closeSocket() {
    if (this.socket) {
      const socket = this.socket;
      this.socket = null;
      socket.close(1000);
    }
  }

  destroy() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    window.removeEventListener("online", this.onOnline);
    this.offConnection();
    this.closeSocket();
  }

  // -- view --------------------------------------------------------------------------
  build() {
    this.stateText = h("span", { id: "ws-state", class: "state-pill" });
    this.liveText = h("span", { id: "ws-live", class: "live", hidden: true }, "Reconnecting…");
    this.fill = h("div", { class: "progress-fill" });
    this.bar = h("div", { id: "ws-progress", class: "progress", role: "progressbar", "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": "0", "aria-labelledby": "ws-progress-label" }, this.fill);
    this.percent = h("span", { id: "ws-percent" }, "0%");
    this.message = h("p", { id: "ws-message", class: "step", "aria-live": "polite" });
    this.progressBox = h("div", { class: "progress-box" },
      h("div", { class: "progress-head" }, h("span", { id: "ws-progress-label" }, "Progress"), this.percent),
      this.bar, this.message);
    this.logList = h("ol", { id: "ws-log", class: "steps" });
    this.logBox = h("details", { class: "log" }, h("summary", {}, "Steps"), this.logList);
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
    this.runningBox = h("div", { id: "ws-running", class: "running-box", hidden: true },
      h("p", {}, this.link, " ", h("span", { class: "hint", id: "ws-url" })),
      this.passwordField = h("div", { class: "field", id: "ws-password-field" },
        h("label", { for: "ws-password" }, "IDE password"),
        h("div", { class: "inline" }, this.password, this.showButton, this.copyButton), this.copyStatus));
    this.openButton = h("button", { type: "button", id: "ws-open", class: "primary", onclick: () => this.open() },
      "Open my workspace");
    this.stopButton = h("button", { type: "button", id: "ws-stop", onclick: () => this.stop() }, "Stop");
    this.deleteButton = h("button", { type: "button", id: "ws-delete", class: "danger", onclick: () => this.remove() },
      "Delete");
    this.actions = h("div", { class: "actions" }, this.openButton, this.stopButton, this.deleteButton);
    this.notice = h("p", { id: "ws-notice", class: "notice", role: "status" });
    return h("section", { class: "card workspace", id: "workspace", "aria-labelledby": "ws-title" },
      h("div", { class: "panel-head" }, this.heading = h("h2", { id: "ws-title", tabindex: "-1" }, "Your workspace"), this.stateText, this.liveText),
      h("p", { class: "hint" }, "A browser IDE (VS Code) with Python, Node.js, Java and C/C++, kept for you."),
      this.notice, this.progressBox, this.runningBox, this.errorBox, this.actions, this.logBox);
  }

  render() {
    const { state, progress, message, url, password, log } = this.model;
    this.element.dataset.state = state;
    this.stateText.textContent = LABELS[state] || state;
    const showProgress = ["provisioning", "running", "failed", "stopping", "deleting"].includes(state);
    this.progressBox.hidden = !showProgress;
    this.bar.setAttribute("aria-valuenow", String(progress));
    this.bar.setAttribute("aria-valuetext", message ? `${progress}%: ${message}` : `${progress}%`);
    this.bar.classList.toggle("failed", state === "failed");
    this.fill.style.width = `${progress}%`;
    this.percent.textContent = `${progress}%`;
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
      this.showError(new Error(message || "The workspace could not be started."), () => this.open(), "state");
    } else if (state !== "failed" && this.errorBox.dataset.kind === "state") {
      this.clearError();
    }
    this.openButton.hidden = !["none", "stopped", "failed"].includes(state);
    this.openButton.textContent = state === "stopped" ? "Start my workspace" : "Open my workspace";
    if (state === "failed") this.openButton.hidden = true; // the error box has "Try again"
    this.stopButton.hidden = state !== "running";
    this.deleteButton.hidden = !["running", "stopped", "failed"].includes(state);
    this.logList.replaceChildren(...log.map((entry) => h("li", { dataset: { seq: String(entry.seq) } },
      `${entry.message || LABELS[entry.state] || entry.state}`)));
    this.logBox.hidden = log.length === 0;
    this.notice.hidden = state !== "none" || !this.notice.textContent;
  }

  setLive(live) {
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
