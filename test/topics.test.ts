// The topic fan-out (src/events/topics.ts) against a real Redis: one listener per topic hands the
// same message to every subscriber's inbox; multi-topic subscriptions; clean-up; slow consumers.
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createTopics, Inbox, MAX_BACKLOG, SubscriberTooSlowError } from '../src/events/topics.js';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const topics = createTopics(redisUrl);
const name = (t: string) => `cvtrain-test-topics-${randomBytes(4).toString('hex')}:${t}`;

afterAll(async () => {
  await topics.close();
});

async function take<T>(it: AsyncIterator<T>, n: number, timeoutMs = 5000): Promise<T[]> {
  const out: T[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < n) {
    const left = deadline - Date.now();
    const r = await Promise.race([it.next(), new Promise<'timeout'>((res) => setTimeout(() => res('timeout'), Math.max(0, left)))]);
    if (r === 'timeout') throw new Error(`got ${out.length} of ${n} messages`);
    if (r.done) break;
    out.push(r.value);
  }
  return out;
}

describe('topics', () => {
  it('delivers every message, in order, to every subscriber, and the same parsed object to each', async () => {
    const t = name('a');
    const subs = await Promise.all([topics.subscribe<{ n: number }>(t), topics.subscribe<{ n: number }>(t), topics.subscribe<{ n: number }>(t)]);
    expect(topics.subscriberCount(t)).toBe(3);
    for (let n = 0; n < 20; n++) topics.publish(t, { n });
    const got = await Promise.all(subs.map((s) => take(s, 20)));
    for (const g of got) expect(g.map((m) => m.n)).toEqual([...Array(20).keys()]);
    // One parse per message, shared: what lets subscribers cache per-message work.
    expect(got[0]![7]).toBe(got[1]![7]);
    expect(got[1]![7]).toBe(got[2]![7]);
    await Promise.all(subs.map((s) => s.return()));
    expect(topics.subscriberCount(t)).toBe(0);
  });

  it('one subscription on several topics receives from all of them', async () => {
    const [a, b] = [name('x'), name('y')];
    const sub = await topics.subscribe<{ from: string }>([a, b]);
    topics.publish(a, { from: 'a' });
    topics.publish(b, { from: 'b' });
    const got = await take(sub, 2);
    expect(got.map((m) => m.from).sort()).toEqual(['a', 'b']);
    await sub.return();
    expect(topics.subscriberCount(a) + topics.subscriberCount(b)).toBe(0);
  });

  it('is live when subscribe resolves: a message published right after arrives', async () => {
    for (let i = 0; i < 20; i++) {
      const t = name(`live${i}`);
      const sub = await topics.subscribe<number>(t);
      topics.publish(t, i);
      expect(await take(sub, 1)).toEqual([i]);
      await sub.return();
    }
  });

  it('return() ends a reader that is waiting, and later messages are not delivered', async () => {
    const t = name('ret');
    const sub = await topics.subscribe<number>(t);
    const waiting = sub.next();
    await sub.return();
    expect(await waiting).toEqual({ value: undefined, done: true });
    topics.publish(t, 1);
    expect(await sub.next()).toEqual({ value: undefined, done: true });
    expect(topics.subscriberCount(t)).toBe(0);
  });

  it('an aborted signal ends the subscription, also a reader waiting inside an async generator', async () => {
    const t = name('abort');
    const ended = new AbortController();
    const sub = await topics.subscribe<number>(t, { signal: ended.signal });
    // As the subscription resolvers read it: a generator awaiting the next message cannot be
    // returned from outside until that message comes; the signal ends it without one.
    const stream = (async function* () {
      for await (const n of sub) yield n;
    })();
    const first = stream.next();
    topics.publish(t, 1);
    expect(await first).toEqual({ value: 1, done: false });
    const waiting = stream.next();
    ended.abort();
    const stillWaiting = new Promise((r) => setTimeout(() => r('still waiting after 1 s'), 1000));
    expect(await Promise.race([waiting, stillWaiting])).toEqual({ value: undefined, done: true });
    expect(topics.subscriberCount(t)).toBe(0);
    const already = new AbortController();
    already.abort();
    const late = await topics.subscribe<number>(t, { signal: already.signal });
    expect(await late.next()).toEqual({ value: undefined, done: true });
    expect(topics.subscriberCount(t)).toBe(0);
  });
});

describe('Inbox', () => {
  it('queues items pushed before they are read', async () => {
    const inbox = new Inbox<number>(() => undefined);
    inbox.push(1);
    inbox.push(2);
    expect(await inbox.next()).toEqual({ value: 1, done: false });
    expect(await inbox.next()).toEqual({ value: 2, done: false });
    const pending = inbox.next();
    inbox.push(3);
    expect(await pending).toEqual({ value: 3, done: false });
  });

  it(`a consumer more than ${MAX_BACKLOG} items behind is closed with an error, and its topic listener released`, async () => {
    let closed = 0;
    const inbox = new Inbox<number>(() => closed++);
    for (let i = 0; i <= MAX_BACKLOG; i++) inbox.push(i);
    expect(closed).toBe(1);
    await expect(inbox.next()).rejects.toBeInstanceOf(SubscriberTooSlowError);
    expect(await inbox.next()).toEqual({ value: undefined, done: true });
    inbox.push(1);
    expect(await inbox.next()).toEqual({ value: undefined, done: true });
  });
});
