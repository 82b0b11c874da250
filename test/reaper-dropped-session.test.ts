// A live gpu-node that stops listing a session it claimed (the job was lost on the node: a
// crash between claim and trainer start, a restarted daemon that kept its node id) must not leave
// the session RUNNING forever: the reaper queues it again once a heartbeat still misses it the
// offline window after the session last changed. A heartbeat that misses a job only while its
// claim is answered (gpu-node/PROTOCOL.md) must not.
//
// The node here is driven by hand through the real node API client, with no trainer, so each
// heartbeat says exactly what the test wants.
import { afterEach, describe, expect, it } from 'vitest';
import { NodeApiClient } from '../gpu-node/api-client.js';
import { EventIngester, ingestCaughtUp } from '../src/events/ingester.js';
import { createRedis } from '../src/redis.js';
import { getSession, sessionUuid, tinyTraining, trainModel, waitFor, waitForStatus } from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

const OFFLINE_MS = 1500;
const BEAT_MS = 250;
const e2e = useE2eFixture({ name: 'dropped', env: { CVTRAIN_NODE_OFFLINE_MS: String(OFFLINE_MS) } });

let beating: NodeJS.Timeout | null = null;
afterEach(() => {
  if (beating) clearInterval(beating);
  beating = null;
});

async function handNode(nodeId: string) {
  const client = new NodeApiClient({ apiUrl: e2e.api.url.replace(/\/graphql$/, ''), token: e2e.api.app.config.nodeToken });
  await client.register({ nodeId, host: 'test', version: 'test', slots: 1, gpus: [] });
  let listed: string[] = [];
  const beat = () => client.heartbeat({ nodeId, status: 'ONLINE', gpus: [], runningSessionIds: listed });
  beating = setInterval(() => void beat().catch(() => undefined), BEAT_MS);
  return {
    client,
    list(ids: string[]) {
      listed = ids;
    },
    beat,
  };
}

/** A session queued for the platform, claimed by the node: RUNNING on it, attempt 1. */
async function claimedSession(node: Awaited<ReturnType<typeof handNode>>, nodeId: string) {
  const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 2 }));
  await waitForStatus(e2e.api, e2e.org.token, session.id, ['QUEUED'], 10_000);
  const claim = await node.client.claim(sessionUuid(session.id), { nodeId, attempt: 1, jobId: 'hand' });
  expect(claim.ok).toBe(true);
  expect((await getSession(e2e.api, e2e.org.token, session.id)).status).toBe('RUNNING');
  return session;
}

/** The session once it is on attempt 2 (queued again), within a few offline windows. */
function secondAttempt(sessionId: string, what: string) {
  return waitFor(
    async () => {
      const s = await getSession(e2e.api, e2e.org.token, sessionId);
      return s.attempt === 2 ? s : null;
    },
    OFFLINE_MS * 6,
    what,
  );
}

describe('reaper: sessions a live node no longer runs', () => {
  it('leaves a listed session RUNNING, also when one heartbeat missed it while its claim was answered', async () => {
    const node = await handNode('hand-a');
    const session = await claimedSession(node, 'hand-a');
    // The beat in flight during the claim did not list it yet; the node lists it from then on.
    await node.beat();
    node.list([sessionUuid(session.id)]);
    await new Promise((r) => setTimeout(r, OFFLINE_MS * 3));
    const now = await getSession(e2e.api, e2e.org.token, session.id);
    expect(now).toMatchObject({ status: 'RUNNING', attempt: 1 });
    // Cleanup: the node lets it go and the test ends it.
    node.list([]);
  });

  it('queues a session again when the live node keeps not listing it', async () => {
    const node = await handNode('hand-b');
    const session = await claimedSession(node, 'hand-b');
    const started = Date.now();
    const requeued = await secondAttempt(session.id, 'the session queued again on attempt 2');
    const waited = Date.now() - started;
    expect(['QUEUED', 'RUNNING']).toContain(requeued.status);
    expect(requeued.attempts.at(-1)).toMatchObject({ ok: true, reason: 'gpu-node hand-b no longer runs it' });
    // Not before the window: the claim-time heartbeat race must not trigger it.
    expect(waited).toBeGreaterThanOrEqual(OFFLINE_MS - BEAT_MS);
    // The node is still ONLINE: only the session moved.
    expect((await e2e.gpuNodes()).find((n) => n.id === 'hand-b')?.status).toBe('ONLINE');
  });
});

describe('reaper: events still on their way', () => {
  it('ingestCaughtUp is true only when the group has read and acknowledged every entry', async () => {
    const names = { ...e2e.api.app.redisNames, eventsStream: `${e2e.api.app.redisNames.eventsStream}-probe-${Date.now()}` };
    const redis = createRedis(e2e.api.app.config, 'test');
    try {
      expect(await ingestCaughtUp(redis, names)).toBe(true); // no stream yet
      await redis.xgroup('CREATE', names.eventsStream, names.ingestGroup, '0', 'MKSTREAM');
      await redis.xadd(names.eventsStream, '*', 'data', '{}');
      expect(await ingestCaughtUp(redis, names)).toBe(false); // not read
      const read = (await redis.xreadgroup('GROUP', names.ingestGroup, 'c', 'COUNT', 10, 'STREAMS', names.eventsStream, '>')) as [
        string,
        [string, string[]][],
      ][];
      expect(await ingestCaughtUp(redis, names)).toBe(false); // read, not acknowledged
      await redis.xack(names.eventsStream, names.ingestGroup, read[0][1][0][0]);
      expect(await ingestCaughtUp(redis, names)).toBe(true);
    } finally {
      await redis.del(names.eventsStream);
      redis.disconnect();
    }
  });

  it('does not queue a dropped session again while the ingester has events to apply', async () => {
    const node = await handNode('hand-c');
    const session = await claimedSession(node, 'hand-c');
    const { app, workers } = e2e.api;
    await workers!.ingester.stop();
    const redis = createRedis(app.config, 'test');
    let ingester: EventIngester | null = null;
    try {
      // An entry the stopped ingester has not applied (any entry counts; this one is invalid).
      await redis.xadd(app.redisNames.eventsStream, '*', 'data', '{"not":"an envelope"}');
      await new Promise((r) => setTimeout(r, OFFLINE_MS * 3));
      expect(await getSession(e2e.api, e2e.org.token, session.id)).toMatchObject({ status: 'RUNNING', attempt: 1 });
      ingester = new EventIngester(app.config.redisUrl, app.redisNames, app.sql, app.orchestrator, app.publisher);
      ingester.start();
      const requeued = await secondAttempt(session.id, 'the session queued again once the ingester caught up');
      expect(requeued.attempts.at(-1)).toMatchObject({ reason: 'gpu-node hand-c no longer runs it' });
      expect(ingester.stats.invalid).toBeGreaterThanOrEqual(1);
    } finally {
      await ingester?.stop();
      redis.disconnect();
    }
  });
});
