// The official `openai` npm SDK against warden's rate limits (issue 6): a 429 from warden is an
// SDK RateLimitError with OpenAI's error shape, and the SDK's own retry honours warden's
// Retry-After / retry-after-ms, so an application that keeps the SDK's default retries gets in as
// soon as the limit allows, without any change.
//
// Starts its own `warden sim` and `warden serve` on free loopback ports with
// rate_limits.per_ip.rpm = 20: GCRA with emission interval T = 60 s / 20 = 3 s and a burst of 20.
// (rpm 20 rather than 2: the same behaviour with a 3 s wait instead of 30 s; and 3 s is longer than
// the SDK's own backoff for two retries, 0.375-1.5 s in total, so only honouring the header can
// succeed.) Run: WARDEN_BIN=/path/to/warden node --test tests/compat/
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI, { RateLimitError } from 'openai';
import { WARDEN, children, freePort, start, tail, describeChild, waitPort, stop } from './harness.mjs';

const UPSTREAM_KEY = 'sim-upstream-key-ratelimit-3b9e05';
const RPM = 20;
const T_MS = 60000 / RPM;

// ---------------------------------------------------------------- process helpers


// ---------------------------------------------------------------- fixtures

let tmp;
let baseURL;
let auditPath;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'warden-compat-rl-'));
  const [simPort, listenPort, adminPort] = await Promise.all([freePort(), freePort(), freePort()]);
  auditPath = path.join(tmp, 'audit.jsonl');
  const sim = start('sim', ['sim', '--listen', `127.0.0.1:${simPort}`, '--api-key', UPSTREAM_KEY], tmp);
  await waitPort(simPort, sim);

  const cfg = path.join(tmp, 'warden.yaml');
  fs.writeFileSync(cfg, [
    `listen: 127.0.0.1:${listenPort}`,
    `admin: { address: 127.0.0.1:${adminPort} }`,
    'workers: 2',
    'log_level: info',
    'auth: { mode: none }',
    'upstreams:',
    `  - { name: sim, url: http://127.0.0.1:${simPort}/v1, api_key_env: COMPAT_UPSTREAM_KEY }`,
    'models:',
    '  - { name: gpt-4o-mini, upstream: sim, upstream_model: sim-small }',
    `audit: { file: "${auditPath}" }`,
    `rate_limits: { per_ip: { rpm: ${RPM} } }`,
    '',
  ].join('\n'));
  const gw = start('warden', ['serve', '-c', cfg], tmp, { ...process.env, COMPAT_UPSTREAM_KEY: UPSTREAM_KEY });
  await Promise.all([waitPort(listenPort, gw), waitPort(adminPort, gw)]);
  baseURL = `http://127.0.0.1:${listenPort}/v1`;
});

after(async () => {
  const crashed = children.filter((r) => r.exited);
  await Promise.all(children.map(stop));
  const bad = children.filter((r) => crashed.includes(r) || !r.exited || r.exited.code !== 0);
  const report = bad.map((r) => `${r.name} ended with ${JSON.stringify(r.exited)}: ${describeChild(r)}`).join('\n');
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (bad.length) throw new Error(`child processes did not stop cleanly:\n${report}`);
});

// A client whose fetch records every HTTP attempt the SDK makes (its retries included).
function recordingClient(maxRetries) {
  const attempts = [];
  const client = new OpenAI({
    apiKey: 'sk-unused-auth-is-off',
    baseURL,
    maxRetries,
    timeout: 15000,
    fetch: async (url, init) => {
      const a = { sent: performance.now() };
      attempts.push(a);
      const res = await fetch(url, init);
      a.received = performance.now();
      a.status = res.status;
      a.retryAfter = res.headers.get('retry-after');
      a.retryAfterMs = res.headers.get('retry-after-ms');
      return res;
    },
  });
  return { client, attempts };
}

// Audit events are flushed every 200 ms: poll until `enough` holds (or 3 s pass).
async function auditEvents(enough) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const text = fs.existsSync(auditPath) ? fs.readFileSync(auditPath, 'utf8') : '';
    const evs = text.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    if (enough(evs) || Date.now() > deadline) return evs;
    await new Promise((r) => setTimeout(r, 50));
  }
}

const params = { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] };

// ---------------------------------------------------------------- tests

test(`the first ${RPM} calls pass and report the remaining requests`, async () => {
  const { client, attempts } = recordingClient(0);
  const remaining = [];
  for (let i = 0; i < RPM; i++) {
    const { response } = await client.chat.completions.create(params).withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-ratelimit-limit-requests'), String(RPM));
    remaining.push(Number(response.headers.get('x-ratelimit-remaining-requests')));
  }
  // one cell per call out of a burst of RPM; the run takes far less than T = 3 s, so nothing refills
  assert.deepEqual(remaining, Array.from({ length: RPM }, (_, i) => RPM - 1 - i));
  assert.ok(attempts.at(-1).received - attempts[0].sent < T_MS, 'the burst was too slow to stay within one interval');
});

test('with maxRetries: 0 the next call raises RateLimitError (429, rate_limit_exceeded)', async () => {
  const { client, attempts } = recordingClient(0);
  await assert.rejects(client.chat.completions.create(params), (err) => {
    assert.ok(err instanceof RateLimitError, `expected RateLimitError, got ${err?.constructor?.name}: ${err}`);
    assert.equal(err.status, 429);
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.equal(err.type, 'rate_limit_error');
    assert.match(err.message, /20 requests per minute/);
    const ms = Number(err.headers.get('retry-after-ms'));
    assert.ok(Number.isInteger(ms) && ms > 0 && ms <= T_MS, `retry-after-ms ${ms}`);
    assert.equal(err.headers.get('retry-after'), String(Math.ceil(ms / 1000)));
    assert.equal(err.headers.get('x-ratelimit-remaining-requests'), '0');
    return true;
  });
  assert.equal(attempts.length, 1, 'maxRetries: 0 must not retry');
});

test('with maxRetries: 2 the SDK waits the advertised retry-after-ms and then succeeds', async () => {
  const { client, attempts } = recordingClient(2);
  const t0 = performance.now();
  const { data, response } = await client.chat.completions.create(params).withResponse();
  const elapsed = performance.now() - t0;
  assert.equal(response.status, 200);
  assert.equal(data.object, 'chat.completion');

  assert.equal(attempts.length, 2, `expected one refusal then one success: ${JSON.stringify(attempts)}`);
  const [first, second] = attempts;
  assert.equal(first.status, 429);
  assert.equal(second.status, 200);
  const advertised = Number(first.retryAfterMs);
  assert.ok(advertised > 0 && advertised <= T_MS, `retry-after-ms ${first.retryAfterMs}`);
  assert.equal(first.retryAfter, String(Math.ceil(advertised / 1000)));
  // the SDK slept what warden advertised before retrying (its own backoff would be 0.375-0.5 s, and
  // a retry that came too early would have been refused again)
  const waited = second.sent - first.received;
  assert.ok(waited >= advertised - 50, `the SDK retried after ${waited.toFixed(0)} ms, warden asked for ${advertised} ms`);
  assert.ok(elapsed >= advertised - 50 && elapsed < advertised + 2000, `call took ${elapsed.toFixed(0)} ms`);
  // and warden's delay was the exact one: the retry passed at the first attempt
  assert.ok(advertised > 500, `retry-after-ms ${advertised} too short to tell the SDK's backoff from the header`);

  // the audit log has the refused attempt as a 429 with the rule that refused it
  const events = await auditEvents((evs) => evs.length >= RPM + 3);
  const refused = events.filter((e) => e.status === 429);
  assert.equal(refused.length, 2, 'one refusal per 429 the SDK saw (maxRetries 0 test and this one)');
  for (const e of refused) {
    assert.equal(e.code, 'rate_limit_exceeded');
    assert.equal(e.rule, 'limit:ip:127.0.0.1:rpm');
  }
  assert.equal(events.filter((e) => e.status === 200).length, RPM + 1);
});
