// The workspace panel's step list and times: the steps of each provisioning
// run under a heading with its start time ("Start 2 · 10:41:07"), each
// step's duration, the elapsed time and the server's estimate. Pure
// functions of the panel's model, so the panel stays about state.
import { h } from "./dom.js";

/** 0.4 s, 12 s, 2 min 5 s. */
export function duration(ms) {
  const seconds = Math.max(0, ms) / 1000;
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  if (seconds < 60) return `${Math.round(seconds)} s`;
  const whole = Math.round(seconds);
  return `${Math.floor(whole / 60)} min${whole % 60 ? ` ${whole % 60} s` : ""}`;
}

/** An estimate in words: "about 2 s", "about 1 min". */
export function about(seconds) {
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s`;
  return `about ${Math.round(seconds / 60)} min`;
}

function clock(at) {
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit",
    second: "2-digit" });
}

const ms = (at) => Date.parse(at);
// A failure's first sentence says what happened; what to do is in the error box.
const firstSentence = (text = "") => (text.match(/^.*?\.(?=\s|$)/) || [text])[0];
const ACTIVE = ["provisioning", "stopping", "deleting"];

/** Log entries (oldest first) grouped by run: [{run, entries}], internal ones left out.
 * Consecutive entries of one step (a download's percentages) show as its latest. */
export function runs(log) {
  const groups = [];
  for (const entry of log) {
    if (entry.internal) continue;
    let group = groups[groups.length - 1];
    if (!group || group.run !== entry.run) groups.push(group = { run: entry.run, entries: [] });
    const last = group.entries[group.entries.length - 1];
    if (last && entry.step && last.step === entry.step && entry.state === last.state) {
      group.entries[group.entries.length - 1] = { ...entry, at: last.at, seqs: [...(last.seqs || [last.seq]), entry.seq] };
    } else {
      group.entries.push(entry);
    }
  }
  return groups;
}

/**
 * The step list: a heading per run, each step with its duration (until the
 * next step of its run), the current step of an active run with its time
 * so far. `now` is the server's clock as the client estimates it.
 */
export function stepList(log, state, now) {
  const groups = runs(log);
  return groups.map((group, index) => {
    const newest = index === groups.length - 1;
    const first = group.entries[0];
    const items = group.entries.map((entry, i) => {
      const next = group.entries[i + 1];
      let time = null;
      if (next) {
        time = h("span", { class: "duration" }, ` · ${duration(ms(next.at) - ms(entry.at))}`);
      } else if (newest && ACTIVE.includes(state) && entry.state === state && entry.at) {
        // The step under way: its time so far, moved on every second by the panel.
        time = h("span", { class: "duration", dataset: { from: entry.at } }, ` · ${duration(now - ms(entry.at))} so far`);
      }
      const seqs = (entry.seqs || [entry.seq]).join(" ");
      return h("li", { dataset: { seq: String(entry.seq), seqs, step: entry.step || entry.state } },
        h("span", {}, entry.kind === "failure" ? firstSentence(entry.message) : entry.message || entry.state), time);
    });
    const ready = group.entries.find((entry) => entry.state === "running");
    const title = `Start ${group.run ?? "?"} · ${clock(first.at)}`
      + (ready && first.step !== "running" ? ` · ready in ${duration(ms(ready.at) - ms(first.at))}` : "");
    return h("section", { class: "run", dataset: { run: String(group.run) } },
      h("h3", { class: "run-title" }, title), h("ol", { class: "steps" }, items));
  });
}

/** Under the bar while provisioning: elapsed, and the estimate from recent starts. */
export function timeLine({ state, runStarted, estimate, log = [] }, now) {
  if (state !== "provisioning" || !runStarted) return "";
  const elapsed = (now - ms(runStarted)) / 1000;
  const parts = [`Elapsed ${duration(elapsed * 1000)}`];
  const last = log[log.length - 1];
  if (last && last.step === "ide" && last.state === "provisioning") {
    // The long wait of a cold IDE: how long so far, against the server's limit (in the step's text).
    const limit = (last.message || "").match(/\(up to ([^)]+)\)/);
    parts.push(`waited ${duration(now - ms(last.at))} for the IDE${limit ? ` of up to ${limit[1]}` : ""}`);
  }
  if (Number.isFinite(estimate) && estimate >= 0) {
    parts.push(elapsed > 2 * estimate + 5 ? `taking longer than usual (usually ready in ${about(estimate)})`
      : `usually ready in ${about(estimate)}`);
  }
  return parts.join(" · ");
}

/** What the live region says for the model, or "" for nothing new. */
export function announcement({ state, message, url, password }) {
  if (state === "provisioning") return `Starting: ${(message || "").replace(/: \d+%$/, "")}`;
  // Behind the proxy the IDE has no password of its own (WORKSPACE_IDE_PASSWORD=auto).
  if (state === "running") return url ? (password ? "Running, IDE password available" : "Running, ready to open") : "";
  return { stopping: "Stopping", stopped: "Stopped", deleting: "Deleting" }[state] || "";
}
