// End to end (issue 5, recovery): a gpu-node that is presumed lost but is not dead (frozen with
// SIGSTOP past the offline window: a long GC pause, a network partition) comes back while its
// session already runs again on another node. The attempt fence must keep the stale run from
// changing anything: the session completes on the other node with every epoch 1..N once, the
// returning node is told to stop its stale trainer, and it is ONLINE again afterwards.
import { describe, expect, it } from 'vitest';
import {
  EPOCHS_SUBSCRIPTION,
  getSession,
  isAlive,
  range,
  SESSION_SUBSCRIPTION,
  sessionUuid,
  storedEpochs,
  streamEvents,
  tinyTraining,
  trainModel,
  waitFor,
  waitForStatus,
  type Epoch,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

const OFFLINE_MS = 3000;
const e2e = useE2eFixture({ name: 'partition', env: { CVTRAIN_NODE_OFFLINE_MS: String(OFFLINE_MS) }, teardownTimeoutMs: 90_000 });

describe('e2e: a node presumed lost comes back', () => {
  it('its stale run changes nothing; the session completes elsewhere with every epoch once; the node is told to stop', async () => {
    const epochs = 24;
    const frozen = e2e.nodeProcess('e2e-frozen');
    await waitFor(async () => (await e2e.gpuNodes()).some((n) => n.id === 'e2e-frozen' && n.status === 'ONLINE'), 60_000, 'the first node ONLINE');
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs }));
    const other = e2e.nodeProcess('e2e-other');
    const ws = e2e.client(e2e.org.token);
    const live = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    const updates = ws.subscribe<{ status: string; attempt: number }>(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated');
    await waitFor(async () => (await getSession(e2e.api, e2e.org.token, session.id)).epochs.edges.length >= 2, 90_000, 'two epochs on the first node');
    await waitFor(async () => (await e2e.gpuNodes()).some((n) => n.id === 'e2e-other' && n.status === 'ONLINE'), 60_000, 'the second node ONLINE');
    expect((await e2e.gpuNodes()).find((n) => n.id === 'e2e-frozen')).toMatchObject({ runningJobs: 1 });
    const staleTrainers = frozen.trainerPids();
    expect(staleTrainers).toHaveLength(1);

    // Freeze the daemon (its trainer, in its own process group, keeps training) past the offline window.
    frozen.child.kill('SIGSTOP');
    const rerun = await waitFor(async () => {
      const s = await getSession(e2e.api, e2e.org.token, session.id);
      return s.attempt === 2 && s.status === 'RUNNING' ? s : null;
    }, 30_000, 'attempt 2 RUNNING on the other node');
    expect((await e2e.gpuNodes()).find((n) => n.id === 'e2e-frozen')).toMatchObject({ status: 'OFFLINE' });
    expect(rerun.epochs.edges.length).toBeLessThan(epochs - 4);
    frozen.child.kill('SIGCONT');

    // Back: the stale trainer is stopped (upload refused, heartbeat says stop) and the node is ONLINE.
    await waitFor(() => staleTrainers.every((pid) => !isAlive(pid)), 30_000, 'the stale trainer to stop');
    await waitFor(async () => (await e2e.gpuNodes()).some((n) => n.id === 'e2e-frozen' && n.status === 'ONLINE'), 15_000, 'the returning node ONLINE');
    expect(frozen.alive).toBe(true);

    const done = await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 120_000);
    await live.waitForEnd(10_000);
    await updates.waitForEnd(10_000);
    expect(done.attempt).toBe(2);
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(live.errors).toBeNull();
    expect(live.items).toEqual(stored);
    const path_ = updates.items.map((u) => `${u.status}@${u.attempt}`).filter((s, i, all) => i === 0 || all[i - 1] !== s);
    expect(path_.slice(-3)).toEqual(['QUEUED@2', 'RUNNING@2', 'COMPLETED@2']);
    expect(path_).not.toContain('FAILED@2');

    // The returning node did send attempt-1 events after the requeue (the fence had work to do),
    // and none of them ended the session.
    const events = await streamEvents(e2e.api.app.config.redisUrl, e2e.api.app.config.redisPrefix, sessionUuid(session.id));
    const fromFrozen = events.filter((e) => e.nodeId === 'e2e-frozen');
    expect(fromFrozen.every((e) => e.attempt === 1)).toBe(true);
    expect(events.filter((e) => e.attempt === 2).every((e) => e.nodeId === 'e2e-other')).toBe(true);
    console.log(
      `frozen node sent ${fromFrozen.length} attempt-1 events in all; last: ${fromFrozen.at(-1)?.event.type}; ` +
        `the other node resumed after epoch ${events.find((e) => e.attempt === 2 && e.event.type === 'started')?.event.start_epoch}`,
    );
  }, 240_000);
});
