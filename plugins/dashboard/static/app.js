// The dashboard: unlock (when the service has an API key), then live view, model, alerts, chat, status.
import { api, ApiFailure, connectEvents, onUnauthorized } from "./api.js";
import { AlertsPanel } from "./alerts.js";
import { ChatPanel } from "./chat.js";
import { LiveView, ModelPanel, renderStatus } from "./panels.js";

const lock = document.getElementById("lock");
const main = document.getElementById("main");
const conn = document.getElementById("conn");
const logout = document.getElementById("logout");
const keyInput = document.getElementById("key");
const keyError = document.getElementById("key-error");

let started = false;
let stopEvents = null;
let timers = [];
let authRequired = false;
let lastEventId = 0; // events already shown: a new connection (after logging in again) resumes here

const live = new LiveView(() => {});
const model = new ModelPanel();
const alerts = new AlertsPanel();
const chat = new ChatPanel(() => live.selected);

function setConn(state) {
  conn.textContent = { live: "live", reconnecting: "reconnecting…", down: "disconnected", locked: "locked" }[state] || state;
  conn.className = `pill ${state === "live" ? "ok" : state === "down" || state === "locked" ? "bad" : ""}`;
}

function showLock(message = "") {
  stop();
  main.hidden = true;
  lock.hidden = false;
  logout.hidden = true;
  keyError.textContent = message;
  setConn("locked");
  keyInput.focus();
}

function stop() {
  started = false;
  stopEvents?.();
  stopEvents = null;
  timers.forEach(clearInterval);
  timers = [];
  live.select(null);
}

async function refreshStatus() {
  try {
    const doc = await api("/dashboard/api/status");
    renderStatus(doc);
    live.update(doc.streams);
  } catch (err) {
    if (!(err instanceof ApiFailure && err.status === 401)) setConn("down");
  }
}

function start(doc) {
  if (started) return;
  started = true;
  lock.hidden = true;
  main.hidden = false;
  logout.hidden = !authRequired;
  renderStatus(doc);
  live.update(doc.streams);
  stopEvents = connectEvents((event) => {
    if (event.id) lastEventId = event.id;
    model.onEvent(event);
    alerts.onEvent(event);
    if (event.type === "source") refreshStatus();
  }, setConn, lastEventId);
  alerts.load();
  timers.push(setInterval(refreshStatus, 2000), setInterval(() => model.tick(), 1000),
    setInterval(() => alerts.enabled && alerts.load(), 5000));
}

onUnauthorized(() => { authRequired = true; showLock(started ? "The session ended; enter the key again." : ""); });

document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  keyError.textContent = "";
  const key = keyInput.value.trim();
  try {
    await api("/dashboard/api/login", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
    keyInput.value = "";
    authRequired = true;
    start(await api("/dashboard/api/status"));
  } catch (err) {
    keyError.textContent = err instanceof ApiFailure && err.status === 401 ? "Wrong key: the service refused it." : `Could not log in: ${err.message}`;
    keyInput.select();
  }
});

logout.addEventListener("click", async () => {
  await api("/dashboard/api/logout", { method: "POST" }).catch(() => null);
  showLock("Logged out.");
});

// Keyboard: "/" jumps to the chat, digits pick a stream.
document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement || e.target instanceof HTMLTextAreaElement) return;
  if (e.key === "/") { e.preventDefault(); document.getElementById("question").focus(); }
  const n = Number(e.key);
  if (n >= 1 && n <= 9) {
    const button = document.querySelectorAll("#streams button")[n - 1];
    if (button) button.click();
  }
});

// Ask first (a public route) so that a locked page does not begin with a refused request.
api("/dashboard/api/session").then((s) => {
  authRequired = s.auth_required;
  if (s.auth_required && !s.session) return showLock();
  return api("/dashboard/api/status").then(start);
}).catch((err) => {
  if (!(err instanceof ApiFailure && err.status === 401)) {
    setConn("down");
    main.hidden = false;
  }
});
