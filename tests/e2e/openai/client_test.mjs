// The real openai client package against edgellm serve. Expected texts come
// from `edgellm run` (computed by test_serve_openai.sh), not from the server.
// Prints one line per failed check; exits 1 if any failed.
import OpenAI from "openai";

const url = process.env.SERVE_URL;
const expectPirate = process.env.EXPECT_PIRATE;
const expectChat = process.env.EXPECT_CHAT;
let failed = 0, checks = 0;
function eq(what, got, want) {
  checks++;
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    failed++;
    console.log(`FAIL: ${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
  }
}

const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "k1", maxRetries: 0 });

const models = await client.models.list();
eq("model ids", models.data.map((m) => m.id).sort(), ["aid", "pirate"]);

const c = await client.completions.create({ model: "pirate", prompt: "The dream", max_tokens: 30, temperature: 0 });
eq("completion text", c.choices[0].text, expectPirate);
eq("completion finish", c.choices[0].finish_reason, "length");
eq("completion usage", c.usage.completion_tokens, 30);

const s = await client.completions.create({ model: "pirate", prompt: "The dream", max_tokens: 30, temperature: 0, stream: true });
let text = "", finish = null;
for await (const chunk of s) {
  text += chunk.choices[0].text;
  finish = chunk.choices[0].finish_reason ?? finish;
}
eq("streamed completion text", text, expectPirate);
eq("streamed completion finish", finish, "length");

const chat = await client.chat.completions.create({
  model: "aid", messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0,
});
eq("chat role", chat.choices[0].message.role, "assistant");
eq("chat content", chat.choices[0].message.content, expectChat);

const cs = await client.chat.completions.create({
  model: "aid", messages: [{ role: "user", content: "Hi" }], max_tokens: 8, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let content = "", role = null, usage = null;
for await (const chunk of cs) {
  if (chunk.usage) usage = chunk.usage;
  if (!chunk.choices.length) continue;
  role = chunk.choices[0].delta.role ?? role;
  content += chunk.choices[0].delta.content ?? "";
}
eq("streamed chat role", role, "assistant");
eq("streamed chat content", content, expectChat);
eq("streamed chat usage", usage && usage.completion_tokens, 8);

try {
  await client.completions.create({ model: "nosuch", prompt: "x" });
  eq("unknown model throws", "no error", "NotFoundError");
} catch (e) {
  eq("unknown model error", [e.constructor.name, e.status, e.code], ["NotFoundError", 404, "model_not_found"]);
}
try {
  const bad = new OpenAI({ baseURL: `${url}/v1`, apiKey: "wrong", maxRetries: 0 });
  await bad.models.list();
  eq("wrong key throws", "no error", "AuthenticationError");
} catch (e) {
  eq("wrong key error", [e.constructor.name, e.status], ["AuthenticationError", 401]);
}

console.log(`openai client: ${checks} checks, ${failed} failed`);
process.exit(failed ? 1 : 0);
