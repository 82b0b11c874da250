// End to end (issue 5, recovery): a gpu-node that is presumed lost but is not dead (frozen with
// SIGSTOP past the offline window: a long GC pause, a network partition) comes back while its
// session already runs again on another node. The attempt fence must keep the stale run from
// changing anything: the session completes on the other node with every epoch 1..N once, the
// returning node is told to stop its stale trainer, and it is ONLINE again afterwards.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApi, type TestApi } from './helpers/api.js';
import {
  Cleanup,
  EPOCHS_SUBSCRIPTION,
  getSession,
  isAlive,
  makeDatasetArchive,
  NodeProcess,
  query,
  SESSION_SUBSCRIPTION,
  sessionUuid,
  setupOrg,
  storedEpochs,
  streamEvents,
  tempDir,
  tinyTraining,
  trainModel,
  waitFor,
  waitForStatus,
  WsClient,
  type E2eOrg,
} from './helpers/e2e.js';

const OFFLINE_MS = 3000;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
type NodeView = { id: string; status: string; runningJobs: number };

const cleanup = new Cleanup();
let api: TestApi;
let org: E2eOrg;
let root: string;

beforeAll(async () => {
  api = await startTestApi({ workers: true, env: { CVTRAIN_NODE_HEARTBEAT_MS: '1000', CVTRAIN_NODE_OFFLINE_MS: String(OFFLINE_MS) } });
  cleanup.add('api', () => api.close());
  root = tempDir(cleanup, 'partition');
  org = await setupOrg(api, makeDatasetArchive(root, { images: 24, size: 32 }));
}, 60_000);

afterAll(async () => {
  await cleanup.run();
}, 90_000);

function startNode(nodeId: string): NodeProcess {
  const n = new NodeProcess(api, { nodeId, dataDir: path.join(root, nodeId) });
  cleanup.add(`gpu-node ${nodeId}`, async () => {
    if (n.alive) n.child.kill('SIGCONT');
    await n.stop();
  });
  return n;
}

async function gpuNodes(): Promise<NodeView[]> {
  return (await query(api, org.token, '{ gpuNodes { id status runningJobs } }')).gpuNodes;
}

describe('e2e: a node presumed lost comes back', () => {
  it('its stale run changes nothing; the session completes elsewhere with every epoch once; the node is told to stop', async () => {
    const epochs = 24;
    const frozen = startNode('e2e-frozen');
    await waitFor(async () => (await gpuNodes()).some((n) => n.id === 'e2e-frozen' && n.status === 'ONLINE'), 60_000, 'the first node ONLINE');
    const session = await trainModel(api, org, tinyTraining({ epochs }));
    const other = startNode('e2e-other');
    const ws = new WsClient(api, org.token);
    cleanup.add('ws', () => ws.dispose());
    const live = ws.subscribe<{ epoch: number; metrics: Record<string, unknown> }>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    const updates = ws.subscribe<{ status: string; attempt: number }>(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated');
    await waitFor(async () => (await getSession(api, org.token, session.id)).epochs.edges.length >= 2, 90_000, 'two epochs on the first node');
    await waitFor(async () => (await gpuNodes()).some((n) => n.id === 'e2e-other' && n.status === 'ONLINE'), 60_000, 'the second node ONLINE');
    expect((await gpuNodes()).find((n) => n.id === 'e2e-frozen')).toMatchObject({ runningJobs: 1 });
    const staleTrainers = frozen.trainerPids();
    expect(staleTrainers).toHaveLength(1);

    // Freeze the daemon (its trainer, in its own process group, keeps training) past the offline window.
    frozen.child.kill('SIGSTOP');
    const rerun = await waitFor(async () => {
      const s = await getSession(api, org.token, session.id);
      return s.attempt === 2 && s.status === 'RUNNING' ? s : null;
    }, 30_000, 'attempt 2 RUNNING on the other node');
    expect((await gpuNodes()).find((n) => n.id === 'e2e-frozen')).toMatchObject({ status: 'OFFLINE' });
    expect(rerun.epochs.edges.length).toBeLessThan(epochs - 4);
    frozen.child.kill('SIGCONT');

    // Back: the stale trainer is stopped (upload refused, heartbeat says stop) and the node is ONLINE.
    await waitFor(() => staleTrainers.every((pid) => !isAlive(pid)), 30_000, 'the stale trainer to stop');
    await waitFor(async () => (await gpuNodes()).some((n) => n.id === 'e2e-frozen' && n.status === 'ONLINE'), 15_000, 'the returning node ONLINE');
    expect(frozen.alive).toBe(true);

    const done = await waitForStatus(api, org.token, session.id, ['COMPLETED'], 120_000);
    await live.waitForEnd(10_000);
    await updates.waitForEnd(10_000);
    expect(done.attempt).toBe(2);
    const stored = await storedEpochs(api, org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(live.errors).toBeNull();
    expect(live.items).toEqual(stored);
    const path_ = updates.items.map((u) => `${u.status}@${u.attempt}`).filter((s, i, all) => i === 0 || all[i - 1] !== s);
    expect(path_.slice(-3)).toEqual(['QUEUED@2', 'RUNNING@2', 'COMPLETED@2']);
    expect(path_).not.toContain('FAILED@2');

    // The returning node did send attempt-1 events after the requeue (the fence had work to do),
    // and none of them ended the session.
    const events = await streamEvents(api.app.config.redisUrl, api.app.config.redisPrefix, sessionUuid(session.id));
    const fromFrozen = events.filter((e) => e.nodeId === 'e2e-frozen');
    expect(fromFrozen.every((e) => e.attempt === 1)).toBe(true);
    expect(events.filter((e) => e.attempt === 2).every((e) => e.nodeId === 'e2e-other')).toBe(true);
    console.log(
      `frozen node sent ${fromFrozen.length} attempt-1 events in all; last: ${fromFrozen.at(-1)?.event.type}; ` +
        `the other node resumed after epoch ${events.find((e) => e.attempt === 2 && e.event.type === 'started')?.event.start_epoch}`,
    );
  }, 240_000);
});
