// Pub/sub topics through Redis (@graphql-yoga/redis-event-target), so every API replica's
// subscribers receive what any replica's ingester publishes.
import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import { Repeater } from 'graphql-yoga';
import type { Redis } from 'ioredis';
import { createRedis } from '../redis.js';

export interface Topics {
  publish(topic: string, payload: unknown): void;
  /**
   * Resolves once Redis has confirmed the subscription, so a caller that subscribes and then reads
   * the database cannot miss a message published in between (the replay-then-live guarantee).
   */
  subscribe<T>(topic: string): Promise<AsyncIterableIterator<T> & { return(): Promise<IteratorResult<T>> }>;
  close(): Promise<void>;
}

export function createTopics(redisUrl: string): Topics {
  const publishClient: Redis = createRedis({ redisUrl }, 'publish');
  const subscribeClient: Redis = createRedis({ redisUrl }, 'subscribe');
  const target = createRedisEventTarget<CustomEvent>({ publishClient, subscribeClient });

  return {
    publish(topic, payload) {
      target.dispatchEvent(new CustomEvent(topic, { detail: payload }));
    },
    async subscribe<T>(topic: string) {
      let listener: ((event: CustomEvent) => void) | null = null;
      let ready!: () => void;
      const subscribed = new Promise<void>((resolve) => (ready = resolve));
      const repeater = new Repeater<T>(async (push, stop) => {
        listener = (event: CustomEvent) => void push(event.detail as T);
        target.addEventListener(topic, listener);
        // The event target issued SUBSCRIBE without waiting; a second SUBSCRIBE on the same
        // connection is answered after the first, so awaiting it means the channel is live.
        await subscribeClient.subscribe(topic);
        ready();
        await stop;
        target.removeEventListener(topic, listener);
      });
      // Start the repeater's executor now (it runs on the first next()); keep that first value.
      const first = repeater.next();
      await subscribed;
      let pending: Promise<IteratorResult<T>> | null = first;
      const iterator = {
        next: () => {
          if (pending) {
            const p = pending;
            pending = null;
            return p;
          }
          return repeater.next();
        },
        return: () => repeater.return(),
        throw: (err: unknown) => repeater.throw(err),
        [Symbol.asyncIterator]() {
          return iterator;
        },
      };
      return iterator as AsyncIterableIterator<T> & { return(): Promise<IteratorResult<T>> };
    },
    async close() {
      await Promise.allSettled([publishClient.quit(), subscribeClient.quit()]);
    },
  };
}
