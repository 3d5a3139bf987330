// The official `openai` client against `llmrun serve` (the default model on
// the CPU backend): chat and completions, streaming and not, n > 1, seeds,
// logprobs, stop strings, usage and prefix caching, and the error paths.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { startServer, metrics, eventually, OpenAI } from './server.mjs';

let server, client;
before(async () => {
  server = await startServer();
  client = server.client();
});
after(async () => assert.equal(await server.stop(), 0, 'the server exits cleanly on SIGTERM'));

const longSystem = 'You are a careful assistant. '.repeat(12);
const chatRequest = (extra = {}) => ({
  model: 'engine',
  messages: [{ role: 'system', content: longSystem }, { role: 'user', content: 'Say something.' }],
  max_tokens: 12,
  temperature: 0,
  ...extra,
});

async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}

test('models lists the served model with its context length', async () => {
  const models = [];
  for await (const model of client.models.list()) models.push(model);
  assert.equal(models.length, 1);
  assert.equal(models[0].id, 'engine');
  assert.equal(models[0].max_model_len, 1024);
});

test('greedy chat is deterministic and its usage counts the templated prompt', async () => {
  const first = await client.chat.completions.create(chatRequest());
  const second = await client.chat.completions.create(chatRequest());
  assert.equal(first.object, 'chat.completion');
  assert.equal(first.choices.length, 1);
  assert.equal(first.choices[0].message.role, 'assistant');
  assert.ok(first.choices[0].message.content.length > 0);
  assert.equal(first.choices[0].finish_reason, 'length');
  assert.equal(second.choices[0].message.content, first.choices[0].message.content);
  const tokenized = await (await fetch(`${server.url}/tokenize`, {
    method: 'POST',
    body: JSON.stringify({ messages: chatRequest().messages }),
  })).json();
  assert.equal(first.usage.prompt_tokens, tokenized.count);
  assert.equal(first.usage.completion_tokens, 12);
  assert.equal(first.usage.total_tokens, tokenized.count + 12);
  // The second request found the first one's full KV pages (16 tokens each).
  const cached = second.usage.prompt_tokens_details.cached_tokens;
  assert.equal(cached, Math.floor((tokenized.count - 1) / 16) * 16);
  assert.ok(cached >= 64, `cached ${cached}`);
});

test('a streamed chat says the same as the whole response, then usage', async () => {
  const whole = await client.chat.completions.create(chatRequest());
  const chunks = await collect(await client.chat.completions.create(
    chatRequest({ stream: true, stream_options: { include_usage: true } })));
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, whole.choices[0].message.content);
  const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
  assert.equal(finishes.length, 1);
  assert.equal(finishes[0].choices[0].finish_reason, 'length');
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 12);
  assert.equal(last.usage.prompt_tokens, whole.usage.prompt_tokens);
});

test('completions with n > 1 and a seed are reproducible and distinct', async () => {
  const request = { model: 'engine', prompt: 'Once upon a time', max_tokens: 8, temperature: 1, n: 3, seed: 7 };
  const a = await client.completions.create(request);
  const b = await client.completions.create(request);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(new Set(a.choices.map((c) => c.text)).size, 3, 'the n choices differ');
  assert.equal(a.usage.completion_tokens, 24);
  const other = await client.completions.create({ ...request, seed: 8 });
  assert.notDeepEqual(other.choices.map((c) => c.text), a.choices.map((c) => c.text));
});

test('a streamed completion with several choices matches the whole one', async () => {
  const request = { model: 'engine', prompt: ['Hello', 'The sky is'], max_tokens: 10, temperature: 0 };
  const whole = await client.completions.create(request);
  const chunks = await collect(await client.completions.create({ ...request, stream: true }));
  const texts = ['', ''];
  for (const chunk of chunks) for (const choice of chunk.choices) texts[choice.index] += choice.text;
  assert.deepEqual(texts, whole.choices.map((c) => c.text));
});

test('chat logprobs list the chosen token first among the top ones', async () => {
  const response = await client.chat.completions.create(chatRequest({ logprobs: true, top_logprobs: 3 }));
  const content = response.choices[0].logprobs.content;
  assert.equal(content.length, response.usage.completion_tokens);
  for (const entry of content) {
    assert.equal(entry.top_logprobs.length, 3);
    assert.ok(entry.logprob <= 0);
    // Greedy: the chosen token is the most likely one.
    assert.equal(entry.token, entry.top_logprobs[0].token);
    assert.equal(entry.logprob, entry.top_logprobs[0].logprob);
    for (let i = 1; i < 3; ++i) assert.ok(entry.top_logprobs[i - 1].logprob >= entry.top_logprobs[i].logprob);
    assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
  }
  assert.equal(content.map((e) => e.token).join(''), response.choices[0].message.content);
});

test('completion logprobs come in the legacy shape', async () => {
  const response = await client.completions.create(
    { model: 'engine', prompt: 'Hello', max_tokens: 5, temperature: 0, logprobs: 2 });
  const logprobs = response.choices[0].logprobs;
  assert.equal(logprobs.tokens.length, 5);
  assert.equal(logprobs.token_logprobs.length, 5);
  assert.equal(logprobs.top_logprobs.length, 5);
  assert.equal(Object.keys(logprobs.top_logprobs[0]).length, 2);
  assert.deepEqual(logprobs.text_offset.slice(0, 2), [0, logprobs.tokens[0].length]);
});

test('a stop string ends the text before it, streamed or not', async () => {
  const request = { model: 'engine', prompt: 'A list:', max_tokens: 24, temperature: 0 };
  const full = (await client.completions.create(request)).choices[0].text;
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  assert.equal(stop.length, 3);
  const expected = full.slice(0, full.indexOf(stop));
  const cut = await client.completions.create({ ...request, stop: [stop, 'never appears'] });
  assert.equal(cut.choices[0].text, expected);
  assert.equal(cut.choices[0].finish_reason, 'stop');
  const chunks = await collect(await client.completions.create({ ...request, stop, stream: true }));
  const texts = chunks.map((c) => c.choices[0]?.text ?? '');
  assert.equal(texts.join(''), expected);
  assert.equal(chunks.at(-1).choices[0].finish_reason, 'stop');
});

test('penalties and other sampling parameters are accepted and change the output', async () => {
  const request = { model: 'engine', prompt: 'Again and again', max_tokens: 16, temperature: 0 };
  const plain = (await client.completions.create(request)).choices[0].text;
  const penalised = (await client.completions.create(
    { ...request, frequency_penalty: 2, presence_penalty: 2, repetition_penalty: 1.5 })).choices[0].text;
  assert.notEqual(penalised, plain);
  const sampled = await client.completions.create(
    { ...request, temperature: 0.8, top_p: 0.9, top_k: 50, min_p: 0.01, seed: 1, user: 'someone' });
  assert.equal(sampled.usage.completion_tokens, 16);
  const ignoring = await client.completions.create({ ...request, ignore_eos: true, max_tokens: 4 });
  assert.equal(ignoring.choices[0].finish_reason, 'length');
});

test('max_completion_tokens, chat n > 1, top_k, min_p and stop_token_ids do what they say', async () => {
  const chat = { model: 'engine', messages: [{ role: 'user', content: 'Count with me' }], temperature: 0,
    ignore_eos: true };
  const capped = await client.chat.completions.create({ ...chat, max_completion_tokens: 5 });
  assert.equal(capped.usage.completion_tokens, 5);
  assert.equal(capped.choices[0].finish_reason, 'length');
  const several = await client.chat.completions.create(
    { ...chat, max_completion_tokens: 6, temperature: 1, n: 3, seed: 3 });
  assert.deepEqual(several.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(new Set(several.choices.map((c) => c.message.content)).size, 3, 'the n choices differ');
  assert.equal(several.usage.completion_tokens, 18);
  // top_k 1 and min_p 1 leave only the most likely token: sampling gives the greedy text.
  const request = { model: 'engine', prompt: 'Once more', max_tokens: 12, ignore_eos: true };
  const greedy = (await client.completions.create({ ...request, temperature: 0 })).choices[0].text;
  for (const only of [{ top_k: 1 }, { min_p: 1 }]) {
    const sampled = await client.completions.create({ ...request, temperature: 1, seed: 5, ...only });
    assert.equal(sampled.choices[0].text, greedy, JSON.stringify(only));
  }
  // A stop token id: the greedy text's fourth token ends the completion before it.
  const tokenized = await fetch(`${server.url}/tokenize`, { method: 'POST', body: JSON.stringify({ prompt: greedy }) })
    .then((r) => r.json());
  const fourth = tokenized.tokens[4];  // after the BOS
  const stopped = await client.completions.create({ ...request, temperature: 0, stop_token_ids: [fourth] });
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.ok(greedy.startsWith(stopped.choices[0].text) && stopped.choices[0].text.length < greedy.length,
    `${JSON.stringify(stopped.choices[0].text)} is not a shorter prefix of ${JSON.stringify(greedy)}`);
});

test('bad parameters are 400s in the OpenAI error shape, naming the parameter', async () => {
  const cases = [
    [{ temperature: 3 }, 'temperature'],
    [{ top_p: 0 }, 'top_p'],
    [{ n: 0 }, 'n'],
    [{ max_tokens: 0 }, 'max_tokens'],
    [{ logprobs: 21 }, 'logprobs'],
    [{ presence_penalty: 5 }, 'presence_penalty'],
    [{ stop: [''] }, 'stop'],
    [{ prompt: [999999999] }, 'prompt'],
    [{ prompt: 'word '.repeat(2000), max_tokens: 1 }, 'prompt'],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(client.completions.create({ model: 'engine', prompt: 'Hi', ...extra }), (error) => {
      assert.ok(error instanceof OpenAI.BadRequestError, `${JSON.stringify(extra)}: ${error}`);
      assert.equal(error.status, 400);
      assert.equal(error.param, param, JSON.stringify(extra));
      assert.equal(error.type, 'invalid_request_error');
      return true;
    });
  }
});

test('a prompt longer than the context is context_length_exceeded', async () => {
  await assert.rejects(
    client.chat.completions.create(chatRequest({ messages: [{ role: 'user', content: 'word '.repeat(2000) }] })),
    (error) => error.status === 400 && error.code === 'context_length_exceeded' && /1024/.test(error.message));
});

test('an unknown model is a 404, malformed JSON and unknown paths are JSON errors', async () => {
  await assert.rejects(client.completions.create({ model: 'other', prompt: 'Hi' }),
    (error) => error instanceof OpenAI.NotFoundError && error.code === 'model_not_found');
  for (const body of ['{not json', '[1, 2]', '']) {
    const response = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', body });
    assert.equal(response.status, 400, body);
    const error = (await response.json()).error;
    assert.equal(error.type, 'invalid_request_error');
    assert.ok(error.message.length > 0);
  }
  const missing = await fetch(`${server.url}/v2/nothing`);
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error.type, 'not_found_error');
});

// Sends raw bytes on one connection (then half-closes it, unless keepOpen)
// and returns everything the server wrote until it closed the connection (or
// `ms` passed). A half-closed connection counts as a client that has gone.
function raw(url, bytes, { ms = 3000, keepOpen = false } = {}) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => (keepOpen ? socket.write(bytes) : socket.end(bytes)));
    let out = '';
    socket.on('data', (d) => { out += d; });
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
    socket.setTimeout(ms, () => { socket.destroy(); resolve(out); });
  });
}

test('malformed HTTP gets a clear error and harms nothing', async () => {
  const cases = [
    ['GARBAGE\r\n\r\n', 400, 'malformed request line'],
    ['POST /v1/completions HTTP/1.1\r\nContent-Length: nope\r\n\r\n', 400, 'Content-Length'],
    ['POST /v1/completions HTTP/1.1\r\nno colon here\r\n\r\n', 400, 'header'],
    ['POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 501, 'Content-Length'],
    [`GET /health HTTP/1.1\r\nX-Big: ${'a'.repeat(70000)}\r\n\r\n`, 431, 'too large'],
    ['POST /v1/completions HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n', 413, 'larger than'],
    ['GET /v1/completions HTTP/1.1\r\nConnection: close\r\n\r\n', 405, 'use POST'],
  ];
  for (const [request, status, words] of cases) {
    const response = await raw(server.url, request);
    assert.match(response, new RegExp(`^HTTP/1.1 ${status} `), request.slice(0, 40));
    const body = JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4));
    assert.ok(body.error.message.includes(words), `${body.error.message} lacks '${words}'`);
  }
  // A body cut short by a client that goes away, and a client that sends nothing.
  await raw(server.url, 'POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"prompt"', { ms: 200 });
  await raw(server.url, '', { ms: 200 });
  // Two pipelined requests on one connection are answered in order; HEAD has no body.
  const two = await raw(server.url, 'GET /health HTTP/1.1\r\n\r\nHEAD /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n');
  assert.equal(two.match(/HTTP\/1.1 200 OK/g).length, 2);
  assert.ok(two.includes('{"status":"ok"}'));
  assert.ok(!two.includes('"object":"list"'), 'HEAD sent a body');
  // curl's Expect: 100-continue: the body follows the server's go-ahead.
  const body = JSON.stringify({ prompt: 'Hi', max_tokens: 2 });
  const { hostname, port } = new URL(server.url);
  const expect = await new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(
      `POST /v1/completions HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n` +
      `Content-Length: ${body.length}\r\n\r\n`));
    let out = '';
    socket.on('data', (d) => {
      out += d;
      if (out === 'HTTP/1.1 100 Continue\r\n\r\n') socket.write(body);
    });
    socket.on('close', () => resolve(out));
    socket.on('error', reject);
  });
  assert.match(expect, /^HTTP\/1.1 100 Continue\r\n\r\nHTTP\/1.1 200 OK/);
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('tokenize and detokenize round-trip', async () => {
  const post = (path, body) => fetch(`${server.url}${path}`, { method: 'POST', body: JSON.stringify(body) })
    .then((r) => r.json());
  const tokens = await post('/tokenize', { prompt: 'Hello, world! 你好' });
  assert.equal(tokens.tokens[0], 128000, 'the Llama 3 BOS comes first');
  assert.equal(tokens.count, tokens.tokens.length);
  const text = await post('/detokenize', { tokens: tokens.tokens.slice(1) });
  assert.equal(text.prompt, 'Hello, world! 你好');
  const bad = await fetch(`${server.url}/detokenize`, { method: 'POST', body: '{"tokens": [-1]}' });
  assert.equal(bad.status, 400);
});

test('a client that disconnects frees its sequence at once', async () => {
  for (const stream of [true, false]) {
    const abort = new AbortController();
    const pending = fetch(`${server.url}/v1/completions`, {
      method: 'POST',
      signal: abort.signal,
      body: JSON.stringify({ prompt: 'Tell a long story', max_tokens: 900, ignore_eos: true, stream }),
    }).then(async (response) => { for await (const _ of response.body); }).catch(() => {});
    await eventually(async () => (await metrics(server.url)).llmc_num_requests_running === 1);
    abort.abort();
    await pending;
    await eventually(async () => {
      const m = await metrics(server.url);
      return m.llmc_num_requests_running === 0 && m.llmc_kv_cache_usage_ratio === 0;
    }, 1500);
  }
  assert.equal((await fetch(`${server.url}/health`)).status, 200);
});

test('metrics count responses, tokens and latencies', async () => {
  const m = await metrics(server.url);
  assert.ok(m['llmc_http_responses_total{endpoint="/v1/chat/completions",status="200"}'] >= 4);
  assert.ok(m['llmc_http_responses_total{endpoint="/v1/completions",status="400"}'] >= 9);
  assert.ok(m.llmc_generation_tokens_total > 100);
  assert.ok(m.llmc_time_to_first_token_seconds_count > 0);
  assert.ok(m.llmc_inter_token_latency_seconds_count > 0);
  assert.ok(m.llmc_prefix_cache_hits_total > 0);
  assert.ok(m.llmc_prefix_cache_hit_rate > 0 && m.llmc_prefix_cache_hit_rate < 1);
  assert.equal(m['llmc_time_to_first_token_seconds_bucket{le="+Inf"}'], m.llmc_time_to_first_token_seconds_count);
  // The forwards took time; the host's gaps between them are counted too.
  assert.ok(m.llmc_forward_seconds_total > 0);
  assert.ok(m.llmc_host_seconds_between_forwards_total > 0);
});

test('a KV cache smaller than the engine\'s context is the served context', async () => {
  const small = await startServer(['--kv-cache-tokens', '256']);
  try {
    const client = small.client();
    const models = (await client.models.list()).data;
    assert.equal(models[0].max_model_len, 256);
    // Without max_tokens a chat completion may use the rest of the served context.
    const chat = await client.chat.completions.create({
      model: 'engine', messages: [{ role: 'user', content: 'Hello' }], ignore_eos: true });
    assert.equal(chat.choices[0].finish_reason, 'length');
    assert.equal(chat.usage.prompt_tokens + chat.usage.completion_tokens, 256);
    await assert.rejects(client.completions.create({ model: 'engine', prompt: 'Hi', max_tokens: 300 }),
      (error) => error.status === 400 && error.code === 'context_length_exceeded');
  } finally {
    assert.equal(await small.stop(), 0);
  }
});

test('an API key is required when set; a full queue is a 429; large bodies are 413', async () => {
  const guarded = await startServer(['--api-key', 'sesame', '--max-seqs-per-forward', '1',
    '--max-queued-requests', '2', '--max-request-bytes', '4096']);
  try {
    await assert.rejects(guarded.client().models.list(), (error) => error instanceof OpenAI.AuthenticationError);
    await assert.rejects(guarded.client({ apiKey: 'wrong' }).models.list(), (error) => error.status === 401);
    assert.equal((await fetch(`${guarded.url}/health`)).status, 200, '/health stays open');
    const authorised = guarded.client({ apiKey: 'sesame' });
    const results = await Promise.allSettled(Array.from({ length: 8 }, () =>
      authorised.completions.create({ model: 'engine', prompt: 'Hi', max_tokens: 60, ignore_eos: true })));
    const refused = results.filter((r) => r.status === 'rejected');
    assert.ok(refused.length >= 1 && refused.length <= 6, `${refused.length} refused`);
    for (const r of refused) assert.ok(r.reason instanceof OpenAI.RateLimitError, String(r.reason));
    for (const r of results.filter((r) => r.status === 'fulfilled'))
      assert.equal(r.value.usage.completion_tokens, 60);
    const large = await fetch(`${guarded.url}/v1/completions`, {
      method: 'POST', headers: { Authorization: 'Bearer sesame' },
      body: JSON.stringify({ prompt: 'x'.repeat(5000) }),
    });
    assert.equal(large.status, 413);
  } finally {
    assert.equal(await guarded.stop(), 0);
  }
});
