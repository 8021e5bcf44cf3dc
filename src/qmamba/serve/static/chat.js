// qmamba chat page: a multi-turn conversation with the server's /v1/chat/completions (OpenAI's schema).
// Each turn sends the whole history; an attached or pasted image travels as a data: URL image_url part of the
// message it was attached to. Answers stream as server-sent events and are shown as they come; Stop aborts the
// request, which closes the connection, and the server cancels the answer. Below each answer: its token count,
// its decode rate (tokens after the first, over the time since the first) and the time to its first token.
"use strict";

const el = (id) => document.getElementById(id);
const ui = {
  log: el("log"), hint: el("hint"), error: el("error"), form: el("composer"), input: el("input"),
  send: el("send"), stop: el("stop"), reset: el("reset"), file: el("file"), model: el("model-name"),
  pending: el("pending"), pendingImg: el("pending-img"), pendingName: el("pending-name"),
  removeImage: el("remove-image"), maxTokens: el("max-tokens"), temperature: el("temperature"),
};
const state = {
  messages: [],      // the conversation as sent: {role, content}, user and assistant turns alternating
  pending: null,     // {url, name}: the image for the next message
  controller: null,  // the AbortController of the answer being streamed
  conversation: 0,   // counts New chat presses: an answer that ends after one does not join the new conversation
};

class ServerError extends Error {}

// ---- the server ----

async function loadModel() {
  try {
    const resp = await fetch("v1/models");
    if (!resp.ok) throw new ServerError(await errorText(resp));
    const body = await resp.json();
    const name = body.data && body.data.length ? body.data[0].id : "(none)";
    ui.model.textContent = name;
    document.title = `${name} · qmamba chat`;
  } catch (e) {
    ui.model.textContent = "unavailable";
    showError(`Could not ask the server which model it serves: ${e.message}`);
  }
}

async function errorText(resp) {
  // An error response's message: OpenAI's {"error": {"message"}} body, else the body's text.
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return `${resp.status}: ${body.error.message}`;
  } catch (_) { /* not JSON: the text itself */ }
  return `${resp.status} ${resp.statusText}${text ? `: ${text.slice(0, 500)}` : ""}`;
}

async function* serverEvents(body) {
  // The JSON payloads of a text/event-stream body, until "data: [DONE]".
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ServerError("the connection closed before the answer ended");
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
      if (data === "[DONE]") { reader.cancel().catch(() => {}); return; }
      if (data) yield JSON.parse(data);
    }
  }
}

function requestBody(messages) {
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  const maxTokens = parseInt(ui.maxTokens.value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const temperature = parseFloat(ui.temperature.value);
  if (temperature > 0) body.temperature = temperature;
  return body;
}

// ---- a turn ----

async function ask(text) {
  const image = state.pending;
  const content = image ? [{ type: "image_url", image_url: { url: image.url } }, { type: "text", text }] : text;
  const user = { role: "user", content };
  const userView = addMessage("user", text, image && image.url);
  const reply = addMessage("assistant", "");
  reply.view.dataset.state = "streaming";
  reply.view.setAttribute("aria-busy", "true");
  setPending(null);
  ui.input.value = "";
  hideError();
  setBusy(true);
  const controller = new AbortController();
  const conversation = state.conversation;
  const keep = (...turns) => { if (state.conversation === conversation) state.messages.push(...turns); };
  state.controller = controller;
  const run = { started: performance.now(), first: null, deltas: 0, usage: null, answer: "", drawing: false };
  try {
    await streamAnswer([...state.messages, user], controller.signal, run, reply.text);
    keep(user, { role: "assistant", content: run.answer.trim() });
    finish(reply, "done", stats(run));
  } catch (e) {
    if (e.name === "AbortError") {
      draw(run, reply.text);
      if (run.answer.trim()) keep(user, { role: "assistant", content: run.answer.trim() });
      else finish(userView, "failed", "not sent");
      finish(reply, "stopped", `stopped${run.answer.trim() ? " (the partial answer stays in the conversation)" : ""}`);
    } else {
      finish(userView, "failed", "not sent");
      reply.view.remove();
      showError(e instanceof ServerError ? e.message : `The request failed: ${e.message}`);
      if (!ui.input.value) ui.input.value = text;  // give the message back, to edit and send again
      if (image && !state.pending) setPending(image);
    }
  } finally {
    state.controller = null;
    setBusy(false);
    ui.input.focus();
    scrollDown();
  }
}

async function streamAnswer(messages, signal, run, textView) {
  const resp = await fetch("v1/chat/completions", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody(messages)),
    signal,
  });
  if (!resp.ok) throw new ServerError(await errorText(resp));
  for await (const event of serverEvents(resp.body)) {
    if (event.error) throw new ServerError(event.error.message || JSON.stringify(event.error));
    if (event.usage) run.usage = event.usage;
    const choice = event.choices && event.choices[0];
    const piece = choice && choice.delta && choice.delta.content;
    if (!piece) continue;
    if (run.first === null) run.first = performance.now();
    run.deltas += 1;
    run.answer += piece;
    if (!run.drawing) {  // draw once per frame, however fast the pieces come
      run.drawing = true;
      requestAnimationFrame(() => { run.drawing = false; draw(run, textView); });
    }
  }
  draw(run, textView);
}

function draw(run, textView) {
  textView.textContent = run.answer.trimStart();
  scrollDown();
}

function stats(run) {
  // "12 tokens · 48.1 tokens/s · first token 95 ms": tokens from the usage chunk (else the deltas counted).
  const end = performance.now();
  const tokens = run.usage ? run.usage.completion_tokens : run.deltas;
  const parts = [`${tokens} token${tokens === 1 ? "" : "s"}`];
  if (run.first !== null) {
    const decoding = (end - run.first) / 1000;
    const rate = tokens > 1 && decoding > 0 ? (tokens - 1) / decoding : tokens / ((end - run.started) / 1000);
    parts.push(`${rate.toFixed(1)} tokens/s`, `first token ${Math.round(run.first - run.started)} ms`);
  }
  return parts.join(" · ");
}

// ---- the page ----

function addMessage(role, text, imageUrl) {
  ui.hint.hidden = true;
  const view = document.createElement("article");
  view.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : ui.model.textContent;
  view.append(who);
  if (imageUrl) {
    const img = document.createElement("img");
    img.src = imageUrl;
    img.alt = "The image you attached";
    view.append(img);
  }
  const textView = document.createElement("div");
  textView.className = "text";
  textView.textContent = text;
  view.append(textView);
  ui.log.append(view);
  scrollDown();
  return { view, text: textView };
}

function finish(reply, how, note) {
  reply.view.dataset.state = how;
  reply.view.removeAttribute("aria-busy");
  const line = document.createElement("span");
  line.className = "stats";
  line.textContent = note;
  reply.view.append(line);
}

function setBusy(busy) {
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  ui.file.disabled = busy;
  if (busy) ui.stop.focus();
}

function setPending(image) {
  state.pending = image;
  ui.pending.hidden = !image;
  ui.pendingImg.src = image ? image.url : "";
  ui.pendingName.textContent = image ? image.name : "";
  ui.file.value = "";
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function hideError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

function scrollDown() {
  const main = ui.log.parentElement;
  main.scrollTop = main.scrollHeight;
}

function attach(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    showError(`${file.name} is not an image (its type is ${file.type || "unknown"}); attach a PNG, JPEG or WebP file`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => { hideError(); setPending({ url: reader.result, name: file.name || "pasted image" }); };
  reader.onerror = () => showError(`Could not read ${file.name}: ${reader.error}`);
  reader.readAsDataURL(file);
}

function imageOf(items) {
  for (const item of items || []) {
    if (item.kind === "file" && item.type.startsWith("image/")) return item.getAsFile();
  }
  return null;
}

function newChat() {
  if (state.controller) state.controller.abort();
  state.conversation += 1;
  state.messages = [];
  for (const view of ui.log.querySelectorAll(".msg")) view.remove();
  ui.hint.hidden = false;
  setPending(null);
  hideError();
  ui.input.focus();
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.input.value.trim();
  if (state.controller || (!text && !state.pending)) return;
  ask(text);
});
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    ui.form.requestSubmit();
  }
});
document.addEventListener("paste", (e) => {
  const file = imageOf(e.clipboardData && e.clipboardData.items);
  if (file) { e.preventDefault(); attach(file); }
});
ui.form.addEventListener("dragover", (e) => { e.preventDefault(); ui.form.classList.add("dragging"); });
ui.form.addEventListener("dragleave", () => ui.form.classList.remove("dragging"));
ui.form.addEventListener("drop", (e) => {
  e.preventDefault();
  ui.form.classList.remove("dragging");
  attach(imageOf(e.dataTransfer && e.dataTransfer.items));
});
ui.file.addEventListener("change", () => attach(ui.file.files[0]));
ui.removeImage.addEventListener("click", () => setPending(null));
ui.stop.addEventListener("click", () => { if (state.controller) state.controller.abort(); });
ui.reset.addEventListener("click", newChat);

loadModel();
ui.input.focus();
