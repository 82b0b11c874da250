// End to end through the public API (issue 5): a real API with its ingester and reaper, a real
// gpu-node and real CPU trainers. A session trains and every epoch reaches a graphql-ws
// subscriber once, in order, equal to what is stored; sinceEpoch replays exactly what was asked;
// a subscriber whose socket drops comes back with sinceEpoch and misses nothing; another
// organization (or nobody) cannot subscribe; the node API refuses a wrong join token.
import { createHash } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { describe, expect, it } from 'vitest';
import { sessionStorage } from '../src/modules/nodes/session-storage.js';
import {
  apiBaseUrl,
  EPOCHS_SUBSCRIPTION,
  getSession,
  GiveUp,
  makeDatasetArchive,
  query,
  range,
  SESSION_SUBSCRIPTION,
  sessionUuid,
  setupOrg,
  storedEpochs,
  tempDir,
  tinyTraining,
  trainModel,
  waitFor,
  waitForStatus,
  type Epoch,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

// Heartbeats every 1000 ms (the fixture's default): the register test expects that interval.
const e2e = useE2eFixture({ name: 'training', node: { id: 'e2e-training-node' } });

describe.sequential('e2e: training over the public API', () => {
  it('the node API refuses a wrong or missing join token with 401', async () => {
    const url = `${apiBaseUrl(e2e.api)}/node/v1/register`;
    const body = JSON.stringify({ nodeId: 'intruder', host: 'h', version: '0', slots: 1, gpus: [] });
    const wrong = await fetch(url, { method: 'POST', headers: { authorization: 'Bearer not-the-token', 'content-type': 'application/json' }, body });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: 'unauthorized', message: expect.any(String) });
    const missing = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(missing.status).toBe(401);
    // The same token with one character changed: still refused (not a prefix or length check).
    const token = e2e.api.app.config.nodeToken;
    const flipped = token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A');
    const near = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${flipped}`, 'content-type': 'application/json' }, body });
    expect(near.status).toBe(401);
    // Control: with the right token the same request is accepted, so 401 was the token alone.
    const right = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body });
    expect(right.status).toBe(200);
    expect(await right.json()).toMatchObject({ heartbeatIntervalMs: 1000 });
  });

  it('trains to COMPLETED: every epoch arrives over graphql-ws once, in order, equal to what is stored; artifacts download intact', async () => {
    const epochs = 4;
    // Queued while no node runs, so the session subscription sees QUEUED before RUNNING.
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs, exportFormats: ['ONNX'] }));
    expect(session.status).toBe('QUEUED');
    const ws = e2e.client(e2e.org.token);
    const updates = ws.subscribe<{ status: string }>(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated');
    const live = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    await updates.waitForItems(1, 10_000, 'the first session update');
    await e2e.ensureNode();

    await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 90_000);
    await live.waitForEnd(10_000, 'trainingEpochs to complete after COMPLETED');
    await updates.waitForEnd(10_000, 'trainingSessionUpdated to complete after COMPLETED');
    expect(live.errors).toBeNull();
    expect(updates.errors).toBeNull();

    // Every epoch once, in order, and exactly the stored rows.
    expect(live.items.map((e) => e.epoch)).toEqual(range(1, epochs));
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(live.items).toEqual(stored);
    expect(stored[0].metrics).toMatchObject({ train_loss: expect.any(Number), lr: expect.any(Number), seconds: expect.any(Number) });
    for (const e of stored) expect(e.metrics.data_wait_fraction).toBeGreaterThanOrEqual(0);
    for (const e of stored) expect(e.metrics.data_wait_fraction).toBeLessThanOrEqual(1);

    const statuses = updates.items.map((u) => u.status).filter((s, i, all) => i === 0 || all[i - 1] !== s);
    expect(statuses).toEqual(['QUEUED', 'RUNNING', 'COMPLETED']);

    const done = await getSession(e2e.api, e2e.org.token, session.id);
    expect(done).toMatchObject({ status: 'COMPLETED', error: null, progress: { epoch: epochs, totalEpochs: epochs, fraction: 1 } });
    const model = await query(e2e.api, e2e.org.token, `query($id: ID!) { node(id: $id) { ... on Model { versions { version metrics } } } }`, { id: e2e.org.modelId });
    expect(model.node.versions).toHaveLength(1);
    expect(model.node.versions[0]).toMatchObject({ version: 1, metrics: expect.any(Object) });

    // The trained files: weights, ONNX export, metrics and the final checkpoint, each intact.
    const kinds = done.artifacts.map((a) => a.kind);
    expect(kinds).toEqual(expect.arrayContaining(['WEIGHTS', 'ONNX', 'METRICS', 'CHECKPOINT']));
    // One checkpoint per file name is kept: each newer last.pt / best.pt replaced the one before,
    // in the artifact list and in storage (every upload has a key of its own; see session-storage.ts).
    const checkpoints = done.artifacts.filter((a) => a.kind === 'CHECKPOINT' && a.name.startsWith('attempt-1/'));
    expect(checkpoints.filter((a) => /^attempt-1\/last\.[0-9a-f]{16}\.pt$/.test(a.name))).toHaveLength(1);
    expect(checkpoints.filter((a) => /^attempt-1\/best\.[0-9a-f]{16}\.pt$/.test(a.name))).toHaveLength(1);
    const orgId = decodeGlobalID((await query(e2e.api, e2e.org.token, '{ viewer { organization { id } } }')).viewer.organization.id).id;
    const storage = await sessionStorage(e2e.api.app, { organizationId: orgId });
    const inStorage: string[] = [];
    for await (const entry of storage.list(`orgs/${orgId}/sessions/${sessionUuid(session.id)}/checkpoints/`)) inStorage.push(entry.key);
    expect(inStorage.map((k) => k.split('/').slice(-2).join('/')).sort()).toEqual(checkpoints.map((a) => a.name).sort());
    for (const a of done.artifacts) {
      const res = await fetch(a.url);
      expect(res.status, `${a.kind} ${a.name}`).toBe(200);
      const bytes = Buffer.from(await res.arrayBuffer());
      expect(bytes.length, `${a.kind} ${a.name} size`).toBe(a.sizeBytes);
      expect(createHash('sha256').update(bytes).digest('hex'), `${a.kind} ${a.name} sha256`).toBe(a.sha256);
    }
  }, 120_000);

  it('sinceEpoch: stored epochs after k then live ones, no gap and no duplicate; without it, all', async () => {
    await e2e.ensureNode();
    const epochs = 8;
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs }));
    // Subscribe mid-training: some epochs are stored (replay), more are still to come (live).
    const atSubscribe = await waitFor(
      async () => {
        const s = await getSession(e2e.api, e2e.org.token, session.id);
        if (s.status !== 'RUNNING' && s.status !== 'QUEUED') throw new GiveUp(`session ended ${s.status} before 3 epochs`);
        return s.epochs.edges.length >= 3 ? s : null;
      },
      60_000,
      'three stored epochs',
      50,
    );
    const ws = e2e.client(e2e.org.token);
    const since2 = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: 2 }, 'trainingEpochs');
    const all = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    const zero = ws.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: 0 }, 'trainingEpochs');
    const storedThen = atSubscribe.epochs.edges.length;
    // Still a live part to receive: the session had not finished when the subscriptions started.
    expect(storedThen).toBeLessThan(epochs);

    await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 90_000);
    for (const sub of [since2, all, zero]) {
      await sub.waitForEnd(10_000);
      expect(sub.errors).toBeNull();
    }
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(since2.items.map((e) => e.epoch)).toEqual(range(3, epochs));
    expect(since2.items).toEqual(stored.slice(2));
    expect(all.items).toEqual(stored);
    expect(zero.items).toEqual(stored);

    // After the end: only the replay, then the subscription completes.
    const after = e2e.client(e2e.org.token);
    const tail = after.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: epochs - 2 }, 'trainingEpochs');
    const nothing = after.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: epochs }, 'trainingEpochs');
    await tail.waitForEnd(10_000);
    await nothing.waitForEnd(10_000);
    expect(tail).toMatchObject({ completed: true, errors: null });
    expect(tail.items).toEqual(stored.slice(epochs - 2));
    expect(nothing).toMatchObject({ completed: true, errors: null, items: [] });
    const negative = after.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: -1 }, 'trainingEpochs');
    await negative.waitForEnd(10_000);
    expect(negative.items).toEqual([]);
    expect(negative.errors?.[0]).toMatchObject({ extensions: { code: 'BAD_USER_INPUT' } });
  }, 120_000);

  it('a subscriber whose socket drops mid-training comes back with sinceEpoch and misses nothing, duplicates nothing', async () => {
    await e2e.ensureNode();
    const epochs = 10;
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs }));
    const first = e2e.client(e2e.org.token);
    const before = first.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');
    await before.waitForItems(2, 60_000, 'two live epochs');
    first.dropSocket();
    await before.waitForEnd(10_000, 'the dropped subscription to end');
    expect(before.completed).toBe(false);
    expect(before.errors).not.toBeNull();
    const lastSeen = before.items.at(-1)!.epoch;
    expect(before.items.map((e) => e.epoch)).toEqual(range(1, lastSeen));

    // Epochs finish while the subscriber is away; it comes back before the session ends.
    const away = await waitFor(
      async () => {
        const s = await getSession(e2e.api, e2e.org.token, session.id);
        return s.epochs.edges.length >= lastSeen + 2 ? s : null;
      },
      60_000,
      'two epochs while disconnected',
      50,
    );
    expect(away.status).toBe('RUNNING');
    expect(away.epochs.edges.length).toBeLessThan(epochs);
    const second = e2e.client(e2e.org.token);
    const after = second.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: lastSeen }, 'trainingEpochs');

    await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 90_000);
    await after.waitForEnd(10_000);
    expect(after.errors).toBeNull();
    const stored = await storedEpochs(e2e.api, e2e.org.token, session.id);
    expect(stored.map((e) => e.epoch)).toEqual(range(1, epochs));
    expect(after.items.map((e) => e.epoch)).toEqual(range(lastSeen + 1, epochs));
    expect([...before.items, ...after.items]).toEqual(stored);
  }, 120_000);

  it('another organization and an anonymous websocket cannot subscribe to the session', async () => {
    await e2e.ensureNode();
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 4 }));
    const other = await setupOrg(e2e.api, makeDatasetArchive(tempDir(e2e.cleanup, 'other'), { images: 12, size: 32, seed: 2 }), { orgName: 'Other' });
    const owner = e2e.client(e2e.org.token);
    const ownerEpochs = owner.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs');

    const outsider = e2e.client(other.token);
    const anonymous = e2e.client(null);
    const attempts = [
      outsider.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs'),
      outsider.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id, since: 0 }, 'trainingEpochs'),
      outsider.subscribe(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated'),
      anonymous.subscribe<Epoch>(EPOCHS_SUBSCRIPTION, { s: session.id }, 'trainingEpochs'),
      anonymous.subscribe(SESSION_SUBSCRIPTION, { s: session.id }, 'trainingSessionUpdated'),
    ];
    // The session trains meanwhile: the owner sees every epoch, the others nothing.
    await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 90_000);
    await ownerEpochs.waitForEnd(10_000);
    expect(ownerEpochs.items.map((e) => e.epoch)).toEqual([1, 2, 3, 4]);
    for (const [i, sub] of attempts.entries()) {
      await sub.waitForEnd(10_000, `refusal ${i}`);
      expect(sub.items, `refusal ${i}`).toEqual([]);
      expect(sub.completed, `refusal ${i}`).toBe(false);
    }
    // Another organization's session looks like a missing one; a websocket without credentials
    // is closed with 4401 (unauthenticated) at connection_init.
    for (const sub of attempts.slice(0, 3)) expect(sub.errors?.[0]).toMatchObject({ extensions: { code: 'NOT_FOUND' } });
    for (const sub of attempts.slice(3)) expect((sub.errors?.[0] as { code?: number } | undefined)?.code).toBe(4401);
  }, 120_000);
});
