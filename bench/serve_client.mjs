// Load generator for edgellm serve (bench/serve_bench.sh, tests/e2e/test_serve_load.sh).
// N clients each send completion requests back to back, for R requests each or
// for S seconds; client i asks for model models[i % models.length]. Prints one
// JSON line: requests done and failed, completion tokens, wall seconds, tokens/s.
// A request fails on a non-200 status, a transport error, or (streaming) an
// error event or a missing [DONE].
import http from "node:http";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith("--") ? [...acc, [a.slice(2), all[i + 1]]] : acc), []));
const url = new URL(args.url);
const clients = +(args.clients ?? 1);
const models = (args.models ?? "base").split(",");
const perClient = args.requests ? +args.requests : Infinity;
const seconds = args.seconds ? +args.seconds : Infinity;
const maxTokens = +(args["max-tokens"] ?? 64);
const stream = args.stream === "1";
const prompt = args.prompt ?? "The";
const agent = new http.Agent({ keepAlive: true, maxSockets: clients });

function once(model) {
  const body = JSON.stringify({
    model, prompt, max_tokens: maxTokens, temperature: 0, stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  });
  return new Promise((resolve) => {
    const req = http.request({
      host: url.hostname, port: url.port, path: "/v1/completions", method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body),
                 ...(args.key ? { Authorization: `Bearer ${args.key}` } : {}) },
    }, (res) => {
      let data = "", ended = false;
      res.setEncoding("utf8");
      res.on("data", (d) => (data += d));
      // a connection cut mid-response (server stopped) ends without "end"
      res.on("error", (e) => resolve({ ok: false, why: String(e) }));
      res.on("close", () => ended || resolve({ ok: false, why: "connection closed mid-response" }));
      res.on("end", () => {
        ended = true;
        if (res.statusCode !== 200) return resolve({ ok: false, why: `status ${res.statusCode}: ${data.slice(0, 200)}` });
        try {
          if (!stream) return resolve({ ok: true, tokens: JSON.parse(data).usage.completion_tokens });
          const events = data.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
          if (events[events.length - 1] !== "[DONE]") return resolve({ ok: false, why: "no [DONE]" });
          let tokens = 0;
          for (const e of events.slice(0, -1)) {
            const j = JSON.parse(e);
            if (j.error) return resolve({ ok: false, why: j.error.message });
            if (j.usage) tokens = j.usage.completion_tokens;
          }
          resolve({ ok: true, tokens });
        } catch (e) {
          resolve({ ok: false, why: `bad body: ${e}` });
        }
      });
    });
    req.on("error", (e) => resolve({ ok: false, why: String(e) }));
    req.end(body);
  });
}

const t0 = performance.now();
let done = 0, failed = 0, tokens = 0;
const whys = [];
await Promise.all(Array.from({ length: clients }, async (_, i) => {
  for (let k = 0; k < perClient && (performance.now() - t0) / 1000 < seconds; k++) {
    const r = await once(models[i % models.length]);
    if (r.ok) { done++; tokens += r.tokens; } else { failed++; if (whys.length < 5) whys.push(r.why); }
  }
}));
const wall = (performance.now() - t0) / 1000;
agent.destroy();
console.log(JSON.stringify({ clients, requests: done, failed, tokens, seconds: +wall.toFixed(3),
                             tok_per_s: +(tokens / wall).toFixed(1), errors: whys }));
