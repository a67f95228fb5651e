// The API client: one fetch wrapper, the session's tokens, and the
// connection state shown in the "server unreachable" banner.
//
// Token handling (why it is kept this way):
// * The access token lives only in memory (a module variable). It is what
//   every request carries, and keeping it out of storage means a script
//   reading localStorage/sessionStorage never sees a usable short-lived token.
// * The refresh token is kept in sessionStorage so that a reload (or a
//   network blip that reloads the page) keeps the user logged in. Unlike
//   localStorage it is scoped to this tab and is dropped when the tab is
//   closed. The contract returns tokens in JSON bodies and the API takes
//   Bearer tokens, so an httpOnly cookie is not an option here; the strict
//   Content-Security-Policy (no inline or third-party scripts) is what keeps
//   other scripts from reading it.
// * Refresh tokens rotate: each refresh kills the old one. Two requests
//   that get a 401 at the same moment must therefore share ONE refresh
//   (`refreshing`), or the second would present a dead token and log the
//   user out.
// * On a 401 the client refreshes once and retries once; if that fails the
//   session is over and the app sends the user to the login page.
// * Several tabs of one login: a duplicated tab (or one this page opens)
//   starts with a copy of this tab's sessionStorage, so the same refresh
//   token. Rotations are therefore serialized across tabs with a Web Lock
//   and announced on a BroadcastChannel; a tab holding the old token takes
//   the new pair. Otherwise its next refresh would present a dead token,
//   which the server treats as theft and answers by revoking the login.
//   (Known limit: a tab caught mid-reload at the instant another rotates
//   misses the message; its refresh is then refused and it asks to log in.)

const REFRESH_KEY = "apranova.refresh";
const USER_KEY = "apranova.user";

let accessToken = null;
let refreshing = null;
let onExpired = () => {};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.message || body.error)) || `Request failed (${status})`);
    this.status = status;
    this.body = body || {};
  }

  /** Per-field messages, `{field: [msg, ...]}`, from the contract's format. */
  get fields() {
    const source = this.body.details && typeof this.body.details === "object" && !Array.isArray(this.body.details)
      ? this.body.details : this.body;
    const fields = {};
    for (const [key, value] of Object.entries(source)) {
      if (Array.isArray(value) && !["error", "message", "details"].includes(key)) fields[key] = value.map(String);
    }
    return fields;
  }
}

/** The server could not be reached at all (down, or the network is). */
export class NetworkError extends Error {
  constructor() {
    super("Cannot reach the ApraNova server. Check your connection; we will keep trying.");
  }
}

export class SessionExpired extends Error {
  constructor() {
    super("Your session has ended. Please log in again.");
  }
}

// -- connection state (the banner) -------------------------------------------
const connectionListeners = new Set();
let serverDown = false;
let healthTimer = null;

export function onConnectionChange(listener) {
  connectionListeners.add(listener);
  return () => connectionListeners.delete(listener);
}

function setServerDown(down) {
  if (down === serverDown) return;
  serverDown = down;
  for (const listener of connectionListeners) listener(down);
  if (down) pollHealth(1);
}

/** While the server is unreachable, ask /health with backoff until it answers. */
function pollHealth(attempt) {
  clearTimeout(healthTimer);
  healthTimer = setTimeout(async () => {
    try {
      const response = await fetch("/health", { cache: "no-store" });
      if (response.ok) return setServerDown(false);
    } catch { /* still down */ }
    pollHealth(attempt + 1);
  }, Math.min(10000, 1000 * attempt));
}

/** After a WebSocket drop: is it the server that is gone? */
export async function checkServer() {
  try {
    const response = await fetch("/health", { cache: "no-store" });
    setServerDown(!response.ok && response.status >= 502);
  } catch {
    setServerDown(true);
  }
}

// -- tabs of one login ------------------------------------------------------------
const tabs = typeof BroadcastChannel === "function" ? new BroadcastChannel("apranova-auth") : null;
if (tabs) {
  tabs.addEventListener("message", ({ data }) => {
    if (!data || data.old !== sessionStorage.getItem(REFRESH_KEY)) return; // another login
    if (data.type === "rotated") {
      sessionStorage.setItem(REFRESH_KEY, data.refresh);
      accessToken = data.access;
    } else if (data.type === "ended") {
      accessToken = null;
      sessionStorage.removeItem(REFRESH_KEY);
      onExpired();
    }
  });
}

/** Run fn holding the tabs' refresh lock (where the browser has Web Locks). */
function withRefreshLock(fn) {
  return navigator.locks ? navigator.locks.request("apranova-refresh", fn) : fn();
}

// -- session -----------------------------------------------------------------
export const session = {
  get user() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  get loggedIn() {
    return Boolean(sessionStorage.getItem(REFRESH_KEY));
  },
  get refreshToken() {
    return sessionStorage.getItem(REFRESH_KEY);
  },
  start({ access, refresh, user }) {
    accessToken = access;
    sessionStorage.setItem(REFRESH_KEY, refresh);
    if (user) sessionStorage.setItem(USER_KEY, JSON.stringify(user));
  },
  setUser(user) {
    sessionStorage.setItem(USER_KEY, JSON.stringify({ ...(this.user || {}), ...user }));
  },
  clear() {
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    if (tabs && refresh) tabs.postMessage({ type: "ended", old: refresh });
    accessToken = null;
    sessionStorage.removeItem(REFRESH_KEY);
    sessionStorage.removeItem(USER_KEY);
  },
  onExpired(handler) {
    onExpired = handler;
  },
  /** The login is over (refused refresh): forget it and go to the login page. */
  end() {
    this.clear();
    onExpired();
  },
  /** A usable access token (refreshing first after a reload). */
  async access() {
    if (accessToken) return accessToken;
    return refreshAccess(null);
  },
  /** The token `stale` was refused (401): get a new one, sharing any refresh in flight. */
  async renew(stale) {
    return refreshAccess(stale);
  },
};

async function refreshAccess(stale) {
  if (accessToken && accessToken !== stale) return accessToken; // another request already refreshed
  if (!refreshing) {
    refreshing = withRefreshLock(async () => {
      // Another tab may have rotated our token while we waited for the lock.
      if (accessToken && accessToken !== stale) return accessToken;
      const refresh = sessionStorage.getItem(REFRESH_KEY);
      if (!refresh) throw new SessionExpired();
      try {
        const pair = await send("/api/auth/token/refresh/", { method: "POST", body: { refresh } });
        accessToken = pair.access;
        sessionStorage.setItem(REFRESH_KEY, pair.refresh);
        if (tabs) tabs.postMessage({ type: "rotated", old: refresh, refresh: pair.refresh, access: pair.access });
        return accessToken;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 401 || error.status === 400)) {
          throw new SessionExpired();
        }
        throw error;
      }
    }).finally(() => { refreshing = null; });
  }
  return refreshing;
}

function expire() {
  session.end();
  return new SessionExpired();
}

// -- requests ------------------------------------------------------------------
async function send(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, {
      method, headers, cache: "no-store", credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    setServerDown(true);
    throw new NetworkError();
  }
  let data = null;
  try {
    data = await response.json();
  } catch { /* not JSON: a proxy's error page */ }
  if (data === null && [502, 503, 504].includes(response.status)) {
    setServerDown(true);
    throw new NetworkError();
  }
  setServerDown(false);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/**
 * Call the API. `body` may be a function, evaluated for each attempt (the
 * logout body must carry the refresh token current at the retry).
 */
export async function api(path, { method = "GET", body, auth = true } = {}) {
  const bodyFor = () => (typeof body === "function" ? body() : body);
  if (!auth) return send(path, { method, body: bodyFor() });
  let token;
  try {
    token = await session.access();
  } catch (error) {
    throw error instanceof SessionExpired ? expire() : error;
  }
  try {
    return await send(path, { method, body: bodyFor(), token });
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
  }
  try {
    token = await session.renew(token);
    return await send(path, { method, body: bodyFor(), token });
  } catch (error) {
    if (error instanceof SessionExpired || (error instanceof ApiError && error.status === 401)) throw expire();
    throw error;
  }
}

/** The page's public configuration (tracks), put in by the server. */
export function config() {
  const meta = document.querySelector('meta[name="apranova-config"]');
  try {
    return JSON.parse(meta ? meta.content : "{}");
  } catch {
    return {};
  }
}
