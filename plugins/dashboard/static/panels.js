// Live view, what the model says, and status.
import { ago, clock, el, seconds } from "./api.js";

// ---- live view ---------------------------------------------------------------------------

export class LiveView {
  constructor(onSelect) {
    this.big = document.getElementById("big");
    this.caption = document.getElementById("big-caption");
    this.list = document.getElementById("streams");
    this.selected = null;
    this.onSelect = onSelect;
    this.items = new Map();
    this.thumbTick = 0;
  }

  select(id) {
    if (this.selected === id) return;
    this.selected = id;
    if (id === null) {
      this.big.hidden = true;
      this.big.removeAttribute("src");
    } else {
      this.big.hidden = false;
      this.big.alt = `live video of stream ${id}`;
      this.big.src = `/dashboard/api/streams/${encodeURIComponent(id)}/mjpeg`;
    }
    for (const [sid, item] of this.items) item.button.setAttribute("aria-pressed", String(sid === id));
    this.onSelect(id);
  }

  update(streams) {
    const ids = new Set(streams.map((s) => s.id));
    for (const [id, item] of this.items) {
      if (!ids.has(id)) { item.li.remove(); this.items.delete(id); }
    }
    this.thumbTick += 1;
    for (const s of streams) {
      let item = this.items.get(s.id);
      if (!item) {
        const thumb = el("img", { alt: "", width: 160, height: 120 });
        const stats = el("span", { class: "stats" });
        const pipeline = el("span", { class: "pipeline" });
        const button = el("button", { type: "button", "aria-pressed": "false", "data-stream": s.id,
          onclick: () => this.select(s.id) }, thumb, el("strong", { text: s.id }), stats, pipeline);
        item = { li: el("li", {}, button), button, thumb, stats, pipeline };
        this.items.set(s.id, item);
        this.list.append(item.li);
      }
      const size = s.width && s.height ? `${s.width}×${s.height}` : "size unknown";
      const fps = s.measured_fps ?? s.fps;
      item.stats.replaceChildren(
        el("span", { class: `state-${s.state}`, text: s.state }), ` · ${size} · `,
        `${fps ? Number(fps).toFixed(1) : "—"} fps · ${s.dropped} dropped`);
      const work = pipelineText(s.pipeline);
      item.pipeline.textContent = work;
      item.pipeline.hidden = !work;
      // Thumbnails are stills refreshed every few seconds: only the big view holds a connection.
      if (s.state === "live" && (this.thumbTick % 3 === 1 || !item.thumb.src)) {
        item.thumb.src = `/v1/streams/${encodeURIComponent(s.id)}/frame.jpg?allow_stale=true&t=${Date.now()}`;
      }
      if (s.id === this.selected) {
        this.caption.replaceChildren(el("strong", { text: s.id }), ` — ${s.url} · `,
          el("span", { class: `state-${s.state}`, text: s.state }), ` · ${size} · `,
          `${fps ? Number(fps).toFixed(1) : "—"} fps · ${s.frames} frames · ${s.dropped} dropped`,
          work ? ` · ${work}` : "", s.error ? ` · ${s.error}` : "");
      }
    }
    if (this.selected !== null && !ids.has(this.selected)) this.select(null);
    if (this.selected === null && streams.length) this.select(streams[0].id);
    if (!streams.length) this.caption.textContent = "No stream open. Open one with POST /v1/streams or -s.";
  }
}

// What the pipeline does with a stream's frames: its rate and the latency from capture to the outputs
// (the /metrics series framelens_frames_total and framelens_frame_latency_seconds, read by the status API).
function pipelineText(p) {
  if (!p) return "";
  const rate = p.fps === null ? "—" : Number(p.fps).toFixed(1);
  const latency = p.latency_ms === null ? "—" : Number(p.latency_ms).toFixed(p.latency_ms < 10 ? 1 : 0);
  return `processed ${rate} fps · ${latency} ms latency`;
}

// ---- what the model says -----------------------------------------------------------------

export class ModelPanel {
  constructor() {
    this.box = document.getElementById("describers");
    this.timeline = document.getElementById("timeline");
    this.cards = new Map();
  }

  card(name) {
    let card = this.cards.get(name);
    if (!card) {
      if (!this.cards.size) this.box.replaceChildren();
      const text = el("p", { class: "text" });
      const meta = el("p", { class: "meta" });
      const root = el("article", { class: "describer", "data-describer": name }, el("strong", { text: name }), text, meta);
      card = { root, text, meta, answeredAt: null, latency: null, model: "", error: null };
      this.cards.set(name, card);
      this.box.append(root);
    }
    return card;
  }

  onEvent(event) {
    const p = event.payload || {};
    if (event.type === "description" || event.type === "description.partial") {
      const card = this.card(p.describer || "describe");
      const partial = event.type === "description.partial";
      card.root.classList.toggle("partial", partial);
      card.text.textContent = p.text || "";
      card.text.classList.remove("error");
      card.answeredAt = p.answered_at;
      card.model = p.model || card.model;
      if (!partial) {
        card.latency = p.latency_s;
        this.timeline.prepend(el("li", {}, el("span", { class: "meta", text: `${clock(p.answered_at)} · ${p.describer} · ` }),
          p.text || ""));
        while (this.timeline.children.length > 300) this.timeline.lastChild.remove();
      }
      this.refresh(card);
    } else if (event.type === "describer") {
      const card = this.card(p.describer || "describe");
      if (p.state === "error") {
        card.text.textContent = p.message || "the backend failed";
        card.text.classList.add("error");
      }
    }
  }

  refresh(card) {
    const parts = [];
    if (card.model) parts.push(card.model);
    parts.push(`answered ${ago(card.answeredAt)}`);
    if (card.latency !== null && card.latency !== undefined) parts.push(`latency ${seconds(card.latency)}`);
    card.meta.textContent = parts.join(" · ");
  }

  tick() { for (const card of this.cards.values()) this.refresh(card); }
}

// ---- status -------------------------------------------------------------------------------

export function renderStatus(doc) {
  const list = document.getElementById("status-list");
  const health = doc.health || {};
  const rows = [
    ["Backend", doc.backend],
    ["Model", doc.model || "not known yet"],
    ["Health", health.ready ? "ready" : `not ready: ${health.detail || "unknown"}`],
    ["Requests in flight", `${doc.in_flight.running} running, ${doc.in_flight.waiting} waiting`],
    ["Requests served", String(Math.round(doc.in_flight.requests))],
    ["Streams", String(doc.streams.length)],
    ["Event clients", String(doc.events.clients)],
  ];
  list.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  list.querySelector("dd:nth-of-type(3)").className = health.ready ? "state-live" : "state-lost";
  const errors = document.getElementById("errors");
  const items = (doc.errors || []).slice(-30).reverse();
  errors.replaceChildren(...(items.length ? items.map((e) => el("li", { class: `level-${e.level}` },
    el("span", { class: "meta", text: `${clock(e.time)} ${e.level} ` }), e.message))
    : [el("li", { class: "muted", text: "none" })]));
}
