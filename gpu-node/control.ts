// Control messages from the API (PROTOCOL.md §4) on the pub/sub channel `P node-control`.
// ioredis re-subscribes after a reconnection; a message published while the node was
// disconnected is lost (pub/sub keeps nothing), which the API must allow for.
import { Redis } from 'ioredis';
import { z } from 'zod';
import type { Logger } from '../src/lib/log.js';
import { redisNames } from '../protocol/index.js';

const messageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('cancel'), sessionId: z.string().min(1), attempt: z.number().int().min(1) }),
  z.object({ type: z.literal('drain'), nodeId: z.string().min(1) }),
]);
export type ControlMessage = z.infer<typeof messageSchema>;

export interface ControlOptions {
  redisUrl: string;
  prefix: string;
  nodeId: string;
  logger: Logger;
  onCancel: (sessionId: string, attempt: number) => void;
  onDrain: () => void;
}

export class ControlChannel {
  private readonly redis: Redis;
  readonly channel: string;

  constructor(private readonly opts: ControlOptions) {
    this.channel = redisNames(opts.prefix).controlChannel;
    this.redis = new Redis(opts.redisUrl, { lazyConnect: true, maxRetriesPerRequest: null });
    this.redis.on('error', () => {
      // Reconnection is automatic; the outbox already reports Redis outages.
    });
    this.redis.on('message', (channel: string, raw: string) => {
      if (channel === this.channel) this.handle(raw);
    });
  }

  async start(): Promise<void> {
    await this.redis.connect();
    await this.redis.subscribe(this.channel);
  }

  async stop(): Promise<void> {
    this.redis.disconnect();
  }

  private handle(raw: string): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(raw);
    } catch {
      this.opts.logger.warn('control message is not JSON; ignored', { raw: raw.slice(0, 200) });
      return;
    }
    const msg = messageSchema.safeParse(parsed);
    if (!msg.success) {
      this.opts.logger.warn('unknown control message; ignored', { raw: raw.slice(0, 200) });
      return;
    }
    if (msg.data.type === 'cancel') {
      this.opts.onCancel(msg.data.sessionId, msg.data.attempt);
    } else if (msg.data.nodeId === this.opts.nodeId) {
      this.opts.onDrain();
    }
  }
}
