// Compatibility of the official `openai` npm SDK with a real warden gateway.
//
// Starts its own `warden sim` upstreams and `warden serve` on free loopback ports, with a config
// generated into a temporary directory, and drives them through the SDK exactly as an application
// would. Run: WARDEN_BIN=/path/to/warden node --test tests/compat/
//
// Upstreams:
//   sim     healthy simulator that demands the upstream credential (so a request only succeeds if
//           warden injected it) and echoes what it received in "sim_request" (--echo-headers)
//   broken  simulator that cuts every stream after 2 events (--disconnect-after 2)
//   dead    a port nothing listens on
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI, {
  APIError,
  BadRequestError,
  InternalServerError,
  NotFoundError,
  PermissionDeniedError,
  AuthenticationError,
} from 'openai';
import { execFileSync } from 'node:child_process';
import { WARDEN, children, freePort, start, tail, describeChild, waitPort, stop } from './harness.mjs';

const UPSTREAM_KEY = 'sim-upstream-key-compat-7e21a9'; // only warden and the sim know it
let CLIENT_KEY; // a real warden API key, created in before()
const PROMPT = 'the quick brown fox jumps over the lazy dog';
const REQ_ID = 'x-warden-request-id';

// ---------------------------------------------------------------- process helpers


// ---------------------------------------------------------------- fixtures

let tmp;
let gw; // the warden serve child
let baseURL;
let client; // retries disabled everywhere: every failure must surface at once, not after backoff
let auditPath;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warden-compat-'));
  const [simPort, brokenPort, deadPort, listenPort, adminPort] = await Promise.all(
    Array.from({ length: 5 }, freePort),
  );
  auditPath = path.join(tmp, 'audit.jsonl');

  const sim = start('sim', ['sim', '--listen', `127.0.0.1:${simPort}`, '--api-key', UPSTREAM_KEY, '--echo-headers'], tmp);
  const broken = start('sim-broken', ['sim', '--listen', `127.0.0.1:${brokenPort}`, '--disconnect-after', '2'], tmp);
  await Promise.all([waitPort(simPort, sim), waitPort(brokenPort, broken)]);

  const cfg = path.join(tmp, 'warden.yaml');
  const state = path.join(tmp, 'state');
  execFileSync(WARDEN, ['init', '--state-dir', state], { stdio: 'ignore' });
  fs.writeFileSync(cfg, [
    `listen: 127.0.0.1:${listenPort}`,
    `admin: { address: 127.0.0.1:${adminPort} }`,
    'workers: 2',
    'log_level: info',
    // The SDK sends its apiKey as Authorization: Bearer: a real warden key of a role granting the
    // models this suite uses.
    `state_dir: ${state}`,
    'auth: { mode: required }',
    'roles:',
    '  app: { models: ["gpt-*", text-embedding-3-small, flaky-stream, offline], endpoints: [chat, completions, embeddings, models] }',
    'upstreams:',
    `  - { name: sim, url: http://127.0.0.1:${simPort}/v1, api_key_env: COMPAT_UPSTREAM_KEY }`,
    `  - { name: broken, url: http://127.0.0.1:${brokenPort}/v1, api_key_env: COMPAT_UPSTREAM_KEY }`,
    `  - { name: dead, url: http://127.0.0.1:${deadPort}/v1, api_key_env: COMPAT_UPSTREAM_KEY, connect_timeout_ms: 2s }`,
    'models:',
    '  - { name: gpt-4o-mini, upstream: sim, upstream_model: sim-small }',
    '  - { name: text-embedding-3-small, upstream: sim, upstream_model: sim-small }',
    '  - { name: flaky-stream, upstream: broken, upstream_model: sim-small }',
    '  - { name: offline, upstream: dead, upstream_model: sim-small }',
    `audit: { file: "${auditPath}" }`,
    '',
  ].join('\n'));

  const env = { ...process.env, COMPAT_UPSTREAM_KEY: UPSTREAM_KEY };
  CLIENT_KEY = execFileSync(WARDEN, ['key', 'create', '-c', cfg, '--name', 'compat', '--role', 'app', '--quiet'],
    { env }).toString().trim();
  gw = start('warden', ['serve', '-c', cfg], tmp, env);
  await Promise.all([waitPort(listenPort, gw), waitPort(adminPort, gw)]);

  baseURL = `http://127.0.0.1:${listenPort}/v1`;
  client = new OpenAI({ apiKey: CLIENT_KEY, baseURL, maxRetries: 0, timeout: 15000 });
});

after(async () => {
  // A child that is already gone crashed during the tests; one that does not exit 0 on SIGTERM
  // failed to drain (or crashed on shutdown). Either fails the run, with the child's output.
  const crashed = children.filter((r) => r.exited);
  await Promise.all(children.map(stop));
  const bad = children.filter((r) => crashed.includes(r) || !r.exited || r.exited.code !== 0);
  const report = bad.map((r) => `${r.name} ended with ${JSON.stringify(r.exited)}: ${describeChild(r)}`).join('\n');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (bad.length) throw new Error(`child processes did not stop cleanly:\n${report}`);
});

function reqId(headers) {
  const id = headers.get(REQ_ID);
  assert.ok(id && /^[0-9A-Za-z_-]{8,}$/.test(id), `${REQ_ID} missing or malformed: ${id}`);
  return id;
}

// The audit line for one request id; events may be written just after the response ends.
async function auditEvent(id, timeoutMs = 3000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = fs.existsSync(auditPath) ? fs.readFileSync(auditPath, 'utf8') : '';
    for (const line of text.split('\n')) {
      if (!line) continue;
      const ev = JSON.parse(line); // every line must be one JSON object
      if (ev.request_id === id) return { ev, text };
    }
    if (Date.now() > deadline) throw new Error(`no audit event for request ${id}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const chatParams = (extra = {}) => ({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: PROMPT }],
  ...extra,
});

// ---------------------------------------------------------------- tests

describe('chat.completions.create', () => {
  test('non-streamed: reply echoes the prompt, usage present, request id header', async () => {
    const { data, response } = await client.chat.completions.create(chatParams()).withResponse();
    assert.equal(response.status, 200);
    const id = reqId(response.headers);
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.ok(data.choices[0].message.content.includes(PROMPT), `reply does not echo the prompt: ${data.choices[0].message.content}`);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.ok(data.usage, 'usage missing');
    assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0);
    assert.equal(data.usage.total_tokens, data.usage.prompt_tokens + data.usage.completion_tokens);

    // The access log names the request, and holds neither the prompt nor any credential.
    const { ev, text } = await auditEvent(id);
    assert.equal(ev.status, 200);
    assert.equal(ev.model, 'gpt-4o-mini');
    assert.equal(ev.upstream_model, 'sim-small');
    assert.equal(ev.stream, false);
    assert.ok(!text.includes(PROMPT), 'audit log contains a prompt body');
    assert.ok(!text.includes(UPSTREAM_KEY), 'audit log contains the upstream key');
    assert.ok(!text.includes(CLIENT_KEY), 'audit log contains the client key');
  });

  test('streamed: deltas concatenate to the full reply, no chunk without choices', async () => {
    const full = (await client.chat.completions.create(chatParams())).choices[0].message.content;

    const { data: stream, response } = await client.chat.completions
      .create(chatParams({ stream: true }))
      .withResponse();
    assert.equal(response.status, 200);
    reqId(response.headers);
    assert.match(response.headers.get('content-type'), /^text\/event-stream/);

    let text = '';
    let n = 0;
    let finish = null;
    for await (const chunk of stream) {
      n++;
      assert.equal(chunk.object, 'chat.completion.chunk');
      // The client did not ask for usage: a chunk with empty choices breaks naive clients
      // (chunk.choices[0].delta) even though warden may ask the upstream for usage itself.
      assert.ok(chunk.choices.length > 0, `chunk ${n} has no choices: ${JSON.stringify(chunk)}`);
      assert.ok(chunk.usage == null, `chunk ${n} carries usage the client did not ask for`);
      text += chunk.choices[0].delta?.content ?? '';
      if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
    }
    assert.ok(n >= 2, `expected several chunks, got ${n}`);
    assert.equal(text, full);
    assert.equal(finish, 'stop');
  });

  test('streamed with include_usage: the final chunk carries usage and no choices', async () => {
    const stream = await client.chat.completions.create(
      chatParams({ stream: true, stream_options: { include_usage: true } }),
    );
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.ok(chunks.length >= 3, `expected several chunks, got ${chunks.length}`);
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], 'the usage chunk must have empty choices');
    assert.ok(last.usage && last.usage.total_tokens > 0, `final chunk lacks usage: ${JSON.stringify(last)}`);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    for (const c of chunks.slice(0, -1)) {
      assert.ok(c.choices.length > 0, `non-final chunk without choices: ${JSON.stringify(c)}`);
      assert.ok(c.usage == null, 'usage before the final chunk');
    }
    const text = chunks.slice(0, -1).map((c) => c.choices[0].delta?.content ?? '').join('');
    assert.ok(text.includes(PROMPT), `streamed reply does not echo the prompt: ${text}`);
  });

  test('a stream the upstream cuts mid-way makes the iterator throw an APIError', async () => {
    const { data: stream, response } = await client.chat.completions
      .create(chatParams({ model: 'flaky-stream', stream: true }))
      .withResponse();
    assert.equal(response.status, 200); // the head went out before the upstream broke
    const id = reqId(response.headers);
    let got = 0;
    await assert.rejects(
      (async () => { for await (const _ of stream) got++; })(), // eslint-disable-line no-unused-vars
      (err) => {
        assert.ok(err instanceof APIError, `expected APIError, got ${err?.constructor?.name}: ${err}`);
        assert.ok(err.error && typeof err.error.message === 'string' && err.error.message.length > 0,
          `error event without a message: ${JSON.stringify(err.error)}`);
        assert.equal(err.error.type, 'server_error');
        return true;
      },
    );
    assert.ok(got >= 1, 'the events before the break should have reached the client');
    const { ev } = await auditEvent(id);
    assert.equal(ev.stream, true);
    assert.notEqual(ev.decision, 'allow', 'a broken stream must not be logged as a clean success');
  });
});

describe('other endpoints', () => {
  test('models.list returns the configured client-facing models', async () => {
    const { data: page, response } = await client.models.list().withResponse();
    assert.equal(response.status, 200);
    reqId(response.headers);
    const ids = [];
    for await (const m of page) {
      assert.equal(m.object, 'model');
      ids.push(m.id);
    }
    for (const want of ['gpt-4o-mini', 'text-embedding-3-small', 'flaky-stream', 'offline']) {
      assert.ok(ids.includes(want), `models.list lacks ${want}: ${ids}`);
    }
    assert.ok(!ids.includes('sim-small'), 'upstream model names must not be listed');
  });

  test('embeddings.create returns one vector per input', async () => {
    const { data, response } = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: ['first text', 'second text'] })
      .withResponse();
    assert.equal(response.status, 200);
    reqId(response.headers);
    assert.equal(data.object, 'list');
    assert.equal(data.data.length, 2);
    data.data.forEach((e, i) => {
      assert.equal(e.object, 'embedding');
      assert.equal(e.index, i);
      assert.ok(Array.isArray(e.embedding) && e.embedding.length > 0, 'empty vector');
      assert.ok(e.embedding.every((x) => typeof x === 'number' && Number.isFinite(x)));
    });
    assert.ok(data.usage && data.usage.prompt_tokens > 0);
  });
});

describe('error mapping', () => {
  test('unknown model inside the role\'s namespace (gpt-*) -> NotFoundError 404 model_not_found', async () => {
    await assert.rejects(client.chat.completions.create(chatParams({ model: 'gpt-no-such-model' })), (err) => {
      assert.ok(err instanceof NotFoundError, `expected NotFoundError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 404);
      assert.equal(err.code, 'model_not_found');
      assert.equal(err.param, 'model');
      reqId(err.headers);
      return true;
    });
  });

  test('model outside the role -> PermissionDeniedError 403 model_not_permitted (no existence leak)', async () => {
    await assert.rejects(client.chat.completions.create(chatParams({ model: 'no-such-model' })), (err) => {
      assert.ok(err instanceof PermissionDeniedError, `expected PermissionDeniedError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 403);
      assert.equal(err.code, 'model_not_permitted');
      reqId(err.headers);
      return true;
    });
  });

  test('a wrong API key -> AuthenticationError 401 invalid_api_key', async () => {
    const bad = new OpenAI({ apiKey: 'wdk_000000000000_' + 'a'.repeat(49), baseURL, maxRetries: 0 });
    await assert.rejects(bad.models.list(), (err) => {
      assert.ok(err instanceof AuthenticationError, `expected AuthenticationError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.code, 'invalid_api_key');
      return true;
    });
  });

  test('invalid parameters rejected by warden -> BadRequestError 400', async () => {
    await assert.rejects(client.chat.completions.create(chatParams({ model: 42 })), (err) => {
      assert.ok(err instanceof BadRequestError, `expected BadRequestError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.equal(err.type, 'invalid_request_error');
      assert.equal(err.param, 'model');
      reqId(err.headers);
      return true;
    });
  });

  test('invalid parameters rejected by the upstream -> BadRequestError 400, passed through', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o-mini', messages: 'not-an-array' }), (err) => {
      assert.ok(err instanceof BadRequestError, `expected BadRequestError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 400);
      assert.ok(err.error && typeof err.error.message === 'string');
      reqId(err.headers);
      return true;
    });
  });

  test('upstream down -> InternalServerError 502, fast, no retries', async () => {
    const t0 = Date.now();
    await assert.rejects(client.chat.completions.create(chatParams({ model: 'offline' })), (err) => {
      assert.ok(err instanceof InternalServerError, `expected InternalServerError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 502);
      assert.equal(err.type, 'server_error');
      assert.ok(err.code, 'error.code missing');
      reqId(err.headers);
      return true;
    });
    assert.ok(Date.now() - t0 < 5000, 'a refused upstream connection should fail at once');
  });

  test('upstream down while streaming -> InternalServerError 502 before any chunk', async () => {
    await assert.rejects(client.chat.completions.create(chatParams({ model: 'offline', stream: true })), (err) => {
      assert.ok(err instanceof InternalServerError, `expected InternalServerError, got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 502);
      reqId(err.headers);
      return true;
    });
  });
});

describe('gateway hygiene', () => {
  test('the upstream sees warden\'s credential and the rewritten model, never the client key', async () => {
    const r = await client.chat.completions.create(chatParams());
    const seen = r.sim_request; // what the simulator received, echoed by --echo-headers
    assert.ok(seen && seen.headers, `no sim_request in the reply: ${JSON.stringify(r)}`);
    assert.equal(seen.authorization, `Bearer ${UPSTREAM_KEY}`);
    assert.ok(!JSON.stringify(seen).includes(CLIENT_KEY), 'the client key reached the upstream');
    assert.equal(JSON.parse(seen.body).model, 'sim-small', 'model not rewritten to upstream_model');
  });

  test('every raw response carries x-warden-request-id, unique per request', async () => {
    const ids = new Set();
    const raws = await Promise.all([
      client.chat.completions.create(chatParams()).asResponse(),
      client.models.list().asResponse(),
      client.embeddings.create({ model: 'text-embedding-3-small', input: 'x' }).asResponse(),
    ]);
    for (const r of raws) {
      ids.add(reqId(r.headers));
      await r.arrayBuffer();
    }
    assert.equal(ids.size, raws.length, 'request ids repeat');
  });
});
