// Alerts: the rules through /v1/alerts (add, edit, delete) and the history of transitions.
import { ApiFailure, ago, api, clock, el } from "./api.js";

const FIELDS = ["id", "prompt", "interval", "cooldown", "on_frames", "off_frames", "severity"];
const NUMBERS = new Set(["interval", "cooldown", "on_frames", "off_frames"]);

function snapshotUrl(p) {
  if (p.snapshot_base64) return `data:${p.snapshot_type || "image/jpeg"};base64,${p.snapshot_base64}`;
  if (p.snapshot_path) {
    const name = String(p.snapshot_path).split(/[\\/]/).pop();
    return `/dashboard/api/snapshots/${encodeURIComponent(name)}`;
  }
  return null;
}

export class AlertsPanel {
  constructor() {
    this.body = document.querySelector("#rules tbody");
    this.note = document.getElementById("alerts-note");
    this.form = document.getElementById("rule-form");
    this.legend = document.getElementById("rule-legend");
    this.submit = document.getElementById("rule-submit");
    this.cancel = document.getElementById("rule-cancel");
    this.history = document.getElementById("history");
    this.editing = null;
    this.rules = [];
    this.enabled = true;
    this.pending = null;
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.save(); });
    this.cancel.addEventListener("click", () => this.stopEditing());
  }

  async load() {
    try {
      const doc = await api("/v1/alerts");
      this.enabled = true;
      this.form.hidden = false;
      this.rules = doc.data;
      const down = doc.backend_state === "down" ? " — the backend is down, states are unknown" : "";
      this.note.textContent = `${doc.data.length} of at most ${doc.max_rules} rules · backend ${doc.backend}${down}`;
      this.render();
    } catch (err) {
      if (err instanceof ApiFailure && err.status === 404) {
        this.enabled = false;
        this.form.hidden = true;
        this.note.textContent = `${err.message}`;
        this.body.replaceChildren();
      } else if (!(err instanceof ApiFailure && err.status === 401)) {
        this.note.textContent = `Could not read the rules: ${err.message}`;
      }
    }
  }

  // Many transitions arrive together; one reload covers them.
  reloadSoon() {
    if (this.pending) return;
    this.pending = setTimeout(() => { this.pending = null; this.load(); }, 150);
  }

  render() {
    this.body.replaceChildren(...this.rules.map((r) => {
      const confidence = r.confidence ?? null;
      return el("tr", { class: r.state === "on" ? "is-on" : "", "data-rule": r.id },
        el("td", { class: "prompt" }, el("strong", { text: r.id }), el("br"), r.prompt,
          r.last_error ? el("div", { class: "meta", text: r.last_error }) : null),
        el("td", {}, el("span", { class: `badge ${r.state}`, "data-state": r.state, text: r.state })),
        el("td", { text: confidence === null ? "not given" : `${Math.round(confidence * 100)} %` }),
        el("td", { title: clock(r.since), text: r.since ? ago(r.since) : "never" }),
        el("td", { text: `${r.cooldown} s` }),
        el("td", {}, el("div", { class: "actions" },
          el("button", { type: "button", class: "secondary", "aria-label": `edit rule ${r.id}`, onclick: () => this.edit(r), text: "Edit" }),
          el("button", { type: "button", class: "secondary", "aria-label": `delete rule ${r.id}`, onclick: () => this.remove(r.id), text: "Delete" }))));
    }));
    if (!this.rules.length) this.body.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No rules yet: add one below." })));
  }

  clearErrors() {
    for (const node of this.form.querySelectorAll(".field-error")) node.textContent = "";
    for (const node of this.form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
  }

  showError(err) {
    // The API names the field at fault: "alerts[0].interval", "alerts.0.on_frames", "prompt".
    const parts = String(err.param || "").split(/[.[\]]+/).filter(Boolean);
    const field = [...parts].reverse().find((p) => FIELDS.includes(p.replace(/-/g, "_")))?.replace(/-/g, "_");
    const target = field ? document.getElementById(`err-${field}`) : document.getElementById("err-form");
    // Next to its field the message needs no field path ("alerts[0].on_frames: ...").
    const prefix = `${err.param}: `;
    target.textContent = field && err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    if (field) {
      const input = this.form.elements[field];
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  rule() {
    const rule = {};
    for (const name of FIELDS) {
      const raw = String(this.form.elements[name].value).trim();
      if (raw === "") continue;
      // Numbers go as numbers; anything else goes as typed so that the API's own check explains it.
      rule[name] = NUMBERS.has(name) && raw !== "" && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
    }
    if (!("prompt" in rule)) rule.prompt = "";
    if (!("id" in rule) && !this.editing) rule.id = this.newId(rule.prompt);
    return rule;
  }

  // Rule objects need an id; one made from the question reads well in URLs and MQTT topics.
  newId(prompt) {
    const base = String(prompt).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "").slice(0, 40) || "rule";
    const taken = new Set(this.rules.map((r) => r.id));
    let id = base;
    for (let n = 2; taken.has(id); n += 1) id = `${base}-${n}`;
    return id;
  }

  async save() {
    this.clearErrors();
    const rule = this.rule();
    this.submit.disabled = true;
    try {
      if (this.editing) {
        const { id, ...rest } = rule;
        await api(`/v1/alerts/${encodeURIComponent(this.editing)}`, { method: "PUT", body: rest });
        this.stopEditing();
      } else {
        await api("/v1/alerts", { method: "POST", body: { alerts: [rule], mode: "add" } });
        this.form.reset();
      }
      await this.load();
    } catch (err) {
      if (err instanceof ApiFailure) this.showError(err);
      else document.getElementById("err-form").textContent = String(err);
    } finally {
      this.submit.disabled = false;
    }
  }

  edit(rule) {
    this.clearErrors();
    this.editing = rule.id;
    for (const name of FIELDS) this.form.elements[name].value = rule[name] ?? "";
    this.form.elements.id.disabled = true;
    this.legend.textContent = `Edit rule ${rule.id}`;
    this.submit.textContent = "Save rule";
    this.cancel.hidden = false;
    this.form.elements.prompt.focus();
  }

  stopEditing() {
    this.editing = null;
    this.form.reset();
    this.form.elements.id.disabled = false;
    this.legend.textContent = "Add a rule";
    this.submit.textContent = "Add rule";
    this.cancel.hidden = true;
    this.clearErrors();
  }

  async remove(id) {
    try {
      await api(`/v1/alerts/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (this.editing === id) this.stopEditing();
    } catch (err) {
      this.note.textContent = `Could not delete ${id}: ${err.message}`;
    }
    await this.load();
  }

  onEvent(event) {
    if (event.type !== "alert") return;
    const p = event.payload || {};
    const url = p.state === "on" ? snapshotUrl(p) : null;
    const text = p.state === "deleted" ? `${p.rule} deleted` : `${p.rule}: ${p.previous} → ${p.state}`;
    const item = el("li", { "data-rule": p.rule, "data-state": p.state },
      url ? el("img", { src: url, alt: `frame when ${p.rule} turned on`, loading: "lazy" }) : null,
      el("div", {}, el("strong", { text }), el("br"),
        el("span", { class: "meta", text: `${clock(event.time)} · ${p.prompt || ""}${p.suppressed ? " · in cooldown" : ""}` })));
    this.history.prepend(item);
    while (this.history.children.length > 200) this.history.lastChild.remove();
    if (this.enabled) this.reloadSoon();
  }
}
