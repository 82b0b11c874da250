// The node HTTP API of PROTOCOL.md §2. Network errors, timeouts and 5xx are retried with
// backoff (an API restart must not fail a training job); the answers the protocol defines
// (401, 404 unknown_node, 409) come back typed, and nothing else is retried.
import { setTimeout as delay } from 'node:timers/promises';
import type { DatasetFormat } from '../protocol/index.js';
import type { Gpu } from './gpus.js';
import { API_REQUEST_TIMEOUT_MS, API_RETRY_ATTEMPTS, API_RETRY_BASE_MS, API_RETRY_MAX_MS } from './config.js';

/** Any answer the node cannot work with; `status` is null when no HTTP answer came at all. */
export class NodeApiError extends Error {
  constructor(
    message: string,
    public readonly status: number | null,
    public readonly code: string | null,
  ) {
    super(message);
    this.name = new.target.name;
  }
}
/** 401: the token is missing or wrong. Retrying cannot help; the operator must fix the config. */
export class NodeUnauthorizedError extends NodeApiError {}
/** The API did not answer (or answered 5xx) through every retry. */
export class NodeApiUnavailableError extends NodeApiError {}

export interface RegisterAnswer {
  heartbeatIntervalMs: number;
  offlineAfterMs: number;
}
/** Headers a presigned request must carry exactly as given (e.g. Azure's x-ms-blob-type). */
export type PresignedHeaders = Record<string, string>;

export interface ClaimGrant {
  dataset: { url: string; headers: PresignedHeaders; sha256: string; format: DatasetFormat; sizeBytes: number; filename: string };
  resume: { url: string; headers: PresignedHeaders; sha256: string } | null;
}
export type Conflict = { ok: false; conflict: string; message: string };
export type ClaimResult = { ok: true; grant: ClaimGrant } | Conflict;
export interface UploadGrant {
  url: string;
  headers: PresignedHeaders;
  key: string;
  expiresAt: string;
}
export type UploadGrantResult = { ok: true; grant: UploadGrant } | Conflict;
/**
 * `cancel`: cancellations the node may have missed on pub/sub; `stop`: running sessions that were
 * queued again elsewhere while this node was presumed lost (stop them, do not give them back).
 */
export type HeartbeatResult =
  | { ok: true; cancel: { sessionId: string; attempt: number }[]; stop: string[] }
  | { ok: false; unknownNode: true };

export interface CallOptions {
  signal?: AbortSignal;
  /** Tries before NodeApiUnavailableError (network errors, timeouts, 5xx, 429). */
  attempts?: number;
}

export interface NodeApiClientOptions {
  apiUrl: string;
  token: string;
  attempts?: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  timeoutMs?: number;
}

type Answer = { status: number; body: any };

export class NodeApiClient {
  private readonly attempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly timeoutMs: number;

  constructor(private readonly opts: NodeApiClientOptions) {
    this.attempts = opts.attempts ?? API_RETRY_ATTEMPTS;
    this.baseDelayMs = opts.baseDelayMs ?? API_RETRY_BASE_MS;
    this.maxDelayMs = opts.maxDelayMs ?? API_RETRY_MAX_MS;
    this.timeoutMs = opts.timeoutMs ?? API_REQUEST_TIMEOUT_MS;
  }

  /** Absolute URL for a path or a URL the API handed out (local storage may answer with a path). */
  resolve(urlOrPath: string): string {
    return new URL(urlOrPath, this.opts.apiUrl + '/').toString();
  }

  async register(body: { nodeId: string; host: string; version: string; slots: number; gpus: Gpu[] }, opts: CallOptions = {}): Promise<RegisterAnswer> {
    const a = await this.post('/node/v1/register', body, [], opts.signal, opts.attempts);
    const interval = Number(a.body?.heartbeatIntervalMs);
    const offline = Number(a.body?.offlineAfterMs);
    if (!(interval > 0)) throw new NodeApiError('register answer has no heartbeatIntervalMs', a.status, null);
    return { heartbeatIntervalMs: interval, offlineAfterMs: offline > 0 ? offline : interval * 3 };
  }

  async heartbeat(
    body: { nodeId: string; status: 'ONLINE' | 'DRAINING'; gpus: Gpu[]; runningSessionIds: string[] },
    opts: CallOptions = {},
  ): Promise<HeartbeatResult> {
    // One try by default: the next beat comes soon, and a stale beat retried late says nothing.
    const a = await this.post('/node/v1/heartbeat', body, [404], opts.signal, opts.attempts ?? 1);
    if (a.status === 404) return { ok: false, unknownNode: true };
    const cancel = Array.isArray(a.body?.cancel)
      ? (a.body.cancel as unknown[]).filter(
          (c): c is { sessionId: string; attempt: number } =>
            typeof (c as any)?.sessionId === 'string' && Number.isInteger((c as any)?.attempt),
        ).map((c) => ({ sessionId: c.sessionId, attempt: c.attempt }))
      : [];
    const stop = Array.isArray(a.body?.stop) ? (a.body.stop as unknown[]).filter((x): x is string => typeof x === 'string') : [];
    return { ok: true, cancel, stop };
  }

  async claim(sessionId: string, body: { nodeId: string; attempt: number; jobId: string }, opts: CallOptions = {}): Promise<ClaimResult> {
    const a = await this.post(`/node/v1/sessions/${encodeURIComponent(sessionId)}/claim`, body, [409], opts.signal, opts.attempts);
    if (a.status === 409) return conflict(a);
    const grant = a.body as ClaimGrant;
    if (!grant?.dataset?.url || !/^[0-9a-f]{64}$/.test(grant.dataset.sha256 ?? '')) {
      throw new NodeApiError('claim answer has no dataset url and sha256', a.status, null);
    }
    return {
      ok: true,
      grant: {
        dataset: { ...grant.dataset, headers: headersOf(grant.dataset.headers) },
        resume: grant.resume ? { ...grant.resume, headers: headersOf(grant.resume.headers) } : null,
      },
    };
  }

  async requestUpload(
    sessionId: string,
    body: { nodeId: string; attempt: number; kind: 'checkpoint' | 'artifact'; name: string; sizeBytes: number; sha256: string },
    opts: CallOptions = {},
  ): Promise<UploadGrantResult> {
    const a = await this.post(`/node/v1/sessions/${encodeURIComponent(sessionId)}/uploads`, body, [409], opts.signal, opts.attempts);
    if (a.status === 409) return conflict(a);
    const grant = a.body as UploadGrant;
    if (!grant?.url || !grant?.key) throw new NodeApiError('upload answer has no url and key', a.status, null);
    return { ok: true, grant: { ...grant, headers: headersOf(grant.headers) } };
  }

  async released(sessionId: string, body: { nodeId: string; attempt: number }, opts: CallOptions = {}): Promise<{ ok: true } | Conflict> {
    const a = await this.post(`/node/v1/sessions/${encodeURIComponent(sessionId)}/released`, body, [409], opts.signal, opts.attempts);
    if (a.status === 409) return conflict(a);
    return { ok: true };
  }

  /**
   * POST with retries. `expected` lists the non-2xx statuses that are answers, not failures.
   * 401 throws NodeUnauthorizedError at once; other 4xx throw NodeApiError at once.
   */
  private async post(path: string, body: unknown, expected: number[], signal?: AbortSignal, attempts: number = this.attempts): Promise<Answer> {
    let lastProblem = '';
    for (let attempt = 1; attempt <= attempts; attempt++) {
      signal?.throwIfAborted();
      let answer: Answer | null = null;
      try {
        const res = await fetch(this.opts.apiUrl + path, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.opts.token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(this.timeoutMs)]) : AbortSignal.timeout(this.timeoutMs),
        });
        const text = await res.text();
        let parsed: any = null;
        try {
          parsed = text ? JSON.parse(text) : null;
        } catch {
          parsed = { message: text.slice(0, 200) };
        }
        answer = { status: res.status, body: parsed };
      } catch (err) {
        if (signal?.aborted) throw err;
        lastProblem = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
      }
      if (answer) {
        const { status, body: b } = answer;
        if (status >= 200 && status < 300) return answer;
        if (expected.includes(status)) return answer;
        const code = typeof b?.error === 'string' ? b.error : null;
        const message = typeof b?.message === 'string' ? b.message : `HTTP ${status}`;
        if (status === 401) {
          throw new NodeUnauthorizedError(`the API refused the node token (401) on ${path}: check CVTRAIN_NODE_TOKEN`, status, code);
        }
        if (status < 500 && status !== 429) throw new NodeApiError(`${path}: ${status} ${code ?? ''} ${message}`.trim(), status, code);
        lastProblem = `HTTP ${status}: ${message}`;
      }
      if (attempt < attempts) {
        const wait = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
        await delay(wait, undefined, { signal });
      }
    }
    throw new NodeApiUnavailableError(`${path}: no usable answer after ${attempts} tries (${lastProblem})`, null, null);
  }
}

function headersOf(h: unknown): PresignedHeaders {
  const out: PresignedHeaders = {};
  if (h && typeof h === 'object') {
    for (const [k, v] of Object.entries(h)) if (typeof v === 'string') out[k] = v;
  }
  return out;
}

function conflict(a: Answer): Conflict {
  return {
    ok: false,
    conflict: typeof a.body?.error === 'string' ? a.body.error : 'conflict',
    message: typeof a.body?.message === 'string' ? a.body.message : 'conflict',
  };
}
