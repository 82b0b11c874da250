// End to end (issue 5): Redis restarts mid-training (SIGKILL, no persistence: the stream, the
// consumer group, the queue and every subscription are gone) and no epoch is lost. The API and
// the gpu-node use a redis-server of this file's own; the session completes with every epoch
// 1..N stored once, and a subscriber that resubscribes with sinceEpoch gets all it had not seen.
import { describe, expect, it } from 'vitest';
import {
  EPOCHS_SUBSCRIPTION,
  getSession,
  range,
  SESSION_SUBSCRIPTION,
  storedEpochs,
  tinyTraining,
  trainModel,
  waitFor,
  waitForStatus,
  type Epoch,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

const e2e = useE2eFixture({
  name: 'redis-restart',
  privateRedis: true,
  node: { id: 'e2e-redis-node' },
  startNode: true,
  setupTimeoutMs: 90_000,
  teardownTimeoutMs: 90_000,
});

describe('e2e: Redis restart mid-training', () => {
  it('loses no epoch: all stored once, and a subscriber resubscribing with sinceEpoch gets the rest', async () => {
    expect(e2e.api.app.config.redisUrl).toBe(e2e.redis.url);
    const epochs = 16;
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs }));
    const ws = e2e.client(e2e.org.token);
    const first = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    const updates = ws.subscribe<{ status: string }>(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated');
    await first.waitForItems(2, 60_000, 'two live epochs before the restart');

    await e2e.redis.kill();
    const downAt = Date.now();
    // A transaction the ingester had under way may still commit; after that nothing can arrive.
    await new Promise((r) => setTimeout(r, 300));
    const storedAtKill = (await storedEpochs(e2e.api, e2e.org.token, session.id)).length;
    // Down long enough for the trainer to finish an epoch or more, which the node must hold.
    await new Promise((r) => setTimeout(r, 2000));
    // Nothing was ingested while Redis was down: the outage was real to the API.
    expect((await storedEpochs(e2e.api, e2e.org.token, session.id)).length).toBe(storedAtKill);
    await e2e.redis.start();
    const upAt = Date.now();

    // Epochs written during the outage and after it are stored; the session carries on.
    await waitFor(async () => (await storedEpochs(e2e.api, e2e.org.token, session.id)).length >= storedAtKill + 2, 60_000, 'epochs after the restart');
    const mid = await getSession(e2e.api, e2e.org.token, session.id);
    // The live subscriber may have missed what was published while its Redis connection was
    // down; it resubscribes from the last epoch it saw, while the session still runs.
    const lastSeen = first.items.at(-1)!.epoch;
    const second = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: lastSeen }, 'trainingEpochs');

    const done = await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 120_000);
    await second.waitForEnd(15_000, 'the resubscribed trainingEpochs to complete');
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    console.log(
      `Redis down ${((upAt - downAt) / 1000).toFixed(1)} s at epoch ${storedAtKill}; resubscribed after epoch ${lastSeen} ` +
        `(${mid.epochs.edges.length} stored then, session ${mid.status}); first subscriber got ${first.items.length} of ${epochs} epochs ` +
        `and ${first.completed ? 'completed' : first.errors ? 'failed' : 'did not end'}`,
    );

    expect(done).toMatchObject({ status: 'COMPLETED', attempt: 1, error: null });
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(mid.status).toBe('RUNNING');
    expect(mid.epochs.edges.length).toBeLessThan(epochs);

    // The first subscriber: in order, no duplicate, each equal to the stored row.
    const firstEpochs = first.items.map((e) => e.epoch);
    expect(new Set(firstEpochs).size).toBe(firstEpochs.length);
    expect([...firstEpochs].sort((a, b) => a - b)).toEqual(firstEpochs);
    for (const e of first.items) expect(e).toEqual(stored[e.epoch - 1]);
    // The resubscription: exactly what came after the last epoch it saw, no gap, no duplicate.
    expect(second.errors).toBeNull();
    expect(second.items.map((e) => e.epoch)).toEqual(range(lastSeen + 1, epochs));
    expect(second.items).toEqual(stored.slice(lastSeen));
    expect(first.items.filter((e) => e.epoch <= lastSeen)).toEqual(stored.slice(0, lastSeen));

    // Subscriptions that lived through the restart still end when the session does.
    await first.waitForEnd(15_000, 'the first trainingEpochs subscription to end after COMPLETED');
    await updates.waitForEnd(15_000, 'trainingSessionUpdated to end after COMPLETED');
    expect(updates.items.at(-1)).toMatchObject({ status: 'COMPLETED' });
  }, 240_000);
});
