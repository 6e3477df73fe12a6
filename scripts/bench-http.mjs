// bench-http.mjs — N concurrent streaming clients against an OpenAI-compatible endpoint for a fixed
// time: each client sends /v1/completions requests back to back ("stream": true, usage included)
// and the totals give requests/s, generated tokens/s, time to first token and inter-token latency.
// No dependencies beyond Node 18+ (node:http). Prints one JSON object.
//
//   node bench-http.mjs --url http://127.0.0.1:8080 --clients 8 --seconds 10 [--max-tokens 128] [--key K]
import http from "node:http";

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith("--") ? a.concat([[v.slice(2), all[i + 1]]]) : a), []));
const url = new URL(args.url ?? "http://127.0.0.1:8080");
const clients = Number(args.clients ?? 1), seconds = Number(args.seconds ?? 10), maxTokens = Number(args["max-tokens"] ?? 128);
const temperature = Number(args.temperature ?? 0);
const prompts = ["Once upon a time", "The little dog", "One day, a girl named Lily", "Tom and his friend", "The sun was shining and"];
const agent = new http.Agent({ keepAlive: true, maxSockets: clients });

function one(prompt) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ prompt, max_tokens: maxTokens, temperature, stream: true, stream_options: { include_usage: true } });
    const t0 = performance.now();
    let first = 0, last = 0, pieces = 0, usage = null, buf = "";
    const req = http.request({ hostname: url.hostname, port: url.port, path: "/v1/completions", method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body), ...(args.key ? { Authorization: `Bearer ${args.key}` } : {}) } }, (res) => {
      if (res.statusCode !== 200) { res.resume(); return reject(new Error(`status ${res.statusCode}`)); }
      res.setEncoding("utf8");
      res.on("data", (d) => {
        buf += d;
        let at;
        while ((at = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, at); buf = buf.slice(at + 2);
          if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
          const j = JSON.parse(ev.slice(6));
          if (j.usage) usage = j.usage;
          if (j.choices?.[0]?.text) { const t = performance.now(); if (!first) first = t; last = t; pieces++; }
        }
      });
      res.on("end", () => resolve({ t0, first, last, pieces, end: performance.now(), tokens: usage ? usage.completion_tokens : 0 }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const results = [];
let errors = 0;
const tStart = performance.now(), tStop = tStart + seconds * 1000;
await Promise.all(Array.from({ length: clients }, async (_, c) => {
  for (let k = 0; performance.now() < tStop; k++) {
    try { results.push(await one(prompts[(c + k) % prompts.length])); } catch { errors++; }
  }
}));
const wall = (performance.now() - tStart) / 1000;
const tokens = results.reduce((a, r) => a + r.tokens, 0);
const ttft = results.filter((r) => r.first).map((r) => r.first - r.t0).sort((a, b) => a - b);
const itl = results.filter((r) => r.pieces > 1).map((r) => (r.last - r.first) / (r.pieces - 1));
const mean = (v) => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : 0);
console.log(JSON.stringify({
  clients, seconds: wall, requests: results.length, errors, tokens,
  requests_per_s: results.length / wall, tokens_per_s: tokens / wall,
  ttft_ms_mean: mean(ttft), ttft_ms_p50: ttft[Math.floor(ttft.length / 2)] ?? 0,
  itl_ms_mean: mean(itl), max_tokens: maxTokens,
}));
agent.destroy();
