// Process helpers shared by the compatibility tests: start real `warden` / `warden sim` processes on
// free loopback ports, wait for them, stop them, and kill anything left if the runner dies.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const WARDEN = process.env.WARDEN_BIN || path.resolve(here, '../../build/warden');

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export const children = [];

export function start(name, args, dir, env = process.env) {
  const out = path.join(dir, `${name}.out`);
  const err = path.join(dir, `${name}.err`);
  const child = spawn(WARDEN, args, { env, stdio: ['ignore', fs.openSync(out, 'w'), fs.openSync(err, 'w')] });
  const rec = { name, child, out, err, exited: null };
  child.on('exit', (code, signal) => { rec.exited = { code, signal }; });
  child.on('error', (e) => { rec.exited = { error: e }; });
  children.push(rec);
  return rec;
}

export function tail(file, n = 20) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-n).join('\n');
  } catch {
    return '';
  }
}

export function describeChild(rec) {
  return `${rec.name} (${rec.child.spawnargs.join(' ')})\n--- stdout\n${tail(rec.out)}\n--- stderr\n${tail(rec.err)}`;
}

export function tryConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

export async function waitPort(port, rec, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (rec.exited) throw new Error(`exited ${JSON.stringify(rec.exited)} before listening on ${port}: ${describeChild(rec)}`);
    if (await tryConnect(port)) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listening on ${port} after ${timeoutMs} ms: ${describeChild(rec)}`);
}

export function stop(rec) {
  return new Promise((resolve) => {
    if (rec.exited || rec.child.exitCode !== null || rec.child.signalCode !== null) return resolve();
    const timer = setTimeout(() => rec.child.kill('SIGKILL'), 10000);
    rec.child.once('exit', () => { clearTimeout(timer); resolve(); });
    rec.child.kill('SIGTERM');
  });
}

process.on('exit', () => {
  for (const rec of children) {
    if (!rec.exited) try { rec.child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

