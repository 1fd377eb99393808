// The chat page: plain JavaScript over the example's JSON and SSE endpoints.
"use strict";

const PAGE = 30; // messages per history page
const $ = (id) => document.getElementById(id);
let user = localStorage.getItem("promptkit-user");
let current = null; // the open conversation's id
let busy = false;
let known = new Set(); // the user's conversations, as the sidebar last listed them

function newId() {
  return "c-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2, 7);
}

// What a person should read for each refusal; the server's message follows.
function readable(status, body, retryAfter) {
  const said = body && body.message ? body.message : "";
  const wait = retryAfter ? ` Try again in ${retryAfter} s.` : "";
  const code = body && body.error;
  // An error event mid-stream has no status of its own: take it from the code.
  if (status === 200) status = { session_busy: 429, provider_error: 502, store_unavailable: 503 }[code] || 200;
  if (status === 429) return `This conversation is busy with another reply.${wait}`;
  if (status === 503 && body && body.error === "provider_rate_limited")
    return `The model provider is rate limiting us.${wait}`;
  if (status === 503) return `The conversation store is unreachable; nothing was saved.${wait}`;
  if (status === 502) return `The model provider failed: ${said}`;
  if (body && body.error === "commit_outcome_unknown")
    return "The reply may or may not have been saved; the history was reloaded.";
  return said || `The server answered ${status}.`;
}

class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(readable(status, body, retryAfter));
    this.status = status;
    this.body = body;
  }
}

function showStatus(text) {
  $("status").textContent = text || "";
  $("status").hidden = !text;
}

async function api(method, path, body) {
  const headers = { "X-User": user };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let data = null;
    try { data = await r.json(); } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, data, r.headers.get("Retry-After"));
  }
  return r;
}

const sid = (id) => "/sessions/" + encodeURIComponent(id);

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content))
    return content.map((p) => (p && typeof p.text === "string" ? p.text : "")).join("");
  return "";
}

// -- the sidebar ---------------------------------------------------------------

async function loadSidebar() {
  const r = await api("GET", `/users/${encodeURIComponent(user)}/conversations?limit=100`);
  const page = await r.json();
  known = new Set(page.items.map((i) => i.id));
  const list = $("conversations");
  list.replaceChildren();
  for (const info of page.items) {
    const li = document.createElement("li");
    li.dataset.id = info.id;
    li.className = info.id === current ? "current" : "";
    li.textContent = info.title || info.id;
    const small = document.createElement("small");
    small.textContent = `${info.message_count} messages` + (info.forked_from ? `, from ${info.forked_from}` : "");
    li.append(small);
    li.title = info.id;
    li.onclick = () => open(info.id).catch(fail);
    list.append(li);
  }
  const mine = page.items.find((i) => i.id === current);
  $("chat-title").textContent = mine ? mine.title || mine.id : "New chat";
}

// -- the history ---------------------------------------------------------------

function bubble(message) {
  const div = document.createElement("div");
  div.className = "msg " + message.role;
  if (message.id != null) div.dataset.id = message.id;
  const text = document.createElement("div");
  text.className = "text";
  text.textContent = textOf(message.content);
  div.append(text);
  if (message.id != null) {
    const tools = document.createElement("div");
    tools.className = "tools";
    if (message.role === "user") tools.append(tool("Edit", () => editAndResend(div)));
    tools.append(tool("Fork", () => forkAt(message.id)));
    div.append(tools);
  }
  return div;
}

function tool(label, action) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = label.toLowerCase();
  b.onclick = () => action().catch(fail);
  return b;
}

function markLastAnswer() {
  for (const b of document.querySelectorAll("#messages .regenerate")) b.remove();
  const answers = document.querySelectorAll("#messages .msg.assistant[data-id]");
  const last = answers[answers.length - 1];
  if (last && last === document.querySelector("#messages .msg:last-child"))
    last.querySelector(".tools").prepend(tool("Regenerate", regenerate));
}

async function loadHistory() {
  const box = $("messages");
  let messages = [];
  if (known.has(current)) try { // else nothing was sent yet: no request, no 404
    const r = await api("GET", `${sid(current)}?limit=${PAGE}`);
    ({ messages } = await r.json());
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e; // 404: nothing sent yet
  }
  for (const m of box.querySelectorAll(".msg")) m.remove(); // only now: no flicker
  for (const m of messages) box.append(bubble(m));
  $("load-older").hidden = messages.length < PAGE;
  markLastAnswer();
  box.scrollTop = box.scrollHeight;
}

async function loadOlder() {
  const first = document.querySelector("#messages .msg[data-id]");
  if (!first) return;
  const r = await api("GET", `${sid(current)}?limit=${PAGE}&before=${encodeURIComponent(first.dataset.id)}`);
  const { messages } = await r.json();
  first.before(...messages.map(bubble));
  $("load-older").hidden = messages.length < PAGE;
}

async function open(id) {
  current = id;
  localStorage.setItem("promptkit-current", id);
  showStatus("");
  await loadSidebar();
  await loadHistory();
}

function newChat() {
  current = newId();
  localStorage.setItem("promptkit-current", current);
  for (const m of document.querySelectorAll("#messages .msg")) m.remove();
  $("load-older").hidden = true;
  showStatus("");
  loadSidebar().catch(fail);
  $("input").focus();
}

// -- streaming -----------------------------------------------------------------

// Reads the SSE body as it arrives, calling onDelta for each piece of text.
async function readEvents(response, onDelta) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let outcome = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      const payload = data ? JSON.parse(data) : {};
      if (event === "delta") onDelta(payload.text);
      else outcome = { event, payload };
    }
  }
  if (outcome && outcome.event === "error") throw new ApiError(200, outcome.payload);
  if (!outcome) throw new ApiError(0, { message: "The reply stopped before it was complete." });
  return outcome.payload;
}

async function streamInto(target, method, path, body) {
  setBusy(true);
  const text = target.querySelector(".text");
  delete target.dataset.id; // a new message: its id comes with the reloaded history
  target.classList.add("streaming");
  try {
    const r = await api(method, path, body);
    await readEvents(r, (piece) => {
      text.textContent += piece;
      $("messages").scrollTop = $("messages").scrollHeight;
    });
  } finally {
    target.classList.remove("streaming");
    setBusy(false);
  }
}

function setBusy(value) {
  busy = value;
  $("send").disabled = value;
}

async function send(content) {
  const box = $("messages");
  const question = bubble({ role: "user", content });
  box.append(question);
  const answer = bubble({ role: "assistant", content: "" });
  box.append(answer);
  try {
    await streamInto(answer, "POST", `${sid(current)}/messages`, { content });
  } catch (e) {
    // Not sent (or not saved): take the bubbles back and give the text back to retry.
    question.remove();
    answer.remove();
    if (!$("input").value) $("input").value = content;
    throw e;
  } finally {
    await settle();
  }
}

async function regenerate() {
  const answers = document.querySelectorAll("#messages .msg.assistant");
  const last = answers[answers.length - 1];
  last.querySelector(".text").textContent = "";
  last.querySelector(".tools").remove();
  try {
    await streamInto(last, "POST", `${sid(current)}/regenerate`);
  } finally {
    await settle();
  }
}

// After a turn, good or bad, show what the store kept.
async function settle() {
  try {
    await loadSidebar();
    await loadHistory();
  } catch (e) {
    fail(e);
  }
}

// -- branches ------------------------------------------------------------------

async function forkAt(messageId) {
  const id = newId();
  await api("POST", `${sid(current)}/fork`, { new_id: id, upto: messageId });
  await open(id);
}

// Edit a question and send it again, in a new branch that keeps what came before it.
async function editAndResend(div) {
  const old = div.querySelector(".text").textContent;
  const content = window.prompt("Edit the question", old);
  if (content === null || !content.trim()) return;
  const previous = div.previousElementSibling;
  const id = newId();
  if (previous && previous.dataset.id) {
    await api("POST", `${sid(current)}/fork`, { new_id: id, upto: previous.dataset.id });
    await open(id);
  } else {
    newChat();
    current = id;
  }
  await send(content);
}

// -- wiring --------------------------------------------------------------------

function fail(error) {
  console.warn(error);
  showStatus(error instanceof ApiError ? error.message : `Could not reach the server (${error.message}).`);
}

$("composer").onsubmit = (event) => {
  event.preventDefault();
  const content = $("input").value;
  if (!content.trim() || busy) return;
  $("input").value = "";
  showStatus("");
  send(content).catch(fail);
};
$("input").onkeydown = (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
};
$("new-chat").onclick = newChat;
$("load-older").onclick = () => loadOlder().catch(fail);
$("rename").onclick = async () => {
  const title = window.prompt("A title for this conversation", $("chat-title").textContent);
  if (title === null) return;
  try {
    await api("PATCH", sid(current), { title: title.trim() || null });
    await loadSidebar();
  } catch (e) { fail(e); }
};
$("delete").onclick = async () => {
  if (!window.confirm("Delete this conversation?")) return;
  try {
    await api("DELETE", sid(current));
    newChat();
  } catch (e) { fail(e); }
};

function start() {
  $("who").textContent = user;
  const last = localStorage.getItem("promptkit-current");
  if (last) open(last).catch(fail);
  else newChat();
}

if (user) {
  start();
} else {
  $("name-form").hidden = false;
  $("name").focus();
  $("name-form").onsubmit = (event) => {
    event.preventDefault();
    user = $("name").value.trim();
    if (!user) return;
    localStorage.setItem("promptkit-user", user);
    $("name-form").hidden = true;
    start();
  };
}
