// Pub/sub topics through Redis (@graphql-yoga/redis-event-target), so every API replica's
// subscribers receive what any replica's ingester publishes.
//
// Fan-out is the hot path: one training event goes to every subscriber of its session (the
// benchmark has 10,000 on one process). So each topic has one listener on the event target, which
// hands the one parsed message to every subscriber's Inbox: a plain queue with at most one waiting
// reader, one promise per delivered item, instead of a chain of Repeaters and generators.
import { createRedisEventTarget } from '@graphql-yoga/redis-event-target';
import type { Redis } from 'ioredis';
import { createRedis } from '../redis.js';

export interface Subscription<T> extends AsyncIterableIterator<T> {
  return(): Promise<IteratorResult<T>>;
}

export interface Topics {
  publish(topic: string, payload: unknown): void;
  /**
   * One subscription fed by every topic named. Resolves once Redis has confirmed the channels, so
   * a caller that subscribes and then reads the database cannot miss a message published in
   * between (the replay-then-live guarantee).
   *
   * `signal` ends the subscription when aborted, also while a reader waits for the next message:
   * an async generator reading it cannot be returned while it awaits, so without the signal a
   * subscription whose client left would live until the topic's next message.
   */
  subscribe<T>(topics: string | readonly string[], opts?: { signal?: AbortSignal }): Promise<Subscription<T>>;
  /** Subscribers in this process, by topic (for tests and metrics). */
  subscriberCount(topic: string): number;
  close(): Promise<void>;
}

/** Items a subscriber may fall behind by before its subscription is ended with an error. */
export const MAX_BACKLOG = 10_000;

export class SubscriberTooSlowError extends Error {
  constructor() {
    super(`The subscription fell more than ${MAX_BACKLOG} messages behind and was closed; subscribe again to resume`);
    this.name = 'SubscriberTooSlowError';
  }
}

const DONE: IteratorResult<never> = { value: undefined as never, done: true };

/** A subscriber's queue: items pushed by the topic listener, read by one consumer. */
export class Inbox<T> implements Subscription<T> {
  private queue: T[] = [];
  private head = 0;
  private waiter: ((result: IteratorResult<T>) => void) | null = null;
  private closed = false;
  private failure: Error | null = null;

  constructor(private readonly onClose: () => void) {}

  push(item: T): void {
    if (this.closed) return;
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = null;
      waiter({ value: item, done: false });
      return;
    }
    if (this.queue.length - this.head >= MAX_BACKLOG) {
      // A consumer that stopped reading (a stalled socket) must not hold the process's memory.
      this.failure = new SubscriberTooSlowError();
      this.close();
      return;
    }
    this.queue.push(item);
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head++]!;
      if (this.head === this.queue.length) {
        this.queue = [];
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.failure) {
      const failure = this.failure;
      this.failure = null;
      return Promise.reject(failure);
    }
    if (this.closed) return Promise.resolve(DONE);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.failure = null;
    this.close();
    return Promise.resolve(DONE);
  }

  throw(err: unknown): Promise<IteratorResult<T>> {
    this.close();
    return Promise.reject(err);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    this.queue = [];
    this.head = 0;
    this.onClose();
    const waiter = this.waiter;
    this.waiter = null;
    if (waiter) {
      // A reader waiting when the backlog overflowed cannot be (the queue was empty), so a
      // waiting reader only ever sees the end.
      waiter(DONE);
    }
  }
}

export function createTopics(redisUrl: string): Topics {
  const publishClient: Redis = createRedis({ redisUrl }, 'publish');
  const subscribeClient: Redis = createRedis({ redisUrl }, 'subscribe');
  const target = createRedisEventTarget<CustomEvent>({ publishClient, subscribeClient });
  const subscribers = new Map<string, { inboxes: Set<Inbox<unknown>>; listener: (event: CustomEvent) => void }>();

  function attach(topic: string, inbox: Inbox<unknown>): void {
    let entry = subscribers.get(topic);
    if (!entry) {
      const inboxes = new Set<Inbox<unknown>>();
      // redis-event-target parses each message once; every subscriber gets that same object.
      const listener = (event: CustomEvent) => {
        for (const i of inboxes) i.push(event.detail);
      };
      entry = { inboxes, listener };
      subscribers.set(topic, entry);
      target.addEventListener(topic, listener);
    }
    entry.inboxes.add(inbox);
  }

  function detach(topic: string, inbox: Inbox<unknown>): void {
    const entry = subscribers.get(topic);
    if (!entry) return;
    entry.inboxes.delete(inbox);
    if (entry.inboxes.size === 0) {
      subscribers.delete(topic);
      // The last listener of a channel gone, the event target unsubscribes it in Redis.
      target.removeEventListener(topic, entry.listener);
    }
  }

  return {
    publish(topic, payload) {
      target.dispatchEvent(new CustomEvent(topic, { detail: payload }));
    },
    async subscribe<T>(topics: string | readonly string[], opts: { signal?: AbortSignal } = {}) {
      const list = typeof topics === 'string' ? [topics] : [...topics];
      const { signal } = opts;
      const end = () => void inbox.return();
      const inbox: Inbox<unknown> = new Inbox(() => {
        signal?.removeEventListener('abort', end);
        for (const t of list) detach(t, inbox);
      });
      for (const t of list) attach(t, inbox);
      if (signal?.aborted) end();
      else signal?.addEventListener('abort', end, { once: true });
      try {
        // The event target issued SUBSCRIBE for a new channel without waiting; a SUBSCRIBE of
        // ours on the same connection is answered after it, so awaiting it means the channels
        // are live.
        await subscribeClient.subscribe(...list);
      } catch (err) {
        await inbox.return();
        throw err;
      }
      return inbox as Subscription<T>;
    },
    subscriberCount(topic) {
      return subscribers.get(topic)?.inboxes.size ?? 0;
    },
    async close() {
      await Promise.allSettled([publishClient.quit(), subscribeClient.quit()]);
    },
  };
}
