// Chat with the camera: streamed answers from /v1/chat/completions about stream://ID, multi-turn.
import { el } from "./api.js";

async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data) yield data;
    }
  }
}

export class ChatPanel {
  constructor(getStream) {
    this.getStream = getStream;
    this.log = document.getElementById("chat-log");
    this.form = document.getElementById("chat-form");
    this.input = document.getElementById("question");
    this.ask = document.getElementById("ask");
    this.history = [];
    this.form.addEventListener("submit", (e) => { e.preventDefault(); this.send(); });
    document.getElementById("chat-clear").addEventListener("click", () => {
      this.history = [];
      this.log.replaceChildren();
      this.input.focus();
    });
  }

  async frame(stream) {
    // The frame shown beside the question: the stream's newest frame when it was asked.
    try {
      const response = await fetch(`/v1/streams/${encodeURIComponent(stream)}/frame.jpg?allow_stale=true`,
        { credentials: "same-origin" });
      if (!response.ok) return null;
      return URL.createObjectURL(await response.blob());
    } catch { return null; }
  }

  async send() {
    const question = this.input.value.trim();
    if (!question) return;
    const stream = this.getStream();
    const userMsg = el("div", { class: "msg user", text: question });
    const answer = el("div", { class: "msg assistant", "aria-busy": "true" });
    const picture = el("img", { alt: stream ? `frame of ${stream} when asked` : "" });
    this.log.append(el("div", { class: "turn" }, el("div", {}, userMsg, answer), stream ? picture : el("span")));
    this.log.scrollTop = this.log.scrollHeight;
    if (!stream) {
      answer.classList.add("error");
      answer.textContent = "No stream is open to ask about.";
      answer.removeAttribute("aria-busy");
      return;
    }
    this.input.value = "";
    this.ask.disabled = true;
    const [url] = await Promise.all([this.frame(stream)]);
    if (url) picture.src = url;
    const content = [{ type: "text", text: question }, { type: "image_url", image_url: { url: `stream://${stream}` } }];
    const messages = [...this.history, { role: "user", content }];
    let text = "";
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ messages, stream: true }),
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new Error(body?.error?.message || `HTTP ${response.status}`);
      }
      for await (const data of sseData(response)) {
        if (data === "[DONE]") break;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const piece = chunk.choices?.[0]?.delta?.content || "";
        if (piece) {
          text += piece;
          answer.textContent = text;
          this.log.scrollTop = this.log.scrollHeight;
        }
      }
      // Earlier turns go back as text: the newest question carries the newest frame.
      this.history.push({ role: "user", content: question }, { role: "assistant", content: text });
    } catch (err) {
      answer.classList.add("error");
      answer.textContent = text ? `${text}\n[${err.message}]` : err.message;
    } finally {
      answer.removeAttribute("aria-busy");
      this.ask.disabled = false;
      this.input.focus();
    }
  }
}
