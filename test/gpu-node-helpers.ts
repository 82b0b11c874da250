// Shared pieces of the gpu-node tests: tiny datasets and run configs, a private redis-server,
// a logger that records, and polling.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { afterAll } from 'vitest';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from '../src/lib/log.js';

export const PYTHON = '/usr/bin/python3';
export const TRAINERS = path.resolve(import.meta.dirname, '..', 'trainers');

const tempDirs: string[] = [];
// Registered on the test file that imports this module: its temp dirs (checkpoints included) go with it.
afterAll(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `cvtrain-gpu-node-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/** The trainers' synthetic shapes dataset (image_folder for classifiers: fastest on CPU). */
export function makeDataset(out: string, format: 'yolo' | 'coco' | 'image_folder' = 'image_folder', images = 8): string {
  execFileSync(PYTHON, ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', out, '--format', format, '--images', String(images), '--seed', '0', '--size', '64'], {
    env: { ...process.env, PYTHONPATH: TRAINERS },
    stdio: 'pipe',
  });
  return out;
}

/** run.json of a classifier that trains in about a second per epoch on a CPU. */
export function tinyConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    task: 'classification',
    framework: 'torchvision',
    architecture: 'mobilenet_v3_small',
    epochs: 2,
    batch_size: 4,
    image_size: 32,
    max_batches_per_epoch: 1,
    max_val_batches: 1,
    num_workers: 0,
    export: [],
    progress_interval_s: 0,
    ...overrides,
  };
}

export { freePort, PrivateRedis, waitFor } from './helpers/processes.js';


export interface RecordedLine {
  level: string;
  component: string;
  msg: string;
  fields?: Record<string, unknown>;
}

/** A Logger that keeps lines in memory (and prints them when GPU_NODE_TEST_LOG=1). */
export function recordingLogger(lines: RecordedLine[] = [], component = 'gpu-node'): Logger & { lines: RecordedLine[] } {
  const print = process.env.GPU_NODE_TEST_LOG === '1';
  const make = (c: string): Logger => {
    const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
      lines.push({ level, component: c, msg, fields });
      if (print) process.stderr.write(`${level} [${c}] ${msg} ${fields ? JSON.stringify(fields) : ''}\n`);
    };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (sub) => make(`${c}:${sub}`) };
  };
  return Object.assign(make(component), { lines });
}

// ---------------------------------------------------------------- a stateful fake of the node API

export interface FakeSession {
  id: string;
  attempt: number;
  status: 'QUEUED' | 'RUNNING' | 'CANCELLED' | 'RELEASED';
  datasetSha256: string;
  claimedBy: string | null;
  resume: { key: string } | null;
}

/**
 * PROTOCOL.md §2 as a small in-memory server: sessions with an attempt fence, presigned-style
 * URLs for datasets and uploads, and a record of every call, so tests can assert what a node
 * said. It plays the API, not a mock of one: wrong tokens get 401, stale attempts 409.
 */
export class FakeNodeApi {
  readonly token = 'fake-node-token';
  url = '';
  readonly sessions = new Map<string, FakeSession>();
  readonly files = new Map<string, Buffer>();
  readonly stored = new Map<string, { sha256: string; sizeBytes: number; body: Buffer }>();
  readonly calls: { path: string; body: any; status: number }[] = [];
  readonly nodes = new Set<string>();
  /** Milliseconds to wait before answering a GET of these files (slow downloads). */
  readonly slowFiles = new Map<string, number>();
  /** GETs of each file (datasets, resume checkpoints). */
  readonly downloads = new Map<string, number>();
  heartbeatIntervalMs = 200;
  /** Heartbeat answers repeat these (PROTOCOL.md §2). */
  readonly pendingCancels: { sessionId: string; attempt: number }[] = [];
  readonly stopSessions = new Set<string>();
  /**
   * Heartbeat answers also say "stop" for every reported session that is not RUNNING on that
   * node, as the real API does (src/modules/nodes/http.ts), not only for stopSessions.
   */
  stopWhatIsNotRunningHere = false;
  /** Milliseconds a claim of these sessions waits before it is granted (a slow API). */
  readonly slowClaims = new Map<string, number>();
  /** Presigned requests must carry this header, as S3/Azure signed headers must. */
  readonly signedHeader = { 'x-fake-signature': 'ok' };
  private server: import('node:http').Server | null = null;
  private uploadSeq = 0;

  async start(): Promise<this> {
    const http = await import('node:http');
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server!.address() as import('node:net').AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  addFile(name: string, body: Buffer): string {
    this.files.set(name, body);
    return createHash('sha256').update(body).digest('hex');
  }

  addSession(id: string, attempt: number, datasetSha256: string): FakeSession {
    const s: FakeSession = { id, attempt, status: 'QUEUED', datasetSha256, claimedBy: null, resume: null };
    this.sessions.set(id, s);
    return s;
  }

  callsTo(suffix: string): { path: string; body: any; status: number }[] {
    return this.calls.filter((c) => c.path.endsWith(suffix));
  }

  private async handle(req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const url = new URL(req.url!, this.url);
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const signed = req.headers['x-fake-signature'] === 'ok';
    if (req.method === 'GET' && url.pathname.startsWith('/files/')) {
      if (!signed) return void res.writeHead(403).end('missing signed header');
      const name = decodeURIComponent(url.pathname.slice('/files/'.length));
      this.downloads.set(name, (this.downloads.get(name) ?? 0) + 1);
      const slow = this.slowFiles.get(name);
      if (slow) await new Promise((r) => setTimeout(r, slow));
      const body = name.startsWith('stored:') ? this.stored.get(name.slice('stored:'.length))?.body : this.files.get(name);
      if (!body) return void res.writeHead(404).end();
      return void res.writeHead(200, { 'content-length': body.length }).end(body);
    }
    if (req.method === 'PUT' && url.pathname.startsWith('/put/')) {
      if (!signed) return void res.writeHead(403).end('missing signed header');
      const key = decodeURIComponent(url.pathname.slice('/put/'.length));
      this.stored.set(key, { sha256: createHash('sha256').update(raw).digest('hex'), sizeBytes: raw.length, body: raw });
      return void res.writeHead(200).end();
    }
    const body = raw.length ? JSON.parse(raw.toString()) : null;
    const record = (status: number, answer: unknown) => {
      this.calls.push({ path: url.pathname, body, status });
      send(status, answer);
    };
    if (req.headers.authorization !== `Bearer ${this.token}`) return record(401, { error: 'unauthorized', message: 'bad node token' });
    if (url.pathname === '/node/v1/register') {
      this.nodes.add(body.nodeId);
      return record(200, { heartbeatIntervalMs: this.heartbeatIntervalMs, offlineAfterMs: this.heartbeatIntervalMs * 5 });
    }
    if (url.pathname === '/node/v1/heartbeat') {
      if (!this.nodes.has(body.nodeId)) return record(404, { error: 'unknown_node', message: 'register first' });
      const stop = new Set(this.stopSessions);
      if (this.stopWhatIsNotRunningHere) {
        for (const id of body.runningSessionIds as string[]) {
          const s = this.sessions.get(id);
          if (s?.status !== 'RUNNING' || s.claimedBy !== body.nodeId) stop.add(id);
        }
      }
      return record(200, { ok: true, cancel: this.pendingCancels, stop: [...stop] });
    }
    const m = /^\/node\/v1\/sessions\/([^/]+)\/(claim|uploads|released)$/.exec(url.pathname);
    const session = m ? this.sessions.get(decodeURIComponent(m[1])) : undefined;
    if (!m) return record(404, { error: 'not_found', message: 'no such route' });
    if (!session || body.attempt !== session.attempt) return record(409, { error: 'stale_attempt', message: 'not the current attempt' });
    if (m[2] === 'claim') {
      const slow = this.slowClaims.get(session.id);
      if (slow) await new Promise((r) => setTimeout(r, slow));
      if (session.status !== 'QUEUED') return record(409, { error: 'stale_attempt', message: `session is ${session.status}` });
      session.status = 'RUNNING';
      session.claimedBy = body.nodeId;
      const dataset = this.files.get(session.datasetSha256)!;
      const resume = session.resume ? this.stored.get(session.resume.key)! : null;
      return record(200, {
        dataset: { url: `/files/${session.datasetSha256}`, headers: this.signedHeader, sha256: session.datasetSha256, format: 'image_folder', sizeBytes: dataset.length, filename: 'shapes.zip' },
        resume: resume ? { url: `/files/${encodeURIComponent('stored:' + session.resume!.key)}`, headers: this.signedHeader, sha256: resume.sha256 } : null,
      });
    }
    if (session.status !== 'RUNNING' || session.claimedBy !== body.nodeId) return record(409, { error: 'stale_attempt', message: `session is ${session.status}` });
    if (m[2] === 'uploads') {
      const key = `orgs/o/sessions/${session.id}/${session.attempt}/${++this.uploadSeq}-${body.name}`;
      return record(200, { url: `${this.url}/put/${encodeURIComponent(key)}`, headers: this.signedHeader, key, expiresAt: new Date(Date.now() + 3600_000).toISOString() });
    }
    session.status = 'RELEASED';
    return record(200, { ok: true });
  }
}

/** A zip of a generated dataset, as a user would upload it (one top-level folder). */
export function zipDataset(datasetDir: string, out: string): Buffer {
  execFileSync('zip', ['-qr', out, path.basename(datasetDir)], { cwd: path.dirname(datasetDir) });
  return readFileSync(out);
}
