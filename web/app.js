// The chat page and live panel of edgellm serve (and the panel of edgellm
// worker --http). Everything that came from the server or a model (model
// names, replies, error messages) goes into the page as text nodes, never as
// HTML, and the server's Content-Security-Policy allows no inline script.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { mode: null, modelsOk: false, history: [], busy: null, last: null };

function authHeaders() {
  const key = $("key").value.trim();
  return key ? { Authorization: "Bearer " + key } : {};
}

function notice(text) {
  const n = $("notice");
  n.textContent = text || "";
  n.hidden = !text;
}

// ---------------------------------------------------------------- models

async function errorText(r) {
  try {
    const j = await r.json();
    if (j && j.error && typeof j.error.message === "string") return j.error.message;
  } catch (e) { /* not JSON */ }
  return r.status + " " + r.statusText;
}

async function loadModels() {
  let r;
  try {
    r = await fetch("v1/models", { headers: authHeaders() });
  } catch (e) {
    notice("Cannot reach the server: " + e.message);
    state.modelsOk = false;
    return false;
  }
  if (r.status === 401) {
    notice(($("key").value.trim() ? "The API key was refused" : "This server needs an API key") +
           " (401: " + (await errorText(r)) + "). Enter the key given to edgellm serve --api-key above.");
    state.modelsOk = false;
    $("model").replaceChildren();
    return false;
  }
  if (!r.ok) {
    notice("Cannot list the models: " + (await errorText(r)));
    state.modelsOk = false;
    return false;
  }
  const list = (await r.json()).data || [];
  const sel = $("model"), keep = sel.value;
  sel.replaceChildren();
  for (const m of list) {
    const o = document.createElement("option");
    o.value = String(m.id);
    o.textContent = m.parent ? m.id + "  (adapter of " + m.parent + ")" : m.id + "  (base)";
    sel.appendChild(o);
  }
  if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
  notice("");
  state.modelsOk = true;
  return true;
}

// ---------------------------------------------------------------- chat

function addMessage(role, who, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const w = document.createElement("span");
  w.className = "who";
  w.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  const t = document.createTextNode(text || "");
  body.appendChild(t);
  div.append(w, body);
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return { div, text: t };
}

function num(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function requestBody() {
  const messages = [];
  const sys = $("system").value.trim();
  if (sys) messages.push({ role: "system", content: sys });
  for (const m of state.history) messages.push(m);
  const body = { model: $("model").value, messages, stream: true, stream_options: { include_usage: true } };
  for (const k of ["temperature", "top_k", "top_p", "min_p", "max_tokens", "seed"]) {
    const v = num(k);
    if (v !== undefined && !Number.isNaN(v)) body[k] = v;
  }
  return body;
}

async function send(text) {
  if (state.busy) return;
  if (!state.modelsOk && !(await loadModels())) return;  // no request without a key the server takes
  state.history.push({ role: "user", content: text });
  addMessage("user", "you", text);
  const reply = addMessage("assistant", $("model").value, "");
  const ctl = new AbortController();
  state.busy = ctl;
  $("send").disabled = true;
  $("stop").disabled = false;
  const t0 = performance.now();
  let got = "", usage = null, failed = null;
  try {
    const r = await fetch("v1/chat/completions", {
      method: "POST", signal: ctl.signal,
      headers: Object.assign({ "Content-Type": "application/json" }, authHeaders()),
      body: JSON.stringify(requestBody()),
    });
    if (!r.ok) {
      failed = await errorText(r);
      if (r.status === 401) state.modelsOk = false;
    } else {
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          for (const line of ev.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") continue;
            const j = JSON.parse(data);
            if (j.error) failed = String(j.error.message);
            if (j.usage) usage = j.usage;
            const c = j.choices && j.choices[0] && j.choices[0].delta && j.choices[0].delta.content;
            if (typeof c === "string" && c) {
              got += c;
              reply.text.appendData(c);
              $("log").scrollTop = $("log").scrollHeight;
            }
          }
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") failed = e.message;
  }
  const s = (performance.now() - t0) / 1000;
  const stats = document.createElement("span");
  stats.className = "stats";
  stats.textContent = failed ? "error: " + failed
    : usage ? usage.completion_tokens + " tokens in " + s.toFixed(2) + " s (" + (usage.completion_tokens / s).toFixed(1) + " tokens/s)"
    : "stopped after " + s.toFixed(2) + " s";
  reply.div.appendChild(stats);
  if (failed) notice(failed);
  state.history.push({ role: "assistant", content: got });
  state.busy = null;
  $("send").disabled = false;
  $("stop").disabled = true;
}

// ---------------------------------------------------------------- live panel

// Prometheus text: "name{labels} value" lines. Requests are counted by outcome:
// ok and failed ones ran, rejected ones (bad key, full queue, too big) did not.
function parseMetrics(text) {
  const m = { requests: 0, rejected: 0 };
  for (const line of text.split("\n")) {
    const x = /^([a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+)$/.exec(line);
    if (!x) continue;
    const [, name, labels, v] = x;
    if (name === "edgellm_requests_total") {
      if (labels === '{result="rejected"}') m.rejected += Number(v);
      else m.requests += Number(v);
    } else {
      m[name] = (m[name] || 0) + Number(v);
    }
  }
  return m;
}

const FIGURES = {
  serve: [
    ["requests", "m-requests"], ["rejected", "m-rejected"], ["running", "m-running"], ["waiting", "m-waiting"],
    ["tokens/s", "m-tps"], ["batch rows", "m-batch"], ["mean batch", "m-mean-batch"], ["adapters in memory", "m-adapters"],
    ["memory", "m-rss"],
  ],
  worker: [
    ["requests", "m-requests"], ["requests/s", "m-rps"], ["busy", "m-busy"], ["sessions", "m-sessions"],
    ["KV cache", "m-kv"], ["received", "m-received"], ["memory", "m-rss"],
  ],
};

function buildPanel(mode) {
  const dl = $("figures");
  dl.replaceChildren();
  for (const [label, id] of FIGURES[mode]) {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = label;
    dd.id = id;
    dd.textContent = "–";
    dl.append(dt, dd);
  }
}

const mib = (b) => (b / 1048576).toFixed(1) + " MiB";
function set(id, text) { const e = $(id); if (e) e.textContent = text; }

async function poll() {
  let text;
  try {
    const r = await fetch("metrics");
    if (!r.ok) throw new Error(r.status + " " + r.statusText);
    text = await r.text();
  } catch (e) {
    set("panel-state", "no figures: " + e.message);
    return;
  }
  const m = parseMetrics(text), now = performance.now() / 1000, prev = state.last;
  const mode = "edgellm_worker_requests_total" in m ? "worker" : "serve";
  if (mode !== state.mode) {
    state.mode = mode;
    buildPanel(mode);
    $("role").textContent = mode === "worker" ? "edge worker (read-only panel)" : "serve";
    if (mode === "worker") { $("chat").hidden = true; $("settings").hidden = true; $("key").parentNode.hidden = true; }
  }
  const dt = prev ? now - prev.t : 0, rate = (k) => (prev && dt > 0 ? ((m[k] || 0) - (prev.m[k] || 0)) / dt : 0);
  if (mode === "serve") {
    set("m-requests", String(m.requests || 0));
    set("m-rejected", String(m.rejected || 0));
    set("m-running", String(m.edgellm_active_sequences || 0));
    set("m-waiting", String(m.edgellm_queue_length || 0));
    set("m-tps", rate("edgellm_completion_tokens_total").toFixed(1));
    set("m-batch", String(m.edgellm_batch_size || 0));
    const steps = m.edgellm_decode_steps_total || 0;
    set("m-mean-batch", steps ? (m.edgellm_decode_rows_total / steps).toFixed(2) : "–");
    set("m-adapters", String(m.edgellm_adapters_loaded || 0));
  } else {
    set("m-requests", String(m.edgellm_worker_requests_total || 0));
    set("m-rps", rate("edgellm_worker_requests_total").toFixed(1));
    set("m-busy", (100 * rate("edgellm_worker_busy_seconds_total")).toFixed(0) + " %");
    set("m-sessions", String(m.edgellm_worker_sessions || 0));
    set("m-kv", mib(m.edgellm_worker_kv_bytes || 0));
    set("m-received", mib(m.edgellm_worker_bytes_received_total || 0));
  }
  set("m-rss", mib(m.edgellm_resident_bytes || 0));
  set("panel-state", "updated " + new Date().toLocaleTimeString());
  state.last = { t: now, m };
}

// ---------------------------------------------------------------- wiring

window.addEventListener("DOMContentLoaded", async () => {
  $("key").value = sessionStorage.getItem("edgellm-key") || "";
  $("key").addEventListener("change", () => {
    sessionStorage.setItem("edgellm-key", $("key").value.trim());
    loadModels();
  });
  $("ask").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("input").value.trim();
    if (!text) return;
    $("input").value = "";
    send(text);
  });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); }
  });
  $("stop").addEventListener("click", () => state.busy && state.busy.abort());
  $("clear").addEventListener("click", () => { state.history = []; $("log").replaceChildren(); });
  await poll();
  setInterval(poll, 1000);
  if (state.mode === "serve") loadModels();
});
