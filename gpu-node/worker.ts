// bee-queue workers (PROTOCOL.md §1): one Queue per slot with concurrency 1, so a GPU runs one
// job at a time, each in a fresh trainer process (its GPU memory is freed when it exits).
import { createRequire } from 'node:module';
import type BeeQueueType from 'bee-queue';
import type { Logger } from '../src/lib/log.js';
import { GPU_QUEUE, redisNames } from '../protocol/index.js';
import { QUEUE_RECONNECT_MAX_MS } from './config.js';
import { InvalidJobPayloadError, JobRunner, type JobEnd, type JobRunnerDeps, type Slot } from './job-runner.js';

// bee-queue is CommonJS (`export =`); createRequire keeps tsx, vitest and tsc in agreement.
const require = createRequire(import.meta.url);
const BeeQueue = require('bee-queue') as typeof BeeQueueType;

/** bee-queue's own Redis clients (node_redis 3) reconnect forever, never giving up after an hour. */
export function beeQueueRedisOptions(redisUrl: string): Record<string, unknown> {
  return {
    url: redisUrl,
    retry_strategy: (o: { attempt: number }) => Math.min(o.attempt * 200, QUEUE_RECONNECT_MAX_MS),
    // node_redis 3 stops reconnecting once an outage lasts connect_timeout (default 1 h).
    connect_timeout: 2 ** 31 - 1,
  };
}

export class SlotWorker {
  private queue: BeeQueueType | null = null;
  private closing: Promise<void> | null = null;
  current: JobRunner | null = null;
  /** Jobs this worker finished, by how they ended (diagnostics and tests). */
  readonly ended: { jobId: string; end: JobEnd | { kind: 'error'; error: string } }[] = [];

  constructor(
    readonly slot: Slot,
    private readonly deps: JobRunnerDeps,
    private readonly log: Logger,
    /** Shutdown in progress: a job taken now is claimed and handed straight back. */
    private readonly shuttingDown: () => boolean,
  ) {}

  async start(): Promise<void> {
    const { config } = this.deps;
    const queue = new BeeQueue(GPU_QUEUE, {
      prefix: redisNames(config.redisPrefix).queuePrefix,
      redis: beeQueueRedisOptions(config.redisUrl) as never,
      isWorker: true,
      // The node neither creates jobs nor listens to other workers' job events.
      getEvents: false,
      storeJobs: false,
      activateDelayedJobs: false,
      // Finished jobs carry nothing the API needs (it learns everything from events and claims).
      removeOnSuccess: true,
    });
    queue.on('error', (err) => this.log.warn('job queue: Redis error (bee-queue reconnects)', { error: err.message }));
    this.queue = queue;
    queue.process(1, (job) => this.handle(job));
    await queue.ready();
  }

  private async handle(job: BeeQueueType.Job<unknown>): Promise<unknown> {
    let runner: JobRunner;
    try {
      runner = new JobRunner(this.deps, job.id, job.data, this.slot);
    } catch (err) {
      if (err instanceof InvalidJobPayloadError) this.log.error(err.message);
      this.ended.push({ jobId: job.id, end: { kind: 'error', error: (err as Error).message } });
      throw err;
    }
    this.current = runner;
    if (this.shuttingDown()) runner.shutdown();
    try {
      const end = await runner.run();
      this.ended.push({ jobId: job.id, end });
      return { kind: end.kind };
    } catch (err) {
      this.log.error('job failed on the node', { job: job.id, session: runner.sessionId, error: (err as Error).message });
      this.ended.push({ jobId: job.id, end: { kind: 'error', error: (err as Error).message } });
      throw err;
    } finally {
      this.current = null;
    }
  }

  /**
   * Stops taking jobs; resolves when the running job (if any) has ended, or after `timeoutMs`.
   * bee-queue disconnects its blocking client at once, so nothing new is taken meanwhile.
   */
  close(timeoutMs: number): Promise<void> {
    if (!this.queue) return Promise.resolve();
    this.closing ??= this.queue.close(Math.min(Math.max(1, timeoutMs), 2 ** 31 - 1)).catch((err: Error) => {
      this.log.warn('job queue closed before the running job finished', { error: err.message });
    });
    return this.closing;
  }
}
