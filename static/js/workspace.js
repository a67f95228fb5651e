// The workspace panel: open, watch provisioning live, use, stop, delete.
//
// Progress comes from the WebSocket /api/users/workspace/status/: a snapshot
// on connect, then every event after `?after=<seq>` (replayed from the
// server's log), then live events. The panel remembers the last seq it has
// shown (and the steps it listed) in sessionStorage, so a reload or a
// dropped connection resumes exactly where it was: no event is shown twice,
// none is skipped, and within one provisioning run the bar never moves back.
//
// A new tab asks the socket first (it closes 4404 when there is no
// workspace), never GET /api/users/workspace/: its 404 would be logged in
// the browser's console as an error for every new student.
//
// Messages are the server's words for the student (operator details never
// reach this socket). Steps are listed under a heading per provisioning run
// with their durations; one live region (role=status) says each new state
// once.
import { api, ApiError, checkServer, onConnectionChange, session, SessionExpired } from "./api.js";
import { idleWarning } from "./idle-warning.js";
import { diskUsage } from "./disk-usage.js";
import { WorkspaceView } from "./workspace-view.js";

const MAX_LOG = 50;
const MAX_BACKOFF_MS = 15000;

function emptyModel() {
  return { state: "none", progress: 0, message: "", seq: 0, url: "", password: "", log: [], run: 0, runStarted: "",
    estimate: null };
}


/**
 * The workspace's origin without a ticket: the owner's answers carry one
 * for clients that open `url` as it is (the original frontend); this page
 * asks /api/users/workspace/open/ for a fresh one at each click instead, and
 * shows no credential in its link.
 */
function withoutTicket(url) {
  const parsed = new URL(url, window.location.href);
  parsed.searchParams.delete("ticket");
  return parsed.toString();
}

export class WorkspacePanel extends WorkspaceView {
  constructor(user) {
    super();
    this.storageKey = `apranova.workspace.${user.id}`;
    this.model = this.restore();
    this.snapshotSeq = 0;
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.closed = false;
    this.authRetried = false;
    this.skew = 0; // client clock minus server clock, from live events (for times "so far")
    this.ticker = null;
    this.lastAnnounced = "";
    this.autoOpenedRun = null;
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
    return { ...emptyModel(), state: "loading" }; // nothing known: the socket's first answer tells
  }

  save() {
    const { state, progress, message, seq, log, run, runStarted, estimate } = this.model;
    if (state === "loading") return;
    // The IDE password is not persisted; it comes again with the socket's snapshot.
    sessionStorage.setItem(this.storageKey, JSON.stringify({ state, progress, message, seq, log, run, runStarted,
      estimate }));
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
    if (snapshot.url) model.url = withoutTicket(snapshot.url);
    if (snapshot.password) model.password = snapshot.password;
    if ("estimate_seconds" in snapshot) model.estimate = snapshot.estimate_seconds;
    const seq = snapshot.seq;
    if (fromSocket && model.state === "loading" && Number.isInteger(seq)) {
      // A first look (nothing remembered): list from the current step, as the snapshot says it.
      model.seq = seq;
      if (!snapshot.internal) model.log = [this.entry(snapshot)];
    }
    if (Number.isInteger(snapshot.run) && (snapshot.run >= model.run || (Number.isInteger(seq) && seq >= model.seq))) {
      model.run = snapshot.run;
      model.runStarted = snapshot.run_started || model.runStarted;
    }
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
    if (!fromSocket) diskUsage(this, snapshot); // the REST object carries the disk use too
    this.save();
    this.render();
    if (model.state === "deleted") this.workspaceGone(model.message);
  }

  /** What the step list keeps of an event (or of a first snapshot). */
  entry(event) {
    const { seq, run, state, progress, message, at, step, kind, internal } = event;
    return { seq, run, state, progress, message, at, step, kind, internal };
  }

  /** One event from the log; ignored if already shown (seq <= last seq). */
  applyEvent(event) {
    const model = this.model;
    if (!Number.isInteger(event.seq) || event.seq <= model.seq) return;
    model.seq = event.seq;
    model.log.push(this.entry(event));
    if (model.log.length > MAX_LOG) model.log.splice(0, model.log.length - MAX_LOG);
    const previous = model.state;
    if (event.seq > this.snapshotSeq) {
      const lag = Date.now() - Date.parse(event.at); // live: sent a moment ago
      if (Number.isFinite(lag) && Math.abs(lag) < 60000) this.skew = lag;
      if (Number.isInteger(event.run) && event.run !== model.run) [model.run, model.runStarted] = [event.run, event.at];
      this.setState(event.state, event.progress, event.message);
    }
    this.save();
    this.render();
    // Events carry no URL or password: fetch them when the IDE comes up (its port may be new).
    if (model.state === "running" && (previous !== "running" || !model.url)) {
      this.refreshDetails().then(() => {
        if (previous === "provisioning" && this.autoOpen.checked && this.autoOpenedRun !== model.run) {
          this.autoOpenedRun = model.run;
          this.openIde(null, { auto: true });
        }
      });
    }
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
  /** The socket's snapshot (or its 4404) says what there is. */
  load() {
    this.connect();
  }

  async refreshDetails() {
    try {
      const workspace = await api("/api/users/workspace/");
      if (workspace.url) this.model.url = withoutTicket(workspace.url);
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

  /**
   * The IDE through the server's proxy: a one-time ticket URL on the
   * workspace's own origin, opened in a new tab. The tab is opened before
   * the request (a popup blocker allows it only within the click) and cut
   * from this page (`opener = null`) before it leaves for the workspace.
   */
  async openIde(event, { auto = false } = {}) {
    event?.preventDefault();
    const tab = window.open("", "_blank");
    if (tab) tab.opener = null;
    this.autoStatus.textContent = "";
    if (!tab && auto) {
      // Outside a click, a popup blocker may refuse: say so rather than leave this page.
      this.autoStatus.textContent = "Your browser blocked opening the IDE by itself: use Open the IDE.";
      this.link.focus();
      return;
    }
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
    return this.act(() => this.create(), () => this.open());
  }

  /** Stop, then start again as a new run (its steps under their own heading). */
  restart() {
    return this.act(async () => {
      this.applySnapshot(await api("/api/users/workspace/stop/", { method: "POST" }));
      await this.create({ skipHistory: false }); // the socket lists the stop's steps too
    }, () => this.restart());
  }

  async create({ skipHistory = true } = {}) {
    const workspace = await api("/api/users/workspace/create/", { method: "POST" });
    const model = this.model;
    if (Number.isInteger(workspace.seq)) {
      // List this run's steps from its first event; older history is not replayed.
      if (skipHistory && model.seq < workspace.seq - 1) model.seq = workspace.seq - 1;
      // A newer answer than anything shown starts a fresh run: the bar
      // starts from the server's value, not from the previous run's.
      const newest = workspace.seq > Math.max(model.seq, this.snapshotSeq);
      if (newest && workspace.state === "provisioning") model.state = "none";
    }
    this.applySnapshot(workspace);
    if (!this.socket) this.connect();
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
    // A first look asks for no replay: the snapshot is the current step.
    const after = this.model.state === "loading" ? "" : `?after=${this.model.seq}`;
    const socket = new WebSocket(`${scheme}//${location.host}/api/users/workspace/status/${after}`);
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
      idleWarning(this, data);
      diskUsage(this, data); // disk quotas: the use, and the 90% / full notices
      this.element.dispatchEvent(new CustomEvent("workspace-message", { detail: data })); // for add-ons
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
    clearInterval(this.ticker);
    window.removeEventListener("online", this.onOnline);
    this.offConnection();
    this.closeSocket();
  }
}
