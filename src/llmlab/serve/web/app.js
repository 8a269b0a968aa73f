// The llmlab chat page: talks to /v1/chat/completions (SSE) like any other client. No build step.
// Conversations live in localStorage; model output is always inserted as text (textContent), never HTML.
// Compare mode: each prompt gets two answers (two samples of one model, n=2, or two served models);
// the user picks A, B, tie or both bad (keys 1-4), optionally edits the better one, and the judgement
// goes to POST /v1/preferences (the server appends it to its --preferences file).
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
    compare: $("compare").checked,
    compare_model: $("compare-model").value,
    annotator: $("annotator").value,
  };
}
function restoreSettings() {
  const s = state.settings || {};
  if (s.system !== undefined) $("system").value = s.system;
  if (s.temperature !== undefined) $("temperature").value = s.temperature;
  if (s.top_p !== undefined) $("top-p").value = s.top_p;
  if (s.max_tokens !== undefined) $("max-tokens").value = s.max_tokens;
  if (s.api_key !== undefined) $("api-key").value = s.api_key;
  if (s.compare !== undefined) $("compare").checked = s.compare;
  if (s.annotator !== undefined) $("annotator").value = s.annotator;
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
  if (m.compare) return renderCompare(m, i);
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
const CHOICES = [["a", "A is better", "1"], ["b", "B is better", "2"], ["tie", "Tie", "3"],
  ["both_bad", "Both bad", "4"]];
function renderCompare(m, i) {
  const cmp = m.compare;
  const div = el("div", "msg assistant compare" + (cmp.choice ? " judged" : ""));
  const panes = el("div", "panes");
  for (const side of ["a", "b"]) {
    const pane = el("div", "pane " + side + (cmp.choice === side ? " chosen" : ""));
    const name = cmp.choice ? " · " + (cmp[side].model || "") : "";  // names hidden until the choice
    pane.append(el("div", "label", side.toUpperCase() + name),
      el("span", "text", cmp[side].content));
    panes.append(pane);
  }
  if (cmp.choice) {  // judged: the turn the conversation goes on from, with the pair folded away
    div.append(el("span", "text", m.content));
    const d = el("details");
    const verdict = CHOICES.find((c) => c[0] === cmp.choice)[1] + (cmp.edited ? " (edited)" : "");
    d.append(el("summary", "verdict", verdict), panes);
    div.append(d);
    return div;
  }
  const edit = el("textarea", "better");
  edit.rows = 2;
  edit.placeholder = "Optional: a better version of the answer you pick";
  const buttons = el("div", "choices");
  for (const [choice, label, key] of CHOICES) {
    const b = el("button", "choice " + choice, label + " (" + key + ")");
    b.type = "button";
    b.disabled = controller !== null;
    b.onclick = () => judge(i, choice, edit.value, status);
    buttons.append(b);
  }
  const status = el("div", "status", cmp.error ? "[error: " + cmp.error + "]" : "");
  div.append(panes, edit, buttons, status);
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

function requestMessages(c, s) {
  const history = c.messages.filter((m) => !m.error).map(({ role, content, tool_calls, tool_call_id }) =>
    Object.assign({ role, content }, tool_calls ? { tool_calls } : {}, tool_call_id ? { tool_call_id } : {}));
  return (s.system ? [{ role: "system", content: s.system }] : []).concat(history);
}

// POST a streaming chat request; each SSE chunk goes to onChunk. Throws the server's error message.
async function streamChat(body, onChunk) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers(), signal: controller.signal, body: JSON.stringify(body),
  });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    throw new Error((err.error && err.error.message) || res.statusText);
  }
  await readEvents(res, (chunk) => {
    if (chunk.error) throw new Error(chunk.error.message);
    onChunk(chunk);
  });
}

async function generate() {
  const c = chat();
  const s = settings();
  state.settings = s;
  const messages = requestMessages(c, s);
  if (s.compare) return generatePair(c, s, messages);
  const reply = { role: "assistant", content: "" };
  c.messages.push(reply);
  const node = renderMessage(reply, c.messages.length - 1);
  $("messages").append(node);
  const textNode = node.querySelector(".text");
  controller = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  try {
    await streamChat({ model: $("model-name").textContent, messages, stream: true,
      temperature: s.temperature, top_p: s.top_p, max_tokens: s.max_tokens }, (chunk) => {
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

// Two answers to one prompt, side by side: one request with n=2 when both come from the same model,
// else one request to each model at once. Which model is A is drawn at random each time, and the names
// stay hidden until the choice, so neither the side nor the name sways it.
async function generatePair(c, s, messages) {
  const models = [$("model-name").textContent, s.compare_model || $("model-name").textContent];
  if (Math.random() < 0.5) models.reverse();
  const sampling = { temperature: s.temperature, top_p: s.top_p, max_tokens: s.max_tokens };
  const cmp = { prompt: messages, sampling, choice: null,
    a: { content: "", model: models[0] }, b: { content: "", model: models[1] } };
  const reply = { role: "assistant", content: "", compare: cmp };
  c.messages.push(reply);
  controller = new AbortController();
  const node = renderCompare(reply, c.messages.length - 1);
  $("messages").append(node);
  const texts = node.querySelectorAll(".pane .text");
  const sides = [cmp.a, cmp.b];
  const add = (i, delta) => {
    if (!delta || !delta.content) return;
    sides[i].content += delta.content;
    texts[i].textContent = sides[i].content;
    $("messages").scrollTop = $("messages").scrollHeight;
  };
  $("stop").disabled = false;
  $("send").disabled = true;
  const body = Object.assign({ messages, stream: true }, sampling);
  try {
    if (cmp.a.model === cmp.b.model) {
      await streamChat(Object.assign({ model: cmp.a.model, n: 2 }, body), (chunk) => {
        for (const ch of chunk.choices) add(ch.index, ch.delta);
      });
    } else {
      await Promise.all(sides.map((side, i) => streamChat(Object.assign({ model: side.model }, body),
        (chunk) => add(i, (chunk.choices[0] || {}).delta))));
    }
  } catch (e) {
    if (e.name !== "AbortError") cmp.error = e.message;
  } finally {
    controller = null;
    $("stop").disabled = true;
    $("send").disabled = false;
    reply.content = cmp.a.content || "[stopped]";  // the conversation goes on from A until a choice
    if (cmp.error && !cmp.a.content) reply.error = true;  // a failed pair is left out of the history
    save();
    render();
    if (document.activeElement) document.activeElement.blur();  // keys 1-4 judge, not type
  }
}

async function judge(i, choice, edited, status) {
  const m = chat().messages[i];
  const cmp = m.compare;
  if (controller || cmp.choice) return;
  const body = { prompt: cmp.prompt, a: cmp.a, b: cmp.b, choice, sampling: cmp.sampling };
  if (edited.trim() && (choice === "a" || choice === "b")) body.edited = edited;
  const annotator = settings().annotator.trim();
  if (annotator) body.annotator = annotator;
  status.textContent = "saving…";
  try {
    const res = await fetch("/v1/preferences", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!res.ok) {
      const err = await res.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || res.statusText);
    }
  } catch (e) {
    status.textContent = "not saved: " + e.message;
    return;
  }
  cmp.choice = choice;
  if (body.edited) cmp.edited = body.edited;
  m.content = body.edited || (choice === "b" ? cmp.b.content : cmp.a.content);
  save();
  render();
}

// Keys 1-4 judge the newest open comparison (unless the user is typing).
document.addEventListener("keydown", (e) => {
  const choice = { 1: "a", 2: "b", 3: "tie", 4: "both_bad" }[e.key];
  if (!choice || e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, textarea, select")) return;
  const open = document.querySelectorAll(".msg.compare:not(.judged) .choice." + choice);
  if (open.length) {
    e.preventDefault();
    open[open.length - 1].click();
  }
});

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
      if (m.ok) showModels((await m.json()).data.map((d) => d.id));
    }
  } catch (e) {
    $("health").textContent = "unreachable";
    $("health").className = "down";
  }
}

function showModels(ids) {
  $("model-name").textContent = ids[0];
  const select = $("compare-model");
  select.replaceChildren(el("option", "", "a 2nd sample of " + ids[0]));
  select.firstChild.value = "";
  for (const id of ids.slice(1)) {
    const o = el("option", "", id);
    o.value = id;
    select.append(o);
  }
  const want = (state.settings || {}).compare_model;
  if (want && ids.includes(want)) select.value = want;
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
for (const id of ["system", "temperature", "top-p", "max-tokens", "api-key", "compare", "compare-model", "annotator"]) {
  $(id).addEventListener("change", () => { state.settings = settings(); save(); refreshStatus(); });
}
restoreSettings();
render();
refreshStatus();
setInterval(refreshStatus, 5000);
