// The outbox against a redis-server of the test's own (never the shared one: these tests kill
// and restart it). Envelopes appended while Redis is down arrive once it is up; a restart that
// loses Redis' data (new run_id) gets the running jobs' envelopes again; a node killed before
// delivering finds its files at the next start.
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Outbox } from '../gpu-node/outbox.js';
import type { Envelope, TrainerEvent } from '../protocol/index.js';
import { PrivateRedis, recordingLogger, tempDir, waitFor } from './gpu-node-helpers.js';

const PREFIX = `gpu-node-outbox-${randomUUID().slice(0, 8)}:`;
let redis: PrivateRedis;
const outboxes: Outbox[] = [];

beforeAll(async () => {
  redis = await PrivateRedis.create();
});
afterAll(async () => {
  for (const o of outboxes) o.abandon();
  await redis.kill();
});

function makeOutbox(dir = tempDir('outbox'), lingerMs = 60_000): Outbox {
  const o = new Outbox({ redisUrl: redis.url, prefix: PREFIX, dir, nodeId: 'node-a', logger: recordingLogger(), lingerMs, retryMaxMs: 300 }).start();
  outboxes.push(o);
  return o;
}

function progress(n: number): TrainerEvent {
  return {
    v: 1,
    type: 'progress',
    ts: '2025-01-01T00:00:00.000Z',
    session: 's',
    epoch: 1,
    step: n,
    steps_per_epoch: 1000,
    fraction: n / 1000,
    loss: 1 / n,
    images_per_sec: 10,
    lr: 0.01,
  } as TrainerEvent;
}

/** Every envelope in the stream, in stream order. */
async function streamEnvelopes(): Promise<Envelope[]> {
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1 });
  try {
    const entries = await client.xrange(`${PREFIX}events`, '-', '+');
    return entries.map(([, fields]) => {
      expect(fields[0]).toBe('data');
      return JSON.parse(fields[1]) as Envelope;
    });
  } finally {
    client.disconnect();
  }
}

function seqs(envs: Envelope[], sessionId: string, attempt = 1): number[] {
  return envs.filter((e) => e.sessionId === sessionId && e.attempt === attempt).map((e) => e.seq);
}

const range = (a: number, b: number) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe.sequential('outbox', () => {
  it('appends made while Redis is down arrive, in order, once it is up', async () => {
    const outbox = makeOutbox();
    const s1 = randomUUID();
    const s2 = randomUUID();
    const a = outbox.job(s1, 1);
    const b = outbox.job(s2, 3);
    for (let i = 1; i <= 5; i++) {
      const env = a.append('trainer', progress(i));
      expect(env).toMatchObject({ v: 1, nodeId: 'node-a', sessionId: s1, attempt: 1, seq: i, source: 'trainer' });
      b.append('trainer', progress(i));
    }
    b.append('node', { type: 'crashed', ts: new Date().toISOString(), exitCode: 1, signal: null, stderrTail: 'boom', lastEventType: 'epoch' });
    await new Promise((r) => setTimeout(r, 300));
    expect(outbox.pending).toBe(11);
    // The node keeps reporting these sessions (heartbeats) until their events are delivered.
    b.end();
    expect(outbox.undeliveredSessionIds().sort()).toEqual([s1, s2].sort());

    await redis.start();
    expect(await outbox.flushed(10_000)).toBe(true);
    expect(outbox.undeliveredSessionIds()).toEqual([]);
    const envs = await streamEnvelopes();
    expect(seqs(envs, s1)).toEqual(range(1, 5));
    expect(seqs(envs, s2, 3)).toEqual(range(1, 6));
    expect(envs.filter((e) => e.sessionId === s2).at(-1)).toMatchObject({ source: 'node', event: { type: 'crashed', stderrTail: 'boom' } });
    // The stream holds the envelope exactly as appended.
    expect(envs.find((e) => e.sessionId === s1 && e.seq === 3)).toEqual(outbox.held(s1, 1)[2]);
    a.end();
  });

  it('Redis restarted mid-stream with its data lost: the running job is appended again, nothing lost', async () => {
    const outbox = makeOutbox();
    const s = randomUUID();
    const job = outbox.job(s, 2);
    for (let i = 1; i <= 10; i++) job.append('trainer', progress(i));
    expect(await outbox.flushed(5000)).toBe(true);
    expect(seqs(await streamEnvelopes(), s, 2)).toEqual(range(1, 10));

    await redis.kill();
    for (let i = 11; i <= 15; i++) job.append('trainer', progress(i));
    await new Promise((r) => setTimeout(r, 300));
    expect(outbox.pending).toBe(5);
    await redis.start();
    expect(await outbox.flushed(10_000)).toBe(true);

    const after = await streamEnvelopes();
    // The new server starts empty: every envelope of the job, each once, in seq order.
    expect(seqs(after, s, 2)).toEqual(range(1, 15));
    expect(after.filter((e) => e.sessionId === s).map((e) => (e.event as { step: number }).step)).toEqual(range(1, 15));
    expect(outbox.replays).toBe(1);

    // Appends go on normally after the replay.
    job.append('trainer', progress(16));
    expect(await outbox.flushed(5000)).toBe(true);
    expect(seqs(await streamEnvelopes(), s, 2)).toEqual(range(1, 16));
    job.end();
  });

  it('a restart while nothing is pending still replays running and lingering jobs; jobs past the linger are gone', async () => {
    const outbox = makeOutbox(tempDir('outbox-linger'), 1500);
    const running = randomUUID();
    const ended = randomUUID();
    const r = outbox.job(running, 1);
    const e = outbox.job(ended, 1);
    r.append('trainer', progress(1));
    e.append('trainer', progress(1));
    e.append('trainer', progress(2));
    expect(await outbox.flushed(5000)).toBe(true);
    e.end();

    await redis.kill();
    await redis.start();
    await waitFor(async () => seqs(await streamEnvelopes(), ended).length === 2 && seqs(await streamEnvelopes(), running).length === 1, 10_000, 'replay after restart');

    // Past the linger time the ended job is dropped: a later restart no longer brings it back.
    await waitFor(() => outbox.held(ended, 1).length === 0, 5000, 'the ended job to be dropped');
    expect(outbox.held(running, 1)).toHaveLength(1);
    await redis.kill();
    await redis.start();
    await waitFor(async () => seqs(await streamEnvelopes(), running).length === 1, 10_000, 'replay of the running job');
    await new Promise((res) => setTimeout(res, 300));
    expect(seqs(await streamEnvelopes(), ended)).toEqual([]);
    r.end();
  });

  it('a node killed before delivering: the next start sends the envelopes from its files', async () => {
    const dir = tempDir('outbox-crash');
    await redis.kill();
    const first = makeOutbox(dir);
    const s = randomUUID();
    const job = first.job(s, 1);
    for (let i = 1; i <= 4; i++) job.append('trainer', progress(i));
    first.abandon();
    expect(readdirSync(dir)).toEqual([`${s}.1.jsonl`]);

    await redis.start();
    const second = makeOutbox(dir, 0);
    expect(await second.flushed(10_000)).toBe(true);
    expect(seqs(await streamEnvelopes(), s)).toEqual(range(1, 4));
    // Delivered and not running: the file goes.
    await waitFor(() => !existsSync(path.join(dir, `${s}.1.jsonl`)), 12_000, 'outbox file removal');

  });

  it('the same attempt after a restart of the node continues its seq from the file', async () => {
    const dir = tempDir('outbox-seq');
    await redis.kill();
    const first = makeOutbox(dir);
    const s = randomUUID();
    const job = first.job(s, 4);
    job.append('trainer', progress(1));
    job.append('trainer', progress(2));
    first.abandon();
    await redis.start();
    const second = makeOutbox(dir);
    const again = second.job(s, 4);
    expect(again.lastSeq).toBe(2);
    expect(again.append('trainer', progress(3)).seq).toBe(3);
    expect(await second.flushed(10_000)).toBe(true);
    expect(seqs(await streamEnvelopes(), s, 4)).toEqual([1, 2, 3]);
    again.end();
    expect(await second.close(5000)).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses an envelope that breaks the schema', () => {
    const outbox = makeOutbox();
    const job = outbox.job(randomUUID(), 1);
    expect(() => job.append('trainer', { v: 1, type: 'epoch' } as unknown as TrainerEvent)).toThrow(/event-envelope/);
    expect(job.lastSeq).toBe(0);
  });
});
