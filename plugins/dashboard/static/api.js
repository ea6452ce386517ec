// Talking to the service: JSON requests, OpenAI-style errors, the /v1/events stream, small DOM helpers.

export class ApiFailure extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.param = error?.param ?? null;
    this.code = error?.code ?? null;
  }
}

const unauthorizedHandlers = [];
export function onUnauthorized(fn) { unauthorizedHandlers.push(fn); }

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) {
    const failure = new ApiFailure(response.status, data?.error ?? { message: text.slice(0, 200) });
    if (response.status === 401 && !headers.Authorization) unauthorizedHandlers.forEach((fn) => fn(failure));
    throw failure;
  }
  return data;
}

export const EVENT_TYPES = ["description", "description.partial", "alert", "source", "describer", "processor",
  "run", "gap"];

// One EventSource on /v1/events: every bus event after event `since` (0: all that are kept);
// the browser reconnects by itself with Last-Event-ID, so no event is missed across a drop.
export function connectEvents(onEvent, onState, since = 0) {
  let source = null;
  let closed = false;
  let last = since;
  const open = () => {
    if (closed) return;
    source = new EventSource(`/v1/events?last_event_id=${last}`);
    source.onopen = () => onState("live");
    source.onerror = () => {
      if (closed) return;
      if (source.readyState === EventSource.CLOSED) {
        onState("down");
        // A closed stream is either an auth failure or a dead server: ask which, then retry.
        api("/dashboard/api/status").then(() => setTimeout(open, 1000), () => setTimeout(open, 3000));
      } else {
        onState("reconnecting");
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, (e) => {
        let event;
        try { event = JSON.parse(e.data); } catch (err) { console.warn("bad event", err); return; }
        if (event.id) last = event.id;
        onEvent(event);
      });
    }
  };
  open();
  return () => { closed = true; source?.close(); };
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function ago(unixSeconds) {
  if (!unixSeconds) return "never";
  const s = Math.max(0, Date.now() / 1000 - unixSeconds);
  if (s < 1) return "just now";
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function clock(unixSeconds) {
  return unixSeconds ? new Date(unixSeconds * 1000).toLocaleTimeString() : "—";
}

export function seconds(value) {
  return value === null || value === undefined ? "—" : `${Number(value).toFixed(2)} s`;
}
