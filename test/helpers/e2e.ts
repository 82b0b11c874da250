// End-to-end harness (issue 5): everything a test does to the platform goes through the public
// API (GraphQL over HTTP, graphql-ws, presigned storage links, the node HTTP API); what it starts
// (gpu-node processes or in-process nodes, redis-servers) it also stops, even when a test fails.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { createClient, type Client } from 'graphql-ws';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { loadNodeConfig } from '../../gpu-node/config.js';
import { startGpuNode, type GpuNode } from '../../gpu-node/node.js';
import type { Logger } from '../../src/lib/log.js';
import type { TestApi } from './api.js';

export const PYTHON = '/usr/bin/python3';
export const REPO = path.resolve(import.meta.dirname, '..', '..');
export const TRAINERS = path.join(REPO, 'trainers');
export const TERMINAL = ['COMPLETED', 'FAILED', 'CANCELLED'];
const LOG = process.env.E2E_LOG === '1';

// ---------------------------------------------------------------- cleanup and polling

/** Things to undo at the end of a file, newest first; every one runs even if another throws. */
export class Cleanup {
  private readonly stack: { what: string; fn: () => unknown }[] = [];
  add(what: string, fn: () => unknown): void {
    this.stack.push({ what, fn });
  }
  async run(): Promise<void> {
    const problems: string[] = [];
    for (const { what, fn } of this.stack.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    }
    if (problems.length) console.warn(`cleanup problems:\n  ${problems.join('\n  ')}`);
  }
}

export { freePort, GiveUp, PrivateRedis, waitFor } from './processes.js';
import { GiveUp, waitFor } from './processes.js';

export function tempDir(cleanup: Cleanup, prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), `cvtrain-e2e-${prefix}-`));
  cleanup.add(`remove ${dir}`, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------- datasets

export interface Archive {
  file: string;
  sizeBytes: number;
  sha256: string;
}

/**
 * The trainers' synthetic shapes dataset as a .tar.gz (the generator the demo uses). `mutate` may
 * change the extracted folder before it is archived (e.g. break images).
 */
export function makeDatasetArchive(
  dir: string,
  opts: { format?: 'yolo' | 'coco' | 'image_folder'; images?: number; seed?: number; size?: number; mutate?: (root: string) => void } = {},
): Archive {
  const root = path.join(dir, 'dataset');
  execFileSync(
    PYTHON,
    ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', root, '--format', opts.format ?? 'image_folder',
      '--images', String(opts.images ?? 24), '--seed', String(opts.seed ?? 1), '--size', String(opts.size ?? 64)],
    { env: { ...process.env, PYTHONPATH: TRAINERS }, stdio: 'pipe' },
  );
  opts.mutate?.(root);
  const file = path.join(dir, 'dataset.tar.gz');
  execFileSync('tar', ['-czf', file, '-C', root, '.']);
  const bytes = readFileSync(file);
  return { file, sizeBytes: statSync(file).size, sha256: createHash('sha256').update(bytes).digest('hex') };
}

// ---------------------------------------------------------------- GraphQL over HTTP

export const ERR = '__typename ... on Error { message } ... on ValidationError { field }';

/** Posts an operation with a bearer token; fails on transport or GraphQL errors. */
export async function query<T = any>(api: TestApi, token: string | null, q: string, variables: Record<string, unknown> = {}): Promise<T> {
  const res = await api.gql<T>(q, variables, token);
  if (res.errors?.length) throw new Error(`GraphQL errors: ${JSON.stringify(res.errors)}`);
  return res.data;
}

/** Unwraps a mutation result union, failing with the typed error's message. */
export function success<T = any>(result: any, field: string): T {
  if (!result?.__typename?.endsWith('Success')) throw new Error(`expected success, got ${JSON.stringify(result)}`);
  return result[field] as T;
}

export interface E2eOrg {
  token: string;
  datasetId: string;
  datasetVersionId: string;
  modelId: string;
  profileId: string;
}

/** createDatasetVersion, PUT to the presigned URL, finalizeDatasetVersion. */
export async function uploadDatasetVersion(
  api: TestApi,
  token: string,
  datasetId: string,
  archive: Archive,
  format: 'YOLO' | 'COCO' | 'IMAGE_FOLDER',
): Promise<{ id: string; status: string; problems: { path: string; message: string }[] }> {
  const created = await query(
    api,
    token,
    `mutation($i: CreateDatasetVersionInput!) { createDatasetVersion(input: $i) { ${ERR}
      ... on CreateDatasetVersionSuccess { datasetVersionUpload { version { id } uploadUrl uploadHeaders } } } }`,
    { i: { datasetId, format, filename: 'dataset.tar.gz' } },
  );
  const upload = success<{ version: { id: string }; uploadUrl: string; uploadHeaders: Record<string, string> }>(
    created.createDatasetVersion,
    'datasetVersionUpload',
  );
  const put = await fetch(upload.uploadUrl, {
    method: 'PUT',
    headers: { ...upload.uploadHeaders, 'content-length': String(archive.sizeBytes) },
    body: readFileSync(archive.file),
  });
  if (!put.ok) throw new Error(`dataset upload failed: HTTP ${put.status} ${await put.text()}`);
  const fin = await query(
    api,
    token,
    `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${ERR}
      ... on FinalizeDatasetVersionSuccess { datasetVersion { id status problems { path message } } } } }`,
    { id: upload.version.id },
  );
  return success(fin.finalizeDatasetVersion, 'datasetVersion');
}

/**
 * A new organization with a READY IMAGE_FOLDER dataset version uploaded through the API, a
 * classification model and a default PLATFORM profile.
 */
export async function setupOrg(
  api: TestApi,
  archive: Archive,
  opts: { architecture?: string; profileConfig?: Record<string, unknown>; orgName?: string } = {},
): Promise<E2eOrg> {
  const email = `e2e-${Math.random().toString(36).slice(2, 10)}@example.com`;
  const signUp = await query(
    api,
    null,
    `mutation($i: SignUpInput!) { signUp(input: $i) { ${ERR} ... on SignUpSuccess { authPayload { token } } } }`,
    { i: { email, password: 'correct horse battery staple', organizationName: opts.orgName ?? 'E2E' } },
  );
  const token = success<{ token: string }>(signUp.signUp, 'authPayload').token;
  const ds = await query(
    api,
    token,
    `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { ${ERR} ... on CreateDatasetSuccess { dataset { id } } } }`,
    { i: { name: 'shapes', task: 'CLASSIFICATION' } },
  );
  const datasetId = success<{ id: string }>(ds.createDataset, 'dataset').id;
  const version = await uploadDatasetVersion(api, token, datasetId, archive, 'IMAGE_FOLDER');
  if (version.status !== 'READY') throw new Error(`dataset version is ${version.status}: ${JSON.stringify(version.problems)}`);
  const model = await query(
    api,
    token,
    `mutation($i: CreateModelInput!) { createModel(input: $i) { ${ERR} ... on CreateModelSuccess { model { id } } } }`,
    { i: { name: 'shapes-classifier', task: 'CLASSIFICATION', framework: 'TORCHVISION', architecture: opts.architecture ?? 'mobilenet_v3_small' } },
  );
  const modelId = success<{ id: string }>(model.createModel, 'model').id;
  const profile = await query(
    api,
    token,
    `mutation($i: CreateComputeProfileInput!) { createComputeProfile(input: $i) { ${ERR}
      ... on CreateComputeProfileSuccess { computeProfile { id } } } }`,
    {
      i: {
        name: 'platform',
        provider: 'PLATFORM',
        strategy: 'QUEUE',
        isDefault: true,
        config: { allowWaiting: true, ...opts.profileConfig },
      },
    },
  );
  const profileId = success<{ id: string }>(profile.createComputeProfile, 'computeProfile').id;
  return { token, datasetId, datasetVersionId: version.id, modelId, profileId };
}

/**
 * A tiny classifier run: mobilenet_v3_small at 32 px on a few dozen images, a few batches per
 * epoch; about half a second to a second per epoch on this CPU.
 */
export function tinyTraining(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    epochs: 4,
    batchSize: 4,
    imageSize: 32,
    learningRate: 0.001,
    optimizer: 'ADAMW',
    seed: 7,
    checkpointEvery: 1,
    maxBatchesPerEpoch: 3,
    exportFormats: [],
    amp: 'OFF',
    ...overrides,
  };
}

export async function trainModel(api: TestApi, org: E2eOrg, config: Record<string, unknown>): Promise<{ id: string; status: string }> {
  const res = await query(
    api,
    org.token,
    `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) { ${ERR}
      ... on TrainModelSuccess { trainingSession { id status } } } }`,
    { m: org.modelId, i: { datasetVersionId: org.datasetVersionId, computeProfileId: org.profileId, config } },
  );
  return success(res.trainModel, 'trainingSession');
}

/** The row id inside a TrainingSession global ID (what the node side names sessions by). */
export function sessionUuid(globalId: string): string {
  return decodeGlobalID(globalId).id;
}

export interface SessionView {
  id: string;
  status: string;
  attempt: number;
  cancelRequested: boolean;
  attempts: { provider: string; reason: string; ok: boolean }[];
  progress: { epoch: number; totalEpochs: number; fraction: number };
  error: { message: string; exitCode: number | null; stderrTail: string | null } | null;
  epochs: { edges: { node: { epoch: number; metrics: Record<string, unknown> } }[] };
  artifacts: { kind: string; name: string; url: string; sizeBytes: number; sha256: string }[];
  startedAt: string | null;
  finishedAt: string | null;
}

export async function getSession(api: TestApi, token: string, id: string): Promise<SessionView> {
  const data = await query(
    api,
    token,
    `query($id: ID!) { trainingSession(id: $id) { id status attempt cancelRequested attempts { provider reason ok }
      progress { epoch totalEpochs fraction } error { message exitCode stderrTail }
      epochs(first: 1000) { edges { node { epoch metrics } } }
      artifacts { kind name url sizeBytes sha256 } startedAt finishedAt } }`,
    { id },
  );
  if (!data.trainingSession) throw new Error(`session ${id} not found`);
  return data.trainingSession;
}

/** One stored epoch as the API returns it (trainingEpochs items, epochs edges). */
export type Epoch = { epoch: number; metrics: Record<string, unknown> };

/** from..to inclusive: the epoch numbers a run of epochs should have. */
export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

export async function storedEpochs(api: TestApi, token: string, id: string): Promise<Epoch[]> {
  return (await getSession(api, token, id)).epochs.edges.map((e) => e.node);
}

export async function waitForStatus(api: TestApi, token: string, id: string, statuses: string[], timeoutMs: number): Promise<SessionView> {
  return waitFor(
    async () => {
      const s = await getSession(api, token, id);
      if (TERMINAL.includes(s.status) && !statuses.includes(s.status)) {
        throw new GiveUp(`session ended ${s.status} while waiting for ${statuses.join('|')}: ${JSON.stringify(s.error)}`);
      }
      return statuses.includes(s.status) ? s : null;
    },
    timeoutMs,
    `session status ${statuses.join('|')}`,
    150,
  ).catch(async (err) => {
    if (err instanceof GiveUp) throw err;
    // Name the status the session is stuck in.
    const s = await getSession(api, token, id).catch(() => null);
    throw new Error(`${(err as Error).message}; session is ${s?.status} (epochs ${s?.epochs.edges.length}, attempt ${s?.attempt})`);
  });
}

export async function cancelSession(api: TestApi, token: string, id: string): Promise<{ status: string; cancelRequested: boolean }> {
  const res = await query(
    api,
    token,
    `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${ERR} ... on CancelTrainingSessionSuccess { trainingSession { status cancelRequested } } } }`,
    { id },
  );
  return success(res.cancelTrainingSession, 'trainingSession');
}

export interface GpuNodeView {
  id: string;
  status: string;
  lastHeartbeatAt: string;
  runningJobs: number;
  slots: number;
}

export async function gpuNodes(api: TestApi, token: string): Promise<GpuNodeView[]> {
  return (await query(api, token, '{ gpuNodes { id status lastHeartbeatAt runningJobs slots } }')).gpuNodes;
}

// ---------------------------------------------------------------- graphql-ws

export const EPOCHS_SUBSCRIPTION = `subscription($s: ID!, $since: Int) { trainingEpochs(sessionId: $s, sinceEpoch: $since) { epoch metrics } }`;
export const SESSION_SUBSCRIPTION = `subscription($s: ID!) { trainingSessionUpdated(id: $s) { status attempt progress { epoch } error { message } } }`;

/** One subscription's record: what arrived, in order, and how it ended. */
export class Subscription<T> {
  readonly items: T[] = [];
  /** Date.now() when each item arrived. */
  readonly times: number[] = [];
  errors: unknown[] | null = null;
  completed = false;
  readonly ended: Promise<void>;
  private resolveEnded!: () => void;
  unsubscribe: () => void = () => undefined;

  constructor() {
    this.ended = new Promise((r) => (this.resolveEnded = r));
  }

  /** @internal */ push(v: T) {
    this.items.push(v);
    this.times.push(Date.now());
  }
  /** @internal */ fail(err: unknown) {
    this.errors = Array.isArray(err) ? err : [err];
    this.resolveEnded();
  }
  /** @internal */ complete() {
    this.completed = true;
    this.resolveEnded();
  }

  get done(): boolean {
    return this.completed || this.errors !== null;
  }

  async waitForItems(n: number, timeoutMs: number, what = `${n} items`): Promise<T[]> {
    await waitFor(
      () => {
        if (this.items.length >= n) return true;
        if (this.done) throw new GiveUp(`subscription ended with ${this.items.length} items while waiting for ${what}: ${describeErrors(this.errors)}`);
        return false;
      },
      timeoutMs,
      what,
      20,
    );
    return this.items;
  }

  async waitForEnd(timeoutMs: number, what = 'the subscription to end'): Promise<void> {
    await waitFor(() => this.done, timeoutMs, what, 20);
  }
}

export function describeErrors(errors: unknown[] | null): string {
  if (!errors) return 'no error';
  return errors
    .map((e) => {
      if (e && typeof e === 'object' && 'code' in e && 'reason' in e) return `close ${(e as { code: number }).code} ${(e as { reason: string }).reason}`;
      return JSON.stringify(e);
    })
    .join('; ');
}

/** A graphql-ws client (the `ws` package) as a browser or script would use it. */
export class WsClient {
  readonly client: Client;
  /** The sockets this client opened, newest last. */
  readonly sockets: WebSocket[] = [];
  private disposed = false;

  constructor(api: TestApi, token: string | null, opts: { retryAttempts?: number } = {}) {
    this.client = createClient({
      url: api.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: token ? { authorization: `Bearer ${token}` } : {},
      // A dropped socket ends the subscriptions with an error; tests resubscribe themselves.
      retryAttempts: opts.retryAttempts ?? 0,
      on: { connected: (socket) => void this.sockets.push(socket as WebSocket) },
    });
  }

  subscribe<T>(queryText: string, variables: Record<string, unknown>, field: string): Subscription<T> {
    const sub = new Subscription<T>();
    sub.unsubscribe = this.client.subscribe<Record<string, T>>(
      { query: queryText, variables },
      {
        next: (value) => {
          if (value.errors?.length) sub.fail(value.errors);
          else if (value.data) sub.push(value.data[field]);
        },
        error: (err) => sub.fail(err),
        complete: () => sub.complete(),
      },
    );
    return sub;
  }

  /** Kills the current socket without a close handshake, as a lost network would. */
  dropSocket(): void {
    const s = this.sockets.at(-1);
    if (!s) throw new Error('no socket to drop');
    s.terminate();
  }

  async dispose(): Promise<void> {
    if (this.disposed) return;
    this.disposed = true;
    await this.client.dispose();
  }
}

// ---------------------------------------------------------------- gpu-nodes

export function apiBaseUrl(api: TestApi): string {
  return api.url.replace(/\/graphql$/, '');
}

export interface NodeOptions {
  nodeId: string;
  dataDir: string;
  /** Defaults to the API's Redis. */
  redisUrl?: string;
  env?: Record<string, string>;
}

function nodeEnv(api: TestApi, o: NodeOptions): Record<string, string> {
  return {
    REDIS_URL: o.redisUrl ?? api.app.config.redisUrl,
    CVTRAIN_API_URL: apiBaseUrl(api),
    CVTRAIN_NODE_TOKEN: api.app.config.nodeToken,
    CVTRAIN_REDIS_PREFIX: api.app.config.redisPrefix,
    CVTRAIN_NODE_DATA_DIR: o.dataDir,
    CVTRAIN_NODE_ID: o.nodeId,
    CVTRAIN_PYTHON: PYTHON,
    CVTRAIN_NODE_SLOTS: '1',
    CVTRAIN_LOG_LEVEL: LOG ? 'debug' : 'info',
    ...o.env,
  };
}

/** `npm run gpu-node` as a child process (what runs on a GPU machine). */
export class NodeProcess {
  readonly child: ChildProcess;
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Trainer pids seen under this node; a SIGKILLed node leaves its trainer behind. */
  private readonly trainers = new Set<number>();

  constructor(api: TestApi, readonly opts: NodeOptions) {
    this.child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO, 'gpu-node', 'main.ts')], {
      cwd: REPO,
      env: {
        ...process.env,
        ...nodeEnv(api, opts),
        // No GPUs whatever this machine has: one CPU slot.
        PATH: `/nonexistent-nvidia:${process.env.PATH}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (b: Buffer) => {
      const text = b.toString();
      this.output.push(text);
      if (LOG) process.stderr.write(`[${opts.nodeId}] ${text}`);
    };
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Trainer processes this node runs now (direct children running `cvtrain train`). */
  trainerPids(): number[] {
    const pids = childPids(this.pid).filter((p) => processArgs(p).includes('cvtrain train'));
    for (const p of pids) this.trainers.add(p);
    return pids;
  }

  kill(signal: NodeJS.Signals): void {
    this.trainerPids();
    this.child.kill(signal);
  }

  /** SIGTERM (clean shutdown), SIGKILL if it hangs; then any trainer it left behind is killed. */
  async stop(timeoutMs = 30_000): Promise<void> {
    if (this.alive) {
      this.trainerPids();
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    for (const pid of this.trainers) killGroup(pid);
  }
}

export async function startInProcessNode(api: TestApi, o: NodeOptions): Promise<GpuNode> {
  return startGpuNode(loadNodeConfig(nodeEnv(api, o)), { logger: testLogger(o.nodeId), gpus: [] });
}

export function testLogger(component: string): Logger {
  const make = (c: string): Logger => {
    const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
      if (LOG) process.stderr.write(`${level} [${c}] ${msg} ${fields ? JSON.stringify(fields) : ''}\n`);
    };
    return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (sub) => make(`${c}:${sub}`) };
  };
  return make(component);
}

export function childPids(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((l) => Number(l.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there are none
  }
}

export function processArgs(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * The trainer process of a session (not its DataLoader workers, which share its command line),
 * found by the session id in its run.json path: the process leading its own group.
 */
export function trainerPidsForSession(sessionUuid: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((pid) => {
      const args = processArgs(pid);
      return args.includes('cvtrain train') && args.includes(sessionUuid) && processGroup(pid) === pid;
    });
}

function processGroup(pid: number): number | null {
  try {
    // /proc/<pid>/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after ")".
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  } catch {
    return null;
  }
}

/** Trainers run in their own process group (DataLoader workers included). */
export function killGroup(pid: number): void {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

// ---------------------------------------------------------------- white-box evidence

/**
 * The trainer events of one session as the node appended them to the Redis Stream. Only for what
 * the public API does not show (where a resumed run started, the SIGTERM stop); assertions about
 * behaviour go through the API.
 */
export async function streamEvents(
  redisUrl: string,
  prefix: string,
  sessionUuidValue: string,
): Promise<{ attempt: number; nodeId: string; seq: number; source: string; event: Record<string, any>; upload?: { key: string } }[]> {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 1 });
  try {
    const entries = await redis.xrange(`${prefix}events`, '-', '+');
    return entries
      .map(([, f]) => JSON.parse(f[f.indexOf('data') + 1]))
      .filter((e) => e.sessionId === sessionUuidValue);
  } finally {
    redis.disconnect();
  }
}

// ---------------------------------------------------------------- a redis-server of the test's own

