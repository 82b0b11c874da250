// End to end (issue 5): gpu-nodes as real processes (`npm run gpu-node`). gpuNodes and
// gpuNodeUpdated show them ONLINE with heartbeats; SIGKILL of the node running a session makes it
// OFFLINE, the session goes back to QUEUED and RUNNING on the other node, resumes from the last
// uploaded checkpoint and completes with every epoch stored once. The time from SIGKILL to
// RUNNING again is measured (target under 15 s).
//
// API settings used here: heartbeats every 1000 ms (CVTRAIN_NODE_HEARTBEAT_MS), a node silent for
// 3000 ms is OFFLINE (CVTRAIN_NODE_OFFLINE_MS); the reaper looks every second.
import { describe, expect, it } from 'vitest';
import {
  EPOCHS_SUBSCRIPTION,
  getSession,
  type GpuNodeView,
  isAlive,
  killGroup,
  NodeProcess,
  range,
  sessionUuid,
  storedEpochs,
  streamEvents,
  type Subscription,
  tinyTraining,
  trainModel,
  waitFor,
  waitForStatus,
  type Epoch,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

const HEARTBEAT_MS = 1000;
const OFFLINE_MS = 3000;

type SessionUpdate = { status: string; attempt: number; receivedAt: number };

const e2e = useE2eFixture({
  name: 'node-loss',
  env: { CVTRAIN_NODE_HEARTBEAT_MS: String(HEARTBEAT_MS), CVTRAIN_NODE_OFFLINE_MS: String(OFFLINE_MS) },
  teardownTimeoutMs: 90_000,
});
let nodeA: NodeProcess;
let nodeB: NodeProcess | null = null;
let nodeUpdates: Subscription<GpuNodeView>;
// How long a trainer may outlive its SIGKILLed daemon: the cancel grace (15 s) a stop gets anyway.
const ORPHAN_GRACE_MS = 15_000;
let orphanStoppedBy: Promise<number | null> | null = null;

describe.sequential('e2e: gpu-node loss', () => {
  it('gpuNodes and gpuNodeUpdated show a node ONLINE with heartbeats', async () => {
    const ws = e2e.client(e2e.org.token);
    nodeUpdates = ws.subscribe<GpuNodeView>(
      'subscription { gpuNodeUpdated { id status lastHeartbeatAt runningJobs slots } }',
      {},
      'gpuNodeUpdated',
    );
    nodeA = e2e.nodeProcess('e2e-node-a');
    const online = await waitFor(async () => (await e2e.gpuNodes()).find((n) => n.id === 'e2e-node-a' && n.status === 'ONLINE'), 60_000, 'node A ONLINE');
    expect(online).toMatchObject({ slots: 1, runningJobs: 0 });
    // Heartbeats arrive as updates, each later than the one before.
    const beats = await waitFor(() => {
      const a = nodeUpdates.items.filter((n) => n.id === 'e2e-node-a' && n.status === 'ONLINE');
      return a.length >= 3 ? a : null;
    }, 15_000, 'three updates of node A');
    const times = beats.map((b) => Date.parse(b.lastHeartbeatAt));
    for (let i = 1; i < times.length; i++) expect(times[i]).toBeGreaterThanOrEqual(times[i - 1]);
    expect(times.at(-1)! - times[0]).toBeGreaterThan(0);
    const later = (await e2e.gpuNodes()).find((n) => n.id === 'e2e-node-a')!;
    expect(Date.parse(later.lastHeartbeatAt)).toBeGreaterThan(Date.parse(online.lastHeartbeatAt));
    expect(nodeUpdates.errors).toBeNull();
    // Nodes are visible to signed-in callers only: a websocket without credentials is closed with 4401.
    const anonymous = e2e.client(null);
    const refused = anonymous.subscribe<GpuNodeView>('subscription { gpuNodeUpdated { id status } }', {}, 'gpuNodeUpdated');
    await refused.waitForEnd(10_000);
    expect(refused.items).toEqual([]);
    expect((refused.errors?.[0] as { code?: number } | undefined)?.code).toBe(4401);
    expect((await e2e.api.gql('{ gpuNodes { id } }')).errors?.[0]).toMatchObject({ extensions: { code: 'UNAUTHENTICATED' } });
  }, 90_000);

  it('SIGKILL of the node running a session: OFFLINE, QUEUED, RUNNING on the other node, resumed from the last checkpoint, COMPLETED with every epoch once', async () => {
    const epochs = 30;
    // Node A is the only node when the session is queued, so A takes it; node B starts meanwhile
    // (a daemon needs a few seconds to come up) and waits idle.
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs }));
    nodeB = e2e.nodeProcess('e2e-node-b');
    await waitFor(async () => (await getSession(e2e.api, e2e.org.token, session.id)).epochs.edges.length >= 3, 90_000, 'three epochs on node A');
    await waitFor(async () => (await e2e.gpuNodes()).some((n) => n.id === 'e2e-node-b' && n.status === 'ONLINE'), 60_000, 'node B ONLINE');
    const nodesBefore = await e2e.gpuNodes();
    expect(nodesBefore.find((n) => n.id === 'e2e-node-a')).toMatchObject({ status: 'ONLINE', runningJobs: 1 });
    expect(nodesBefore.find((n) => n.id === 'e2e-node-b')).toMatchObject({ status: 'ONLINE', runningJobs: 0 });
    // Still mid-training on A, with a checkpoint or more uploaded.
    const beforeKill = await getSession(e2e.api, e2e.org.token, session.id);
    expect(beforeKill.status).toBe('RUNNING');
    expect(beforeKill.epochs.edges.length).toBeLessThan(epochs - 5);

    const ws = e2e.client(e2e.org.token);
    const updates = ws.subscribe<Omit<SessionUpdate, 'receivedAt'>>(
      'subscription($s: ID!) { trainingSessionUpdated(id: $s) { status attempt } }',
      { s: session.id },
      'trainingSessionUpdated',
    );
    const live = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    await updates.waitForItems(1, 10_000, 'the current session state');

    const trainerOfA = nodeA.trainerPids();
    expect(trainerOfA).toHaveLength(1);
    const killedAt = Date.now();
    nodeA.kill('SIGKILL');
    await nodeA.exited;
    // The trainer of a SIGKILLed daemon runs in its own process group and is not signalled by the
    // daemon's death. Watch whether it stops by itself (the last test below), then kill it either way.
    orphanStoppedBy = waitFor(() => trainerOfA.every((pid) => !isAlive(pid)), ORPHAN_GRACE_MS, 'the orphaned trainer to stop').then(
      () => Date.now() - killedAt,
      () => null,
    );
    e2e.cleanup.add('orphaned trainer', () => trainerOfA.forEach(killGroup));
    void orphanStoppedBy.then(() => trainerOfA.forEach(killGroup));

    const received = (): SessionUpdate[] => updates.items.map((u, i) => ({ ...u, receivedAt: updates.times[i] }));
    const runningAgain = await waitFor(() => received().find((u) => u.attempt === 2 && u.status === 'RUNNING'), 60_000, 'RUNNING on attempt 2');
    const recoveryS = (runningAgain.receivedAt - killedAt) / 1000;
    console.log(
      `SIGKILL of gpu-node -> session RUNNING again on the other node: ${recoveryS.toFixed(2)} s ` +
        `(heartbeat ${HEARTBEAT_MS} ms, offline after ${OFFLINE_MS} ms, reaper every 1000 ms)`,
    );

    const done = await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 120_000);
    await live.waitForEnd(10_000);
    await updates.waitForEnd(10_000);

    // Every epoch stored once, 1..N, and the live subscriber got each once, in order.
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(live.errors).toBeNull();
    expect(live.items).toEqual(stored);

    // RUNNING (attempt 1) -> QUEUED (attempt 2) -> RUNNING (attempt 2) -> COMPLETED.
    const path_ = received().map((u) => `${u.status}@${u.attempt}`).filter((s, i, all) => i === 0 || all[i - 1] !== s);
    expect(path_).toEqual(['RUNNING@1', 'QUEUED@2', 'RUNNING@2', 'COMPLETED@2']);
    expect(done.attempt).toBe(2);
    expect(done.attempts.at(-1)).toMatchObject({ provider: 'PLATFORM', ok: true, reason: expect.stringMatching(/e2e-node-a stopped heartbeating/) });

    // Node A is OFFLINE (seen live and in the list), node B ONLINE.
    expect(nodeUpdates.items.some((n) => n.id === 'e2e-node-a' && n.status === 'OFFLINE')).toBe(true);
    const nodes = await e2e.gpuNodes();
    expect(nodes.find((n) => n.id === 'e2e-node-a')).toMatchObject({ status: 'OFFLINE' });
    expect(nodes.find((n) => n.id === 'e2e-node-b')).toMatchObject({ status: 'ONLINE' });

    // Where attempt 2 started is not in the API; the node's event stream says it: on node B,
    // from the last checkpoint attempt 1 uploaded, not from scratch.
    const events = await streamEvents(e2e.api.app.config.redisUrl, e2e.api.app.config.redisPrefix, sessionUuid(session.id));
    const lastCheckpoint = events
      .filter((e) => e.attempt === 1 && e.event.type === 'checkpoint' && e.event.kind !== 'best' && e.upload)
      .at(-1)!;
    const started2 = events.find((e) => e.attempt === 2 && e.event.type === 'started')!;
    expect(started2.nodeId).toBe('e2e-node-b');
    expect(started2.event.resumed_from).toEqual(expect.any(String));
    expect(started2.event.start_epoch).toBe(lastCheckpoint.event.epoch);
    expect(started2.event.start_epoch).toBeGreaterThanOrEqual(1);
    console.log(`attempt 2 resumed after epoch ${started2.event.start_epoch} (${beforeKill.epochs.edges.length} epochs were stored before the kill)`);
    const epochs2 = events.filter((e) => e.attempt === 2 && e.event.type === 'epoch').map((e) => e.event.epoch);
    expect(epochs2).toEqual(range(started2.event.start_epoch + 1, epochs));

    expect(isAlive(nodeB!.pid)).toBe(true);
    expect(recoveryS).toBeLessThan(15);
  }, 240_000);

  // Nothing signals the trainer when its daemon dies (it runs in its own process group); it must
  // notice by itself (its event pipe and log pipes break at its next write) and exit, or a daemon
  // restarted on the same machine would share the GPU with a run nobody reads.
  it('the trainer of a SIGKILLed gpu-node does not outlive it', async () => {
    expect(orphanStoppedBy).not.toBeNull();
    const ms = await orphanStoppedBy!;
    console.log(`trainer of the SIGKILLed node: ${ms === null ? `still running ${ORPHAN_GRACE_MS / 1000} s after the kill` : `gone after ${(ms / 1000).toFixed(1)} s`}`);
    expect(ms).not.toBeNull();
  }, 30_000);
});
