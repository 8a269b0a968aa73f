// The llmlab chat page: talks to /v1/chat/completions (SSE) like any other client. No build step.
// Conversations live in localStorage; model output is always inserted as text (textContent), never HTML.
"use strict";

const STORE = "llmlab-chat-v1";
const $ = (id) => document.getElementById(id);
let state = load();
let controller = null; // the AbortController of the reply being streamed

function load() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE));
    if (s && Array.isArray(s.chats) && s.chats.length) return s;
  } catch (e) { /* a corrupt store starts afresh */ }
  return { chats: [newChat()], current: 0, settings: {} };
}
function save() { localStorage.setItem(STORE, JSON.stringify(state)); }
function newChat() { return { title: "New chat", messages: [] }; }
function chat() { return state.chats[state.current]; }

function settings() {
  return {
    system: $("system").value,
    temperature: parseFloat($("temperature").value),
    top_p: parseFloat($("top-p").value),
    max_tokens: parseInt($("max-tokens").value, 10),
    api_key: $("api-key").value,
  };
}
function restoreSettings() {
  const s = state.settings || {};
  if (s.system !== undefined) $("system").value = s.system;
  if (s.temperature !== undefined) $("temperature").value = s.temperature;
  if (s.top_p !== undefined) $("top-p").value = s.top_p;
  if (s.max_tokens !== undefined) $("max-tokens").value = s.max_tokens;
  if (s.api_key !== undefined) $("api-key").value = s.api_key;
}
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = settings().api_key;
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

// ---- rendering -----------------------------------------------------------------------------------
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function renderChats() {
  const ul = $("chats");
  ul.replaceChildren();
  state.chats.forEach((c, i) => {
    const li = el("li", i === state.current ? "current" : "");
    const b = el("button", "", c.title);
    b.type = "button";
    b.onclick = () => { if (!controller) { state.current = i; save(); render(); } };
    li.append(b);
    ul.append(li);
  });
}
function renderMessage(m, i) {
  const div = el("div", "msg " + m.role + (m.error ? " error" : ""));
  if (m.role === "tool") {
    const d = el("details");
    d.append(el("summary", "", "tool result" + (m.name ? ": " + m.name : "")), el("pre", "", m.content));
    div.append(d);
    return div;
  }
  div.append(el("span", "text", m.content || ""));
  for (const call of m.tool_calls || []) {
    const d = el("details");
    d.append(el("summary", "", "tool call: " + call.function.name), el("pre", "", call.function.arguments));
    div.append(d);
  }
  if (m.role === "user") {
    const b = el("button", "edit", "Edit");
    b.type = "button";
    b.onclick = () => editTurn(i);
    div.append(b);
  }
  return div;
}
function render() {
  renderChats();
  const box = $("messages");
  box.replaceChildren(...chat().messages.map(renderMessage));
  box.scrollTop = box.scrollHeight;
}

// ---- sending and streaming ----------------------------------------------------------------------
async function send(text) {
  if (!text.trim() || controller) return;
  const c = chat();
  if (!c.messages.length) c.title = text.slice(0, 40);
  c.messages.push({ role: "user", content: text });
  save();
  render();
  await generate();
}

function editTurn(i) {
  if (controller) return;
  const m = chat().messages[i];
  const text = prompt("Edit your message (the replies after it are regenerated):", m.content);
  if (text === null || !text.trim()) return;
  chat().messages = chat().messages.slice(0, i);
  send(text);
}

async function generate() {
  const c = chat();
  const s = settings();
  state.settings = s;
  const history = c.messages.filter((m) => !m.error).map(({ role, content, tool_calls, tool_call_id }) =>
    Object.assign({ role, content }, tool_calls ? { tool_calls } : {}, tool_call_id ? { tool_call_id } : {}));
  const messages = (s.system ? [{ role: "system", content: s.system }] : []).concat(history);
  const reply = { role: "assistant", content: "" };
  c.messages.push(reply);
  const node = renderMessage(reply, c.messages.length - 1);
  $("messages").append(node);
  const textNode = node.querySelector(".text");
  controller = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  try {
    const res = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({ model: $("model-name").textContent, messages, stream: true,
        temperature: s.temperature, top_p: s.top_p, max_tokens: s.max_tokens }),
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error((body.error && body.error.message) || res.statusText);
    }
    await readEvents(res, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = (chunk.choices[0] || {}).delta || {};
      if (delta.content) {
        reply.content += delta.content;
        textNode.textContent = reply.content;
      }
      for (const tc of delta.tool_calls || []) {
        reply.tool_calls = reply.tool_calls || [];
        const call = reply.tool_calls[tc.index] ||
          (reply.tool_calls[tc.index] = { id: tc.id, type: "function", function: { name: "", arguments: "" } });
        if (tc.function && tc.function.name) call.function.name = tc.function.name;
        if (tc.function && tc.function.arguments) call.function.arguments += tc.function.arguments;
      }
      $("messages").scrollTop = $("messages").scrollHeight;
    });
  } catch (e) {
    if (e.name !== "AbortError") {
      reply.error = true;
      reply.content += (reply.content ? "\n" : "") + "[error: " + e.message + "]";
    }
  } finally {
    controller = null;
    $("stop").disabled = true;
    $("send").disabled = false;
    if (!reply.content && !reply.tool_calls) reply.content = "[stopped]";
    save();
    render();
  }
}

async function readEvents(res, onChunk) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onChunk(JSON.parse(data));
      }
    }
  }
}

// ---- status ---------------------------------------------------------------------------------------
async function refreshStatus() {
  try {
    const h = await fetch("/health");
    $("health").textContent = h.ok ? "ready" : "loading";
    $("health").className = h.ok ? "ok" : "down";
    if (h.ok && $("model-name").textContent === "…") {
      const m = await fetch("/v1/models", { headers: headers() });
      if (m.ok) $("model-name").textContent = (await m.json()).data[0].id;
    }
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "down";
  }
}

// ---- wiring ---------------------------------------------------------------------------------------
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => {
  if (controller) return;
  state.chats.unshift(newChat());
  state.current = 0;
  save();
  render();
});
for (const id of ["system", "temperature", "top-p", "max-tokens", "api-key"]) {
  $(id).addEventListener("change", () => { state.settings = settings(); save(); refreshStatus(); });
}
restoreSettings();
render();
refreshStatus();
setInterval(refreshStatus, 5000);
