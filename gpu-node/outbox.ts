// The node's side of "events, losslessly" (PROTOCOL.md §3). Every envelope is first written to
// memory and to an append-only file under the data dir, then XADDed to the stream `P events`.
// Redis down: the flusher keeps trying with backoff and nothing is dropped. Redis restarted with
// its data lost (its run_id changed): the running jobs' envelopes are appended again; the
// ingester drops what it already applied by (session, attempt, seq). A node killed while Redis
// was down finds its files at the next start and sends them then.
import { appendFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import type { Logger } from '../src/lib/log.js';
import {
  EVENTS_STREAM_MAXLEN,
  OUTBOX_BATCH,
  OUTBOX_LINGER_MS,
  OUTBOX_RETRY_BASE_MS,
  OUTBOX_RETRY_MAX_MS,
} from './config.js';
import { redisNames, validateEnvelope, type Envelope, type NodeEvent, type TrainerEvent, type UploadRef } from '../protocol/index.js';

export class InvalidEnvelopeError extends Error {
  constructor(public readonly envelope: unknown, problem: string) {
    super(`gpu-node built an envelope that does not match schema/event-envelope.schema.json: ${problem}`);
    this.name = 'InvalidEnvelopeError';
  }
}

export interface OutboxOptions {
  redisUrl: string;
  /** CVTRAIN_REDIS_PREFIX; the stream is its `eventsStream` (protocol/redis.ts). */
  prefix: string;
  /** Folder for the append-only files (one per session attempt). */
  dir: string;
  nodeId: string;
  logger: Logger;
  lingerMs?: number;
  batch?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
}

interface JobRecord {
  key: string;
  sessionId: string;
  attempt: number;
  envelopes: Envelope[];
  /** How many envelopes (a prefix) the current Redis has accepted. */
  sent: number;
  /** Bumped when `sent` goes back to 0 (replay), so an XADD answer from before does not count. */
  generation: number;
  ended: boolean;
  /** When an ended job had everything accepted; it is dropped `lingerMs` later. */
  settledAt: number | null;
  file: string;
}

/** Appends the envelopes of one (session, attempt); `seq` counts from 1. */
export class OutboxJob {
  constructor(
    private readonly outbox: Outbox,
    private readonly record: JobRecord,
  ) {}

  get sessionId(): string {
    return this.record.sessionId;
  }
  get attempt(): number {
    return this.record.attempt;
  }
  /** The seq of the last envelope appended (0 before the first). */
  get lastSeq(): number {
    return this.record.envelopes.length === 0 ? 0 : this.record.envelopes[this.record.envelopes.length - 1].seq;
  }

  append(source: 'trainer', event: TrainerEvent, upload?: UploadRef): Envelope;
  append(source: 'node', event: NodeEvent): Envelope;
  append(source: 'trainer' | 'node', event: TrainerEvent | NodeEvent, upload?: UploadRef): Envelope {
    return this.outbox.appendTo(this.record, source, event, upload);
  }

  /** The job is over: its envelopes go once Redis has them all (plus the linger time). */
  end(): void {
    this.outbox.endJob(this.record);
  }
}

export class Outbox {
  /** Commands connection; also used for fire-and-forget publishes (live logs). */
  readonly redis: Redis;
  readonly streamKey: string;
  private readonly jobs = new Map<string, JobRecord>();
  private readonly lingerMs: number;
  private readonly batch: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private runId: string | null = null;
  /** Incremented on every (re)connection; the run_id is checked once per value. */
  private connectionEpoch = 0;
  private checkedEpoch = -1;
  private closing = false;
  private stopped = false;
  private wake: (() => void) | null = null;
  private stopWake: (() => void) | null = null;
  private loopDone: Promise<void> | null = null;
  private gcTimer: NodeJS.Timeout | null = null;
  private lastOutageLog = 0;
  private flushWaiters: (() => void)[] = [];
  /** Envelopes accepted by Redis since start, replays included (tests and metrics). */
  xaddCount = 0;
  replays = 0;

  constructor(private readonly opts: OutboxOptions) {
    this.streamKey = redisNames(opts.prefix).eventsStream;
    this.lingerMs = opts.lingerMs ?? OUTBOX_LINGER_MS;
    this.batch = opts.batch ?? OUTBOX_BATCH;
    this.retryBaseMs = opts.retryBaseMs ?? OUTBOX_RETRY_BASE_MS;
    this.retryMaxMs = opts.retryMaxMs ?? OUTBOX_RETRY_MAX_MS;
    mkdirSync(opts.dir, { recursive: true });
    this.redis = new Redis(opts.redisUrl, {
      // Commands fail at once while disconnected instead of piling up in ioredis' queue: the
      // outbox is the queue, and it must see every reconnection to check the run_id first.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: (times) => Math.min(times * 100, this.retryMaxMs),
      lazyConnect: false,
    });
    this.redis.on('ready', () => {
      this.connectionEpoch++;
      this.kick();
    });
    this.redis.on('error', (err) => this.noteOutage(err));
  }

  /** Loads leftover files (envelopes a previous run could not deliver) and starts flushing. */
  start(): this {
    this.recover();
    this.loopDone = this.loop();
    this.gcTimer = setInterval(() => this.gc(), Math.max(250, Math.min(this.lingerMs / 2, 10_000)));
    this.gcTimer.unref();
    return this;
  }

  /** The outbox of one (session, attempt); the same object's seq continues if it exists. */
  job(sessionId: string, attempt: number): OutboxJob {
    const key = `${sessionId}.${attempt}`;
    let record = this.jobs.get(key);
    if (record) {
      // A job that a previous node run left here (same attempt handed again): keep counting.
      record.ended = false;
      record.settledAt = null;
    } else {
      record = {
        key,
        sessionId,
        attempt,
        envelopes: [],
        sent: 0,
        generation: 0,
        ended: false,
        settledAt: null,
        file: path.join(this.opts.dir, `${key}.jsonl`),
      };
      this.jobs.set(key, record);
    }
    return new OutboxJob(this, record);
  }

  /** Envelopes not yet accepted by Redis, all jobs together. */
  get pending(): number {
    let n = 0;
    for (const r of this.jobs.values()) n += r.envelopes.length - r.sent;
    return n;
  }

  /** Sessions with envelopes Redis has not accepted yet (a job's end may still be on its way). */
  undeliveredSessionIds(): string[] {
    const ids = new Set<string>();
    for (const r of this.jobs.values()) if (r.sent < r.envelopes.length) ids.add(r.sessionId);
    return [...ids];
  }

  /** Envelopes held (accepted or not) for the given job, in seq order; for tests and diagnostics. */
  held(sessionId: string, attempt: number): readonly Envelope[] {
    return this.jobs.get(`${sessionId}.${attempt}`)?.envelopes ?? [];
  }

  /** Resolves true once nothing is pending, false after `timeoutMs`. */
  async flushed(timeoutMs: number): Promise<boolean> {
    if (this.pending === 0) return true;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.flushWaiters = this.flushWaiters.filter((w) => w !== waiter);
        resolve(this.pending === 0);
      }, timeoutMs);
      const waiter = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.flushWaiters.push(waiter);
    });
  }

  /**
   * Tries to deliver what is pending for up to `flushTimeoutMs`, then disconnects. Files of
   * undelivered envelopes stay for the next start; delivered ones are deleted.
   * Returns how many envelopes were left undelivered.
   */
  async close(flushTimeoutMs = 10_000): Promise<number> {
    if (this.stopped) return this.pending;
    this.closing = true;
    await this.flushed(flushTimeoutMs);
    this.stopped = true;
    this.kick();
    await this.loopDone;
    if (this.gcTimer) clearInterval(this.gcTimer);
    for (const r of this.jobs.values()) {
      if (r.sent === r.envelopes.length) rmSync(r.file, { force: true });
    }
    const left = this.pending;
    if (left > 0) this.opts.logger.warn('outbox closed with envelopes Redis has not accepted; they are kept on disk for the next start', { pending: left, dir: this.opts.dir });
    this.redis.disconnect();
    return left;
  }

  /** For tests: stop without flushing or deleting anything, as a killed node would. */
  abandon(): void {
    this.stopped = true;
    this.kick();
    if (this.gcTimer) clearInterval(this.gcTimer);
    this.redis.disconnect();
  }

  // ------------------------------------------------------------------ internals

  appendTo(record: JobRecord, source: 'trainer' | 'node', event: TrainerEvent | NodeEvent, upload?: UploadRef): Envelope {
    if (this.stopped) throw new Error('outbox is closed');
    const envelope: Envelope = {
      v: 1,
      nodeId: this.opts.nodeId,
      sessionId: record.sessionId,
      attempt: record.attempt,
      seq: (record.envelopes.at(-1)?.seq ?? 0) + 1,
      source,
      event,
      ...(upload ? { upload } : {}),
    };
    const checked = validateEnvelope(envelope);
    if (!checked.ok) throw new InvalidEnvelopeError(envelope, checked.error);
    // Written before it counts as appended: a node killed a moment later still has it.
    appendFileSync(record.file, JSON.stringify(envelope) + '\n');
    record.envelopes.push(envelope);
    record.settledAt = null;
    this.kick();
    return envelope;
  }

  endJob(record: JobRecord): void {
    record.ended = true;
    if (record.sent === record.envelopes.length) record.settledAt ??= Date.now();
    this.gc();
  }

  private recover(): void {
    for (const name of readdirSync(this.opts.dir)) {
      const m = /^(.+)\.(\d+)\.jsonl$/.exec(name);
      if (!m) continue;
      const file = path.join(this.opts.dir, name);
      const envelopes: Envelope[] = [];
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          const env = JSON.parse(line) as Envelope;
          // A line cut by a crash mid-write is the only way one can be broken; skip it.
          if (validateEnvelope(env).ok && env.seq === (envelopes.at(-1)?.seq ?? 0) + 1) envelopes.push(env);
        } catch {
          // partial last line
        }
      }
      if (envelopes.length === 0) {
        rmSync(file, { force: true });
        continue;
      }
      const key = `${m[1]}.${m[2]}`;
      this.jobs.set(key, {
        key,
        sessionId: m[1],
        attempt: Number(m[2]),
        envelopes,
        sent: 0,
        generation: 0,
        ended: true,
        settledAt: null,
        file,
      });
      this.opts.logger.info('outbox: sending envelopes left by a previous run', { session: m[1], attempt: Number(m[2]), count: envelopes.length });
    }
  }

  private kick(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
    if (this.stopped) this.stopWake?.();
  }

  /** Waits for a kick (new envelope, reconnection, close) or `ms`, whichever comes first. */
  private sleep(ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(() => done(), ms);
      const done = () => {
        if (timer) clearTimeout(timer);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      this.wake = done;
    });
  }

  private async loop(): Promise<void> {
    let backoff = this.retryBaseMs;
    while (!this.stopped) {
      try {
        // Checked even with nothing pending: a Redis that restarted while the node was idle
        // must still get the retained envelopes of running (and lingering) jobs again.
        if (this.jobs.size > 0) await this.ensureRunIdChecked();
        const work = this.nextBatch();
        if (work.length === 0) {
          this.notifyFlushed();
          await this.sleep(null);
          continue;
        }
        await this.send(work);
        backoff = this.retryBaseMs;
      } catch (err) {
        this.noteOutage(err);
        this.notifyFlushed();
        await this.sleepUntilReady(backoff);
        backoff = Math.min(backoff * 2, this.retryMaxMs);
      }
    }
  }

  /**
   * Backoff after a failure. Only a reconnection or close() cuts it short; new appends do not,
   * or a down Redis would be hammered at the event rate.
   */
  private sleepUntilReady(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.redis.off('ready', done);
        if (this.stopWake === done) this.stopWake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.redis.once('ready', done);
      this.stopWake = done;
    });
  }

  private async ensureRunIdChecked(): Promise<void> {
    const epoch = this.connectionEpoch;
    if (this.checkedEpoch === epoch && this.runId !== null) return;
    const info = await this.redis.info('server');
    const runId = /run_id:([0-9a-f]+)/.exec(info)?.[1] ?? null;
    if (!runId) throw new Error('Redis INFO server has no run_id');
    if (this.runId !== null && runId !== this.runId) this.replayAll(runId);
    this.runId = runId;
    this.checkedEpoch = epoch;
  }

  /** A different Redis server process: it may have lost what the old one accepted. */
  private replayAll(newRunId: string): void {
    let count = 0;
    for (const r of this.jobs.values()) {
      if (r.sent > 0) {
        count += r.sent;
        r.sent = 0;
        r.generation++;
        r.settledAt = null;
      }
    }
    this.replays++;
    this.opts.logger.warn('Redis restarted (run_id changed): appending the running jobs\' events again', {
      oldRunId: this.runId,
      newRunId,
      envelopes: count,
    });
  }

  private nextBatch(): { record: JobRecord; index: number; generation: number }[] {
    const work: { record: JobRecord; index: number; generation: number }[] = [];
    for (const record of this.jobs.values()) {
      for (let i = record.sent; i < record.envelopes.length && work.length < this.batch; i++) {
        work.push({ record, index: i, generation: record.generation });
      }
      if (work.length >= this.batch) break;
    }
    return work;
  }

  private async send(work: { record: JobRecord; index: number; generation: number }[]): Promise<void> {
    const epoch = this.connectionEpoch;
    const pipeline = this.redis.pipeline();
    for (const w of work) {
      pipeline.xadd(this.streamKey, 'MAXLEN', '~', EVENTS_STREAM_MAXLEN, '*', 'data', JSON.stringify(w.record.envelopes[w.index]));
    }
    const results = (await pipeline.exec()) ?? [];
    let firstError: unknown = null;
    // Per job, only a gap-free prefix counts as accepted: order within a job is the contract.
    const blocked = new Set<JobRecord>();
    work.forEach((w, i) => {
      const [err] = results[i] ?? [new Error('no reply')];
      if (err) {
        firstError ??= err;
        blocked.add(w.record);
        return;
      }
      this.xaddCount++;
      if (blocked.has(w.record) || w.record.generation !== w.generation) return;
      if (w.record.sent === w.index) w.record.sent = w.index + 1;
    });
    for (const r of this.jobs.values()) {
      if (r.ended && r.sent === r.envelopes.length) r.settledAt ??= Date.now();
    }
    if (epoch !== this.connectionEpoch) {
      // Reconnected while these were in flight: the next round checks the run_id first.
      this.checkedEpoch = -1;
    }
    if (firstError) throw firstError;
  }

  private notifyFlushed(): void {
    if (this.pending !== 0) return;
    const waiters = this.flushWaiters;
    this.flushWaiters = [];
    for (const w of waiters) w();
  }

  private gc(): void {
    const now = Date.now();
    for (const [key, r] of this.jobs) {
      if (!r.ended || r.sent !== r.envelopes.length) continue;
      r.settledAt ??= now;
      if (now - r.settledAt >= this.lingerMs) {
        this.jobs.delete(key);
        rmSync(r.file, { force: true });
      }
    }
  }

  private noteOutage(err: unknown): void {
    const now = Date.now();
    if (now - this.lastOutageLog < 10_000 || this.stopped) return;
    this.lastOutageLog = now;
    this.opts.logger.warn('Redis is not accepting events; the outbox keeps them and retries', {
      error: err instanceof Error ? err.message : String(err),
      pending: this.pending,
    });
  }
}
