// Reads the event stream with a consumer group, writes PostgreSQL, acknowledges after commit,
// and only then publishes, so a subscriber never sees an event the database does not hold and
// a crash between commit and ack only causes a redelivery (dropped by seq).
import os from 'node:os';
import type { Redis } from 'ioredis';
import type { Sql } from '../db/sql.js';
import { createLogger, errorFields } from '../lib/log.js';
import { applyEnvelope, type Effects } from '../modules/training/events.js';
import type { Orchestrator } from '../orchestrator/index.js';
import { createRedis } from '../redis.js';
import { check, type AnyEnvelope as Envelope, type RedisNames } from '../../protocol/index.js';
import type { Publisher } from './publisher.js';

const log = createLogger('ingester');

// Entries read per round trip; the BLOCK timeout bounds how long stop() waits for the loop.
const BATCH = 100;
const BLOCK_MS = 1000;
// Entries another consumer took but did not acknowledge for this long are taken over (it died).
const CLAIM_IDLE_MS = 30_000;

type StreamReply = [string, [string, string[]][]][] | null;

export type RemoveObjects = (owner: { organizationId: string; storageProfileId: string | null }, keys: string[]) => Promise<void>;

export class EventIngester {
  private readonly redis: Redis;
  private readonly consumer = `${os.hostname()}-${process.pid}`;
  private running = false;
  private loop: Promise<void> | null = null;
  /** Envelopes applied since start, and those that changed nothing (for tests and metrics). */
  readonly stats = { applied: 0, ignored: 0, invalid: 0 };

  constructor(
    redisUrl: string,
    private readonly names: RedisNames,
    private readonly sql: Sql,
    private readonly orchestrator: Orchestrator,
    private readonly publisher: Publisher,
    /** Deletes checkpoint objects a newer checkpoint replaced (after commit; a failure only leaks them). */
    private readonly removeObjects: RemoveObjects = async () => undefined,
  ) {
    this.redis = createRedis({ redisUrl }, 'ingester');
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
    this.redis.disconnect();
  }

  private async ensureGroup() {
    try {
      // From the beginning of the stream: events written while no API ran are not skipped.
      await this.redis.xgroup('CREATE', this.names.eventsStream, this.names.ingestGroup, '0', 'MKSTREAM');
    } catch (err) {
      if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
    }
  }

  private async run() {
    let groupReady = false;
    let backlog = true;
    while (this.running) {
      try {
        if (!groupReady) {
          await this.ensureGroup();
          groupReady = true;
          backlog = true;
        }
        if (backlog) {
          // Our own unacknowledged entries first (a crash between commit and ack), then orphans.
          const mine = (await this.redis.xreadgroup(
            'GROUP', this.names.ingestGroup, this.consumer, 'COUNT', BATCH, 'STREAMS', this.names.eventsStream, '0',
          )) as StreamReply;
          const entries = mine?.[0]?.[1] ?? [];
          if (entries.length) {
            await this.handle(entries);
            continue;
          }
          const claimed = (await this.redis.xautoclaim(
            this.names.eventsStream, this.names.ingestGroup, this.consumer, CLAIM_IDLE_MS, '0-0', 'COUNT', BATCH,
          )) as [string, [string, string[]][]];
          if (claimed?.[1]?.length) {
            await this.handle(claimed[1]);
            continue;
          }
          backlog = false;
        }
        const reply = (await this.redis.xreadgroup(
          'GROUP', this.names.ingestGroup, this.consumer, 'COUNT', BATCH, 'BLOCK', BLOCK_MS, 'STREAMS', this.names.eventsStream, '>',
        )) as StreamReply;
        const entries = reply?.[0]?.[1] ?? [];
        if (entries.length) await this.handle(entries);
      } catch (err) {
        const message = String((err as Error).message);
        if (message.includes('NOGROUP')) {
          // Redis restarted without persistence: the stream and group are gone. Nodes replay
          // their running jobs' events, so recreating the group is all it takes.
          log.warn('consumer group missing (Redis restarted?); recreating it');
          groupReady = false;
          continue;
        }
        if (!this.running) break;
        log.warn('ingestion round failed; retrying', errorFields(err));
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private async handle(entries: [string, string[]][]) {
    for (const [id, fields] of entries) {
      if (!this.running) return;
      const raw = fields[fields.indexOf('data') + 1];
      let envelope: Envelope | null = null;
      try {
        envelope = JSON.parse(raw ?? '') as Envelope;
      } catch {
        envelope = null;
      }
      const valid = envelope ? check('envelope', envelope) : { ok: false as const, error: 'not JSON' };
      if (!envelope || !valid.ok) {
        // A malformed entry can never succeed; acknowledge it so it does not block the stream.
        this.stats.invalid++;
        log.warn('dropping an invalid event envelope', { id, reason: valid.ok ? 'not JSON' : valid.error });
        await this.redis.xack(this.names.eventsStream, this.names.ingestGroup, id);
        continue;
      }
      const env = envelope;
      // Database errors propagate: the entry stays pending and is retried.
      const effects: Effects = await this.sql.transaction((tx) => applyEnvelope(tx, env));
      await this.redis.xack(this.names.eventsStream, this.names.ingestGroup, id);
      if (effects.ignored) {
        this.stats.ignored++;
        log.debug('event changed nothing', { sessionId: env.sessionId, seq: env.seq, why: effects.ignored });
        continue;
      }
      this.stats.applied++;
      if (effects.epoch) this.publisher.epoch(effects.epoch);
      if (effects.session) this.publisher.sessionChanged(effects.session);
      if (effects.requeued) await this.orchestrator.submitQueued(effects.requeued);
      if (effects.obsolete) {
        const { keys, ...owner } = effects.obsolete;
        await this.removeObjects(owner, keys).catch((err) =>
          log.warn('could not delete replaced checkpoints; they stay in storage', { sessionId: env.sessionId, keys, ...errorFields(err) }),
        );
      }
    }
  }
}

/**
 * True when the ingest group has applied every event in the stream: none waits to be read, none
 * read is unacknowledged. The reaper asks before it decides that a live node has dropped a
 * session, since the session's last events may still be on their way (after an API restart,
 * say). Uses a client of its own: the ingester's is blocked reading.
 */
export async function ingestCaughtUp(redis: Redis, names: RedisNames): Promise<boolean> {
  let stream: unknown[];
  try {
    stream = (await redis.xinfo('STREAM', names.eventsStream)) as unknown[];
  } catch (err) {
    if (/no such key/i.test(String((err as Error).message))) return true;
    throw err;
  }
  const field = (flat: unknown[], name: string) => flat[flat.indexOf(name) + 1];
  const lastId = String(field(stream, 'last-generated-id'));
  if ((field(stream, 'length') as number) === 0) return true;
  const groups = (await redis.xinfo('GROUPS', names.eventsStream)) as unknown[][];
  const group = groups.find((g) => field(g, 'name') === names.ingestGroup);
  if (!group) return false;
  return Number(field(group, 'pending')) === 0 && String(field(group, 'last-delivered-id')) === lastId;
}
