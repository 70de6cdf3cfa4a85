#!/usr/bin/env node
// The OpenAI-compatible server's throughput as a client sees it: streaming chat completions
// through the official `openai` client, 1 request alone and then N at once, each generating
// `--tokens` tokens (`ignore_eos`, llama.cpp's extension, so every request does the same work).
// Prints aggregate tokens/s and the speedup of N over 1.
//
//   node scripts/bench-server.mjs [model.gguf|smollm2] [--requests 8] [--tokens 128] [--threads 2]
import OpenAI from 'openai';

import { createRequire } from 'node:module';
import { ensureModel, MODELS } from './models.mjs';

const require = createRequire(import.meta.url);
const { loadModel, createServer } = require('../lib/index.js');

function parseArgs(argv) {
  const args = { model: 'smollm2', requests: 8, tokens: 128, threads: undefined };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--requests') args.requests = Number(argv[++i]);
    else if (argv[i] === '--tokens') args.tokens = Number(argv[++i]);
    else if (argv[i] === '--threads') args.threads = Number(argv[++i]);
    else args.model = argv[i];
  }
  return args;
}

const TOPICS = ['a lighthouse', 'a river', 'a mountain', 'a city at night', 'a forest', 'the sea', 'a library', 'a train journey', 'a garden', 'a storm', 'a market', 'a bridge', 'an island', 'a desert', 'a castle', 'a harbour'];

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const file = MODELS[args.model] ? await ensureModel(args.model) : args.model;
  const model = await loadModel(file, { threads: args.threads, maxSequences: Math.max(8, args.requests) });
  const server = createServer(model, { modelId: 'bench' });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${server.address().port}/v1`, apiKey: 'unused', maxRetries: 0 });

  const request = async (i) => {
    const stream = await client.chat.completions.create({
      model: 'bench',
      messages: [{ role: 'user', content: `Write a long story about ${TOPICS[i % TOPICS.length]}.` }],
      max_tokens: args.tokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    let tokens = 0;
    for await (const chunk of stream) if (chunk.usage) tokens = chunk.usage.completion_tokens;
    return tokens;
  };
  const measure = async (n) => {
    const started = performance.now();
    const counts = await Promise.all(Array.from({ length: n }, (_, i) => request(i)));
    const seconds = (performance.now() - started) / 1000;
    const tokens = counts.reduce((a, b) => a + b, 0);
    return { requests: n, tokens, seconds, tokensPerSecond: tokens / seconds };
  };

  await measure(1); // warm-up: page cache, first-use allocations
  const one = await measure(1);
  const many = await measure(args.requests);
  console.log(`model ${file}, ${model.info.threads} threads, ${args.tokens} tokens per request (streamed, openai client)`);
  for (const r of [one, many]) {
    console.log(`${String(r.requests).padStart(2)} request(s): ${r.tokens} tokens in ${r.seconds.toFixed(2)} s = ${r.tokensPerSecond.toFixed(1)} tok/s aggregate`);
  }
  console.log(`${args.requests} at once: ${(many.tokensPerSecond / one.tokensPerSecond).toFixed(2)}x the throughput of 1`);
  server.close();
  await model.dispose();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
