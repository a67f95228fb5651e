// The workspace's disk use on the dashboard (disk quotas): "Storage: 1.2 of
// 2 GiB used" under the panel's heading, from the REST object or the status
// socket's snapshot (disk_used_bytes, disk_size_bytes) and from the disk
// events (disk_used, disk_size). A disk event (kind "warning", reason "disk"
// at 90%, "disk_full" when full) shows its message, which says what to
// delete and whom to ask, until a snapshot says the use fell back.
//
// Hooked into the workspace panel by one call per snapshot or event:
//   diskUsage(panel, data)
import { h } from "./dom.js";

const views = new WeakMap(); // panel -> DiskUsage
const REASONS = ["disk", "disk_full"];

/** "1.2 of 2 GiB" (the unit of the size), as the server words it. */
export function amount(used, size) {
  const units = [["GiB", 1024 ** 3], ["MiB", 1024 ** 2], ["KiB", 1024], ["bytes", 1]];
  const [unit, scale] = units.find(([, s]) => size >= s || s === 1);
  const show = (n) => (n / scale).toFixed(1).replace(/\.0$/, "");
  return `${show(used)} of ${show(size)} ${unit}`;
}

/** Feed one snapshot (socket or REST) or event of `panel`. */
export function diskUsage(panel, data) {
  let view = views.get(panel);
  if (!view) {
    view = new DiskUsage();
    views.set(panel, view);
    const head = panel.element.querySelector(".panel-head");
    (head || panel.element.firstChild).after(view.element);
  }
  view.handle(data);
}

export class DiskUsage {
  constructor() {
    this.figure = h("p", { id: "ws-disk", class: "hint" });
    this.notice = h("p", { id: "ws-disk-notice", class: "disk-notice", role: "alert", hidden: true });
    this.element = h("div", { id: "ws-disk-box", hidden: true }, this.figure, this.notice);
  }

  handle(data) {
    if (!data) return;
    const used = data.disk_used_bytes ?? data.disk_used;
    const size = data.disk_size_bytes ?? data.disk_size;
    if (Number.isFinite(used) && Number.isFinite(size) && size > 0) {
      this.figure.textContent = `Storage: ${amount(used, size)} used`;
      this.element.hidden = false;
    }
    if (data.kind === "warning" && REASONS.includes(data.reason)) {
      this.notice.textContent = data.message;
      this.notice.hidden = false;
      this.element.hidden = false;
    } else if ("disk_used_bytes" in data && Number.isFinite(used) && used < 0.85 * size) {
      this.notice.hidden = true; // a fresh reading: the use fell back
    }
  }
}
