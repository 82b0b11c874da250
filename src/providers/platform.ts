// PLATFORM: the team's own GPUs. Jobs go to the bee-queue queue `gpu-training`, which
// gpu-node daemons pull from (gpu-node/PROTOCOL.md).
import BeeQueue from 'bee-queue';
import type { Config } from '../config.js';
import type { Sql } from '../db/sql.js';
import { beeQueueRedisOptions } from '../redis.js';
import { check, GPU_QUEUE, redisNames, type JobPayload } from '../../protocol/index.js';
import type { Redis } from 'ioredis';
import type { CheckResult, ProfileForAdapter, ProviderAdapter } from './types.js';

export function platformJobId(sessionId: string, attempt: number): string {
  return `${sessionId}:${attempt}`;
}

export class PlatformProvider implements ProviderAdapter {
  readonly name = 'PLATFORM' as const;
  readonly unsupported = [] as const;
  private queue: BeeQueue<JobPayload>;
  private readonly names;

  constructor(
    private readonly config: Config,
    private readonly sql: Sql,
    private readonly publisher: Redis,
  ) {
    this.names = redisNames(config.redisPrefix);
    this.queue = this.createQueue();
  }

  private createQueue(): BeeQueue<JobPayload> {
    const queue = new BeeQueue<JobPayload>(GPU_QUEUE, {
      prefix: this.names.queuePrefix,
      redis: beeQueueRedisOptions(this.config.redisUrl),
      isWorker: false,
      getEvents: false,
      sendEvents: false,
      // Finished jobs live on in PostgreSQL; keeping them in Redis would only grow memory.
      removeOnSuccess: true,
      removeOnFailure: true,
    });
    queue.on('error', () => undefined);
    return queue;
  }

  async checkCredentials(): Promise<CheckResult> {
    return { ok: true, reason: 'platform GPUs need no credentials' };
  }

  async checkCapacity(profile: ProfileForAdapter): Promise<CheckResult> {
    const [row] = await this.sql.query<{ n: string }>(
      `select count(*) as n from gpu_nodes where status = 'ONLINE' and last_heartbeat_at > now() - (? * interval '1 millisecond')`,
      [this.config.nodeOfflineMs],
    );
    const live = Number(row.n);
    if (live > 0) return { ok: true, reason: `${live} gpu-node(s) online` };
    if (profile.config.allowWaiting !== false) {
      return { ok: true, reason: 'no gpu-node online; the job waits in the queue (allowWaiting)' };
    }
    return { ok: false, reason: 'no gpu-node is online and the profile does not allow waiting' };
  }

  externalJobIdFor(payload: JobPayload): string {
    return platformJobId(payload.sessionId, payload.attempt);
  }

  async submit(_profile: ProfileForAdapter, payload: JobPayload): Promise<{ externalJobId: string }> {
    // A payload the nodes would refuse must fail here, where the orchestrator can record it.
    const valid = check('jobPayload', payload);
    if (!valid.ok) throw new Error(`job payload does not match schema/job-payload.schema.json: ${valid.error}`);
    const id = platformJobId(payload.sessionId, payload.attempt);
    try {
      await this.save(payload, id);
    } catch (err) {
      // bee-queue loads its Lua scripts once per connection; after a Redis restart they are gone.
      if (!String((err as Error).message).includes('NOSCRIPT')) throw err;
      await this.queue.close(1000).catch(() => undefined);
      this.queue = this.createQueue();
      await this.save(payload, id);
    }
    return { externalJobId: id };
  }

  private async save(payload: JobPayload, id: string) {
    const job = this.queue.createJob(payload).setId(id);
    if (payload.requirements.timeoutSeconds) job.timeout(payload.requirements.timeoutSeconds * 1000);
    await job.save();
  }

  async cancel(session: { id: string; attempt: number; externalJobId: string | null }): Promise<void> {
    // A waiting job is removed; a running one is stopped by its node (SIGTERM, checkpoint).
    if (session.externalJobId) await this.queue.removeJob(session.externalJobId).catch(() => undefined);
    await this.publisher.publish(
      this.names.controlChannel,
      JSON.stringify({ type: 'cancel', sessionId: session.id, attempt: session.attempt }),
    );
  }

  async close(): Promise<void> {
    await this.queue.close(2000).catch(() => undefined);
  }
}
