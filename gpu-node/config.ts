// Every environment variable and tunable of the gpu-node daemon, validated once at start.
// Anything a operator may want to change is an env var; the rest are named constants below,
// each with the reason for its value, so nobody has to hunt for magic numbers in the modules.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_REDIS_PREFIX, REDIS_PREFIX_PATTERN } from '../protocol/index.js';

export class NodeConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`Invalid gpu-node configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'NodeConfigError';
  }
}

/** The repository root: the daemon runs from source, next to trainers/ and schema/. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const envSchema = z.object({
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL').default('redis://127.0.0.1:6379'),
  CVTRAIN_API_URL: z
    .string({ error: 'required: the API server the node talks to, e.g. http://127.0.0.1:4000' })
    .url('must be an http(s) URL, e.g. http://127.0.0.1:4000')
    .regex(/^https?:\/\//, 'must be an http(s) URL, e.g. http://127.0.0.1:4000'),
  CVTRAIN_NODE_TOKEN: z
    .string({ error: 'required: the join token the API holds (its CVTRAIN_NODE_TOKEN)' })
    .min(1, 'required: the join token the API holds (its CVTRAIN_NODE_TOKEN)'),
  // Same prefix as the API's, so both sides name the same queue, stream and channels.
  CVTRAIN_REDIS_PREFIX: z.string().regex(REDIS_PREFIX_PATTERN, 'letters, digits, ":", "_" or "-" only').default(DEFAULT_REDIS_PREFIX),
  // Trainer interpreter; when unset the node looks for a python3 that can import torch.
  CVTRAIN_PYTHON: z.string().min(1).optional(),
  // Stable identity across restarts; by default generated once and kept in the data dir.
  CVTRAIN_NODE_ID: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, 'letters, digits, ".", "_" or "-", at most 100').optional(),
  // Dataset cache, outbox files and per-job work dirs.
  CVTRAIN_NODE_DATA_DIR: z.string().min(1).default('./data/gpu-node'),
  // Number of job slots; by default one per GPU, or one CPU slot without GPUs.
  CVTRAIN_NODE_SLOTS: intFrom(1, 64).optional(),
  CVTRAIN_TRAINERS_DIR: z.string().min(1).optional(),
  // After SIGTERM a trainer finishes its step and checkpoints; past this it is killed.
  CVTRAIN_NODE_CANCEL_GRACE_S: intFrom(1, 3600).default(15),
  // Wall-time limit of one trainer run when the job payload sets none (72 h).
  CVTRAIN_NODE_JOB_TIMEOUT_S: intFrom(1, 365 * 24 * 3600).default(72 * 3600),
  // How many extracted datasets the cache keeps (least recently used go first).
  CVTRAIN_NODE_DATASET_CACHE_KEEP: intFrom(1, 10_000).default(5),
  // How long a SIGTERM'd node waits for its trainers to checkpoint, upload and give back.
  CVTRAIN_NODE_SHUTDOWN_TIMEOUT_S: intFrom(1, 3600).default(120),
  CVTRAIN_LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error', 'silent']).default('info'),
});

export interface NodeConfig {
  redisUrl: string;
  apiUrl: string;
  nodeToken: string;
  redisPrefix: string;
  /** CVTRAIN_PYTHON as given (the interpreter actually used is resolved by python.ts). */
  python: string | null;
  nodeId: string;
  dataDir: string;
  slots: number | null;
  trainersDir: string;
  cancelGraceMs: number;
  jobTimeoutMs: number;
  datasetCacheKeep: number;
  shutdownTimeoutMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error' | 'silent';
}

export function loadNodeConfig(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new NodeConfigError(parsed.error.issues.map((i) => `${i.path.join('.') || '(env)'}: ${i.message}`));
  }
  const e = parsed.data;
  const dataDir = path.resolve(e.CVTRAIN_NODE_DATA_DIR);
  const trainersDir = path.resolve(e.CVTRAIN_TRAINERS_DIR ?? path.join(REPO_ROOT, 'trainers'));
  if (!existsSync(path.join(trainersDir, 'cvtrain', '__main__.py'))) {
    throw new NodeConfigError([`CVTRAIN_TRAINERS_DIR: ${trainersDir} holds no cvtrain package (cvtrain/__main__.py)`]);
  }
  return {
    redisUrl: e.REDIS_URL,
    apiUrl: e.CVTRAIN_API_URL.replace(/\/+$/, ''),
    nodeToken: e.CVTRAIN_NODE_TOKEN,
    redisPrefix: e.CVTRAIN_REDIS_PREFIX,
    python: e.CVTRAIN_PYTHON ?? null,
    nodeId: e.CVTRAIN_NODE_ID ?? loadOrCreateNodeId(dataDir),
    dataDir,
    slots: e.CVTRAIN_NODE_SLOTS ?? null,
    trainersDir,
    cancelGraceMs: e.CVTRAIN_NODE_CANCEL_GRACE_S * 1000,
    jobTimeoutMs: e.CVTRAIN_NODE_JOB_TIMEOUT_S * 1000,
    datasetCacheKeep: e.CVTRAIN_NODE_DATASET_CACHE_KEEP,
    shutdownTimeoutMs: e.CVTRAIN_NODE_SHUTDOWN_TIMEOUT_S * 1000,
    logLevel: e.CVTRAIN_LOG_LEVEL,
  };
}

/** `<hostname>-<random>`, written once: the API keys a node's heartbeats and jobs on it. */
function loadOrCreateNodeId(dataDir: string): string {
  const file = path.join(dataDir, 'node-id');
  if (existsSync(file)) {
    const id = readFileSync(file, 'utf8').trim();
    if (/^[A-Za-z0-9._-]{1,100}$/.test(id)) return id;
  }
  mkdirSync(dataDir, { recursive: true });
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 60) || 'node';
  const id = `${host}-${randomBytes(4).toString('hex')}`;
  writeFileSync(file, id + '\n');
  return id;
}

// ---------------------------------------------------------------- fixed tunables

/** PROTOCOL.md §3: the events stream is capped approximately at this many entries. */
export const EVENTS_STREAM_MAXLEN = 1_000_000;
/** Used until the API's register answer says otherwise. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000;
/** One HTTP request to the API; claims and upload grants are small, so 30 s means it is stuck. */
export const API_REQUEST_TIMEOUT_MS = 30_000;
/** Retries of an API call on network errors and 5xx: 8 tries with backoff cover ~1 min of API restart. */
export const API_RETRY_ATTEMPTS = 8;
export const API_RETRY_BASE_MS = 250;
export const API_RETRY_MAX_MS = 10_000;
/** An upload is retried (new grant, new PUT) this many times before the event goes out without it. */
export const UPLOAD_ATTEMPTS = 4;
/** Outbox backoff while Redis refuses: starts fast (a restart takes ~1 s), caps so a long outage costs nothing. */
export const OUTBOX_RETRY_BASE_MS = 100;
export const OUTBOX_RETRY_MAX_MS = 5_000;
/** XADDs sent in one pipeline; bounds memory of one round trip while catching up after an outage. */
export const OUTBOX_BATCH = 200;
/**
 * A finished job's envelopes stay this long after Redis accepted them, so a Redis that loses its
 * data right after the job ended still gets them again (the ingester drops what it already has).
 */
export const OUTBOX_LINGER_MS = 60_000;
/** Trainer output kept for error reports: what a person needs to see why a run died. */
export const TAIL_MAX_LINES = 200;
export const TAIL_MAX_BYTES = 64 * 1024;
/** A longer event or log line is cut (logs) or rejected (events): a runaway print must not eat memory. */
export const MAX_LINE_BYTES = 1024 * 1024;
/** nvidia-smi normally answers in well under a second; a hung driver must not hang heartbeats. */
export const NVIDIA_SMI_TIMEOUT_MS = 10_000;
/** `import torch` takes a few seconds on a cold disk. */
export const PYTHON_PROBE_TIMEOUT_MS = 60_000;
/** Extracted bytes allowed per archive byte: refuses zip bombs while allowing well-compressed labels. */
export const MAX_EXTRACT_RATIO = 200;
/** bee-queue reconnect backoff cap for its own Redis clients. */
export const QUEUE_RECONNECT_MAX_MS = 5_000;
