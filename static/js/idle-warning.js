// The idle-culling warning on the dashboard: the server sends, on the status
// socket, an event (or a snapshot) with kind "warning", a reason ("idle" or
// "lifetime"), stop_at (ISO time) and a message. This shows the message, a
// live countdown to stop_at and, for an idle warning, a "Keep it running"
// button (POST /api/users/workspace/keepalive/). Any later message that is
// not a warning (the "Kept running" info event, the stop, a new snapshot)
// hides it. A stop by the culler (reason idle or lifetime) leaves its
// message, which says why, in the same place until the workspace starts again.
//
// Hooked into the workspace panel by one call per socket message:
//   idleWarning(panel, data)
import { api } from "./api.js";
import { h } from "./dom.js";

const banners = new WeakMap(); // panel -> IdleWarning
const CULLED = ["idle", "lifetime"]; // the reasons of the culler's stops

/** Feed one status-socket message (snapshot or event) of `panel`. */
export function idleWarning(panel, data) {
  let banner = banners.get(panel);
  if (!banner) {
    banner = new IdleWarning();
    banners.set(panel, banner);
    const head = panel.element.querySelector(".panel-head");
    (head || panel.element.firstChild).after(banner.element);
  }
  banner.handle(data);
}

export class IdleWarning {
  constructor() {
    this.seq = 0;
    this.timer = null;
    this.stopAt = 0;
    this.message = h("p", { id: "ws-idle-message", role: "alert" });
    this.countdown = h("p", { id: "ws-idle-countdown", class: "hint", "aria-live": "off" });
    this.error = h("p", { id: "ws-idle-error", class: "field-error", hidden: true });
    this.keepButton = h("button", { type: "button", id: "ws-keep", class: "primary", onclick: () => this.keep() },
      "Keep it running");
    this.element = h("div", { id: "ws-idle-warning", class: "idle-warning", hidden: true },
      this.message, this.countdown, this.keepButton, this.error);
  }

  handle(data) {
    if (!data || (data.type !== "snapshot" && data.type !== "event")) return;
    if (Number.isInteger(data.seq)) {
      if (data.type === "event" && data.seq <= this.seq) return; // already seen
      this.seq = Math.max(this.seq, data.seq);
    }
    const stopAt = Date.parse(data.stop_at || "");
    if (data.kind === "warning" && data.state === "running" && Number.isFinite(stopAt)) {
      this.show(data.message, stopAt, data.reason === "idle");
    } else if (CULLED.includes(data.reason) && ["stopping", "stopped"].includes(data.state)) {
      this.showReason(data.message); // why it stopped stays in view until it starts again
    } else {
      this.hide();
    }
  }

  showReason(message) {
    const hadFocus = this.element.contains(document.activeElement);
    clearInterval(this.timer);
    this.message.textContent = message;
    this.countdown.hidden = true;
    this.keepButton.hidden = true;
    this.error.hidden = true;
    this.element.hidden = false;
    if (hadFocus) document.getElementById("ws-title")?.focus();
  }

  show(message, stopAt, keepable) {
    this.message.textContent = message || "This workspace will stop soon.";
    this.stopAt = stopAt;
    this.keepButton.hidden = !keepable;
    this.countdown.hidden = false;
    this.error.hidden = true;
    this.element.hidden = false;
    this.tick();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.tick(), 1000);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
    const hadFocus = this.element.contains(document.activeElement);
    this.element.hidden = true;
    // Focus must not fall to the page body when the pressed button goes.
    if (hadFocus) document.getElementById("ws-title")?.focus();
  }

  tick() {
    const left = Math.max(0, Math.round((this.stopAt - Date.now()) / 1000));
    const minutes = Math.floor(left / 60);
    const seconds = String(left % 60).padStart(2, "0");
    this.countdown.textContent = left > 0 ? `Stops in ${minutes}:${seconds}` : "Stopping now…";
  }

  async keep() {
    // Not `disabled`: that would drop the focus to the page body.
    if (this.keepButton.getAttribute("aria-disabled") === "true") return;
    this.keepButton.setAttribute("aria-disabled", "true");
    try {
      await api("/api/users/workspace/keepalive/", { method: "POST" });
      // The server's "Kept running" event hides the banner; a slow socket must not leave it up.
      this.hide();
    } catch (error) {
      this.error.textContent = error.message || "Could not keep the workspace running.";
      this.error.hidden = false;
    } finally {
      this.keepButton.removeAttribute("aria-disabled");
    }
  }
}
