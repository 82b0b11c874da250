// npm run bench:platform — issue 5's platform figures, measured on this machine in one run:
//   1. event latency, trainer write -> subscriber receives (p50/p99) with 1, 100, 1000 subscribers
//      on one session, next to raw Redis pub/sub on loopback;
//   2. fan-out: one event to 10,000 websocket subscribers on one API process (all delivered
//      within 1 s? server RSS);
//   3. submission: trainModel mutations per second until QUEUED;
//   4. recovery: SIGKILL of a gpu-node -> the session RUNNING again on another node.
// The trainer is bench/standin (the real protocol, no PyTorch), so the figures are the
// platform's: gpu-node -> Redis stream -> ingester -> PostgreSQL -> pub/sub -> graphql-ws.
//
// BENCH_ONLY=latency,fanout,submission,recovery runs a subset; BENCH_FANOUT=10000 sets the size.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { Redis } from 'ioredis';
import pg from 'pg';
import WebSocket from 'ws';
import { dropDatabase, ensureDatabase } from '../src/db/orm.js';
import { benchSecrets, gql, startBenchApi } from './lib.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PG_BASE = process.env.CVTRAIN_BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432';
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const ONLY = new Set((process.env.BENCH_ONLY ?? 'latency,fanout,submission,recovery').split(','));
const FANOUT = Number(process.env.BENCH_FANOUT ?? 10_000);

const log = (s: string) => process.stderr.write(`[bench] ${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

interface Platform {
  api: ChildProcess;
  url: string;
  wsUrl: string;
  dbUrl: string;
  db: pg.Client;
  prefix: string;
  env: NodeJS.ProcessEnv;
  token: string;
  modelId: string;
  versionId: string;
  profileId: string;
}

async function startPlatform(): Promise<Platform> {
  const dbUrl = `${PG_BASE}/cvtrain_pbench_${randomBytes(3).toString('hex')}`;
  await ensureDatabase(dbUrl);
  const prefix = `cvtrain-pbench-${randomBytes(3).toString('hex')}:`;
  const env = {
    ...process.env,
    NODE_ENV: 'production',
    DATABASE_URL: dbUrl,
    REDIS_URL,
    CVTRAIN_REDIS_PREFIX: prefix,
    CVTRAIN_LOG_LEVEL: 'warn',
    ...benchSecrets(),
    CVTRAIN_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'cvtrain-pbench-')),
    CVTRAIN_LOCAL_GPU_NODE: '0',
    // The fan-out opens 10,000 sockets with one user's token, far above the per-user cap of real use.
    CVTRAIN_WS_MAX_CONNECTIONS_PER_USER: '100000',
    // Thousands of subscriptions of one user within seconds: past the per-user default (50/s).
    CVTRAIN_RATE_LIMIT_RPS: '1000000',
  };
  const api = await startBenchApi(env);
  const p = { url: api.url, wsUrl: api.wsUrl };
  const su = await gql(
    p.url,
    `mutation($i: SignUpInput!) { signUp(input: $i) { ... on SignUpSuccess { authPayload { token } } } }`,
    { i: { email: `bench-${randomBytes(3).toString('hex')}@example.com`, password: 'benchmark password', organizationName: 'Bench' } },
  );
  const token = su.signUp.authPayload.token as string;
  // A tiny real dataset, uploaded the way a user does (the stand-in trainer ignores its content).
  const work = mkdtempSync(path.join(tmpdir(), 'cvtrain-pbench-data-'));
  execFileSync('/usr/bin/python3', ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', `${work}/d`, '--format', 'image_folder', '--images', '12', '--seed', '0', '--size', '32'], {
    env: { ...process.env, PYTHONPATH: path.join(repoRoot, 'trainers') },
  });
  execFileSync('tar', ['-czf', `${work}/d.tar.gz`, '-C', `${work}/d`, '.']);
  const ds = await gql(p.url, `mutation { createDataset(input: {name: "d", task: CLASSIFICATION}) { ... on CreateDatasetSuccess { dataset { id } } } }`, {}, token);
  const cv = await gql(
    p.url,
    `mutation($i: CreateDatasetVersionInput!) { createDatasetVersion(input: $i) { ... on CreateDatasetVersionSuccess { datasetVersionUpload { version { id } uploadUrl uploadHeaders } } } }`,
    { i: { datasetId: ds.createDataset.dataset.id, format: 'IMAGE_FOLDER', filename: 'd.tar.gz' } },
    token,
  );
  const up = cv.createDatasetVersion.datasetVersionUpload;
  await fetch(up.uploadUrl, { method: 'PUT', headers: { ...up.uploadHeaders, 'content-length': String(statSync(`${work}/d.tar.gz`).size) }, body: readFileSync(`${work}/d.tar.gz`) });
  await gql(p.url, `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { __typename } }`, { id: up.version.id }, token);
  rmSync(work, { recursive: true, force: true });
  const m = await gql(p.url, `mutation { createModel(input: {name: "m", task: CLASSIFICATION, framework: TORCHVISION, architecture: "resnet18"}) { ... on CreateModelSuccess { model { id } } } }`, {}, token);
  const pr = await gql(p.url, `mutation { createComputeProfile(input: {name: "gpus", provider: PLATFORM, strategy: QUEUE, isDefault: true}) { ... on CreateComputeProfileSuccess { computeProfile { id } } } }`, {}, token);
  const db = new pg.Client({ connectionString: dbUrl });
  await db.connect();
  return { api: api.child, ...p, dbUrl, db, prefix, env, token, modelId: m.createModel.model.id, versionId: up.version.id, profileId: pr.createComputeProfile.computeProfile.id };
}

async function trainModel(p: Platform, epochs: number): Promise<string> {
  const r = await gql(
    p.url,
    `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) { __typename ... on TrainModelSuccess { trainingSession { id status } } ... on Error { message } } }`,
    { m: p.modelId, i: { datasetVersionId: p.versionId, computeProfileId: p.profileId, config: { epochs, imageSize: 32, batchSize: 4 } } },
    p.token,
  );
  if (!r.trainModel.trainingSession) throw new Error(JSON.stringify(r.trainModel));
  return r.trainModel.trainingSession.id;
}

// Every gpu-node started, so that a scenario that fails still leaves none running behind it.
const nodes = new Set<ChildProcess>();

function startNode(p: Platform, intervalMs: number, extra: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'gpu-node/main.ts'], {
    cwd: repoRoot,
    env: {
      ...p.env,
      CVTRAIN_API_URL: p.url.replace(/\/graphql$/, ''),
      CVTRAIN_NODE_DATA_DIR: mkdtempSync(path.join(tmpdir(), 'cvtrain-pbench-node-')),
      CVTRAIN_NODE_ID: `bench-${randomBytes(3).toString('hex')}`,
      CVTRAIN_TRAINERS_DIR: path.join(repoRoot, 'bench', 'standin'),
      CVTRAIN_PYTHON: '/usr/bin/python3',
      STANDIN_EPOCH_INTERVAL_MS: String(intervalMs),
      CVTRAIN_LOG_LEVEL: process.env.BENCH_NODE_LOG_LEVEL ?? 'warn',
      ...extra,
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  nodes.add(child);
  child.once('exit', () => nodes.delete(child));
  return child;
}

async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await Promise.race([done, sleep(30_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

/** A minimal graphql-transport-ws subscriber (the full client costs more CPU than the server at 10k). */
function subscribe(p: Platform, sessionId: string, onEpoch: (metrics: Record<string, number>) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(p.wsUrl, 'graphql-transport-ws');
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${p.token}` } })));
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === 'connection_ack') {
        ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription($s: ID!) { trainingEpochs(sessionId: $s) { epoch metrics } }', variables: { s: sessionId } } }));
        // The server answers nothing on a successful subscribe; give it a moment to register.
        setTimeout(() => resolve(ws), 0);
      } else if (msg.type === 'next') {
        onEpoch(msg.payload.data.trainingEpochs.metrics);
      } else if (msg.type === 'error') {
        reject(new Error(JSON.stringify(msg.payload)));
      }
    });
    ws.on('error', reject);
  });
}

async function waitStatus(p: Platform, sessionId: string, statuses: string[], timeoutMs: number) {
  const id = Buffer.from(sessionId, 'base64').toString().split(':')[1];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const r = await p.db.query('select status, attempt, node_id from training_sessions where id = $1', [id]);
    if (statuses.includes(r.rows[0]?.status)) return r.rows[0] as { status: string; attempt: number; node_id: string };
    await sleep(50);
  }
  throw new Error(`session not ${statuses.join('/')} within ${timeoutMs} ms`);
}

async function rawRedisLatency(): Promise<{ p50: number; p99: number }> {
  const pub = new Redis(REDIS_URL);
  const sub = new Redis(REDIS_URL);
  const channel = `cvtrain-pbench-raw-${randomBytes(3).toString('hex')}`;
  await sub.subscribe(channel);
  const lat: number[] = [];
  let resolveOne: () => void = () => undefined;
  sub.on('message', (_c, m) => {
    lat.push(Number(process.hrtime.bigint() - BigInt(m)) / 1e6);
    resolveOne();
  });
  for (let i = 0; i < 2000; i++) {
    const got = new Promise<void>((r) => (resolveOne = r));
    await pub.publish(channel, String(process.hrtime.bigint()));
    await got;
  }
  pub.disconnect();
  sub.disconnect();
  return { p50: pct(lat, 50), p99: pct(lat, 99) };
}

async function latency(p: Platform, subscribers: number, epochs: number, intervalMs: number) {
  const sessionId = await trainModel(p, epochs);
  const lat: number[] = [];
  const sockets: WebSocket[] = [];
  for (let i = 0; i < subscribers; i += 100) {
    sockets.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(100, subscribers - i) }, () => subscribe(p, sessionId, (m) => lat.push(Date.now() - m.sent_at_ms))),
      )),
    );
  }
  await sleep(300);
  const node = startNode(p, intervalMs);
  await waitStatus(p, sessionId, ['COMPLETED', 'FAILED'], 120_000);
  const expected = subscribers * epochs;
  for (let i = 0; i < 100 && lat.length < expected; i++) await sleep(50);
  await stopProcess(node);
  for (const ws of sockets) ws.terminate();
  return { subscribers, epochs, received: lat.length, expected, p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat) };
}

async function fanout(p: Platform, subscribers: number) {
  const sessionId = await trainModel(p, 1);
  const lat: number[] = [];
  const sockets: WebSocket[] = [];
  const t0 = Date.now();
  for (let i = 0; i < subscribers; i += 250) {
    sockets.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(250, subscribers - i) }, () => subscribe(p, sessionId, (m) => lat.push(Date.now() - m.sent_at_ms))),
      )),
    );
    if (i % 2000 === 0) log(`fan-out: ${sockets.length}/${subscribers} subscribed`);
  }
  const connectSeconds = (Date.now() - t0) / 1000;
  let peakRss = rssMiB(p.api.pid!);
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, rssMiB(p.api.pid!))), 100);
  await sleep(500);
  const node = startNode(p, 50);
  const deadline = Date.now() + 120_000;
  while (lat.length < subscribers && Date.now() < deadline) await sleep(50);
  clearInterval(sampler);
  await stopProcess(node);
  for (const ws of sockets) ws.terminate();
  return { subscribers, received: lat.length, p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat), peakRss, connectSeconds };
}

async function submission(p: Platform) {
  const body = JSON.stringify({
    query: `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) { __typename ... on TrainModelSuccess { trainingSession { status } } } }`,
    variables: { m: p.modelId, i: { datasetVersionId: p.versionId, computeProfileId: p.profileId, config: { epochs: 5 } } },
  });
  const before = Number((await p.db.query(`select count(*) from training_sessions where status = 'QUEUED'`)).rows[0].count);
  const result = await autocannon({
    url: p.url,
    method: 'POST',
    connections: 20,
    duration: 10,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${p.token}` },
    body,
  });
  const after = Number((await p.db.query(`select count(*) from training_sessions where status = 'QUEUED'`)).rows[0].count);
  const other = Number((await p.db.query(`select count(*) from training_sessions where status not in ('QUEUED', 'COMPLETED')`)).rows[0].count);
  return { rps: result.requests.average, queued: after - before, requests: result.requests.total, non2xx: result.non2xx, notQueued: other, p99: result.latency.p99 };
}

async function recovery(p: Platform) {
  const a = startNode(p, 500, { STANDIN_CHECKPOINTS: '1' });
  const b = startNode(p, 500, { STANDIN_CHECKPOINTS: '1' });
  await sleep(4000);
  const sessionId = await trainModel(p, 400);
  const first = await waitStatus(p, sessionId, ['RUNNING'], 60_000);
  await sleep(3000);
  // The node running the session is the one with a child (the stand-in trainer); `ps` exits 1
  // for the other, which has none.
  const victim = [a, b].find((n) => n.pid && spawnSync('ps', ['-o', 'pid=', '--ppid', String(n.pid)]).stdout.toString().trim().length > 0);
  if (!victim) {
    const tree = spawnSync('ps', ['-eo', 'pid,ppid,args']).stdout.toString().split('\n').filter((l) => /gpu-node|cvtrain/.test(l));
    throw new Error(`could not tell which node runs the session (nodes ${a.pid}, ${b.pid}):\n${tree.join('\n')}`);
  }
  const t0 = Date.now();
  victim.kill('SIGKILL');
  // The orphaned stand-in trainer of the killed node would keep writing to a closed pipe; end it.
  spawnSync('pkill', ['-KILL', '-P', String(victim.pid)]);
  const deadline = Date.now() + 60_000;
  let again: { status: string; attempt: number; node_id: string } | null = null;
  while (Date.now() < deadline) {
    const r = await waitStatus(p, sessionId, ['RUNNING'], 60_000);
    if (r.attempt > first.attempt) {
      again = r;
      break;
    }
    await sleep(50);
  }
  const seconds = (Date.now() - t0) / 1000;
  await gql(p.url, `mutation($id: ID!) { cancelTrainingSession(id: $id) { __typename } }`, { id: sessionId }, p.token);
  await Promise.all([stopProcess(a), stopProcess(b)]);
  return { seconds, attempt: again?.attempt ?? null, movedTo: again?.node_id ?? null, from: first.node_id };
}

async function main() {
  const out: string[] = [];
  out.push(`Machine: ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, Node ${process.version}; API in its own process (NODE_ENV=production), gpu-nodes in their own processes running bench/standin.`);
  const p = await startPlatform();
  try {
    if (ONLY.has('latency')) {
      const raw = await rawRedisLatency();
      out.push('', '### Event latency (trainer write -> subscriber receives)', '', '| subscribers | epochs | received | p50 ms | p99 ms | max ms |', '|---:|---:|---:|---:|---:|---:|');
      for (const [n, epochs, interval] of [[1, 100, 50], [100, 100, 50], [1000, 50, 100]] as const) {
        log(`latency with ${n} subscriber(s)`);
        const r = await latency(p, n, epochs, interval);
        out.push(`| ${n} | ${r.epochs} | ${r.received}/${r.expected} | ${r.p50} | ${r.p99} | ${r.max} |`);
      }
      out.push('', `Raw Redis pub/sub on loopback, same run: p50 ${raw.p50.toFixed(3)} ms, p99 ${raw.p99.toFixed(3)} ms (ms resolution above: the trainer stamps wall-clock ms).`);
    }
    if (ONLY.has('fanout')) {
      log(`fan-out to ${FANOUT} subscribers`);
      const r = await fanout(p, FANOUT);
      out.push('', '### Fan-out (one event, one API process)', '', '| subscribers | received | p50 ms | p99 ms | max ms | API peak RSS MiB | connect s |', '|---:|---:|---:|---:|---:|---:|---:|');
      out.push(`| ${r.subscribers} | ${r.received} | ${r.p50} | ${r.p99} | ${r.max} | ${r.peakRss.toFixed(0)} | ${r.connectSeconds.toFixed(1)} |`);
    }
    if (ONLY.has('recovery')) {
      log('recovery after SIGKILL of a gpu-node');
      const r = await recovery(p);
      out.push('', '### Recovery (SIGKILL of a gpu-node -> RUNNING again on another node)', '', `${r.seconds.toFixed(1)} s (attempt ${r.attempt}, from ${r.from} to ${r.movedTo}); offline window ${p.env.CVTRAIN_NODE_OFFLINE_MS ?? 6000} ms, heartbeat ${p.env.CVTRAIN_NODE_HEARTBEAT_MS ?? 2000} ms.`);
    }
    // Last: it leaves a thousand queued jobs that a node started afterwards would work through first.
    if (ONLY.has('submission')) {
      log('submission rate');
      const r = await submission(p);
      out.push('', '### Submission (trainModel until QUEUED, 20 connections, 10 s)', '', `${r.rps.toFixed(0)} mutations/s (p99 ${r.p99} ms); ${r.queued} sessions QUEUED of ${r.requests} requests; ${r.non2xx} non-2xx; sessions in another state: ${r.notQueued}.`);
    }
  } catch (err) {
    out.push('', `(stopped early: ${(err as Error).message})`);
    process.exitCode = 1;
  } finally {
    console.log(out.join('\n'));
    await Promise.all([...nodes].map((n) => stopProcess(n)));
    await p.db.end();
    await stopProcess(p.api);
    await dropDatabase(p.dbUrl);
    const r = new Redis(REDIS_URL);
    const keys = await r.keys(`${p.prefix}*`);
    if (keys.length) await r.del(...keys);
    r.disconnect();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
