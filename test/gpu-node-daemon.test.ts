// The whole daemon (startGpuNode) with two CPU slots, real Redis and bee-queue, real trainers,
// against a stateful fake of the node API: jobs are claimed, datasets fetched once, checkpoints
// and artifacts uploaded, every event reaches the stream in order with a gap-free seq, and each
// way a job can end says what PROTOCOL.md §5 asks for.
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type BeeQueueType from 'bee-queue';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../gpu-node/config.js';
import { startGpuNode, type GpuNode } from '../gpu-node/node.js';
import { GPU_QUEUE as QUEUE_NAME, validateEnvelope, type Envelope, type JobPayload } from '../protocol/index.js';
import { beeQueueRedisOptions } from '../gpu-node/worker.js';
import { FakeNodeApi, makeDataset, recordingLogger, tempDir, tinyConfig, waitFor, zipDataset } from './gpu-node-helpers.js';

const require = createRequire(import.meta.url);
const BeeQueue = require('bee-queue') as typeof BeeQueueType;

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = `gpu-node-daemon-${randomUUID().slice(0, 8)}:`;
const api = new FakeNodeApi();
const logger = recordingLogger();
let redis: Redis;
let producer: BeeQueueType;
let node: GpuNode;
let datasetSha: string;
let dataDir: string;

beforeAll(async () => {
  await api.start();
  const root = tempDir('daemon');
  const zip = zipDataset(makeDataset(path.join(root, 'shapes')), path.join(root, 'shapes.zip'));
  datasetSha = createHash('sha256').update(zip).digest('hex');
  api.addFile(datasetSha, zip);
  redis = new Redis(REDIS_URL);
  producer = new BeeQueue(QUEUE_NAME, { prefix: `${PREFIX}bq`, redis: beeQueueRedisOptions(REDIS_URL) as never, isWorker: false, getEvents: false });
  dataDir = path.join(root, 'node');
  const config = loadNodeConfig({
    REDIS_URL,
    CVTRAIN_API_URL: api.url,
    CVTRAIN_NODE_TOKEN: api.token,
    CVTRAIN_REDIS_PREFIX: PREFIX,
    CVTRAIN_NODE_DATA_DIR: dataDir,
    CVTRAIN_NODE_ID: 'node-daemon-test',
    CVTRAIN_NODE_SLOTS: '2',
    CVTRAIN_PYTHON: '/usr/bin/python3',
    PATH: process.env.PATH,
  });
  node = await startGpuNode(config, { logger, gpus: [] });
});

afterAll(async () => {
  await node?.stop();
  await producer?.close();
  if (redis) {
    const keys = await redis.keys(`${PREFIX}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  await api.close();
});

function payload(sessionId: string, attempt: number, config: Record<string, unknown>): JobPayload {
  const { dataset: _d, output_dir: _o, session_id: _s, resume_from: _r, device: _dev, ...rest } = config;
  return {
    v: 1,
    sessionId,
    organizationId: randomUUID(),
    attempt,
    config: rest as JobPayload['config'],
    dataset: { versionId: randomUUID(), sha256: datasetSha, format: 'image_folder', sizeBytes: api.files.get(datasetSha)!.length },
    resume: null,
    requirements: { gpus: 0, gpuType: null, timeoutSeconds: null },
    enqueuedAt: new Date().toISOString(),
  };
}

async function enqueue(data: unknown): Promise<string> {
  const job = await producer.createJob(data as never).save();
  return job.id;
}

async function envelopes(sessionId: string): Promise<Envelope[]> {
  const entries = await redis.xrange(`${PREFIX}events`, '-', '+');
  return entries.map(([, f]) => JSON.parse(f[1]) as Envelope).filter((e) => e.sessionId === sessionId);
}

function expectContiguous(envs: Envelope[]) {
  expect(envs.map((e) => e.seq)).toEqual(envs.map((_, i) => i + 1));
  for (const e of envs) expect(validateEnvelope(e).ok).toBe(true);
}

describe('gpu-node daemon', () => {

  it('registers, heartbeats, and runs two jobs at once: one completes with its uploads, one is cancelled', async () => {
    expect(api.callsTo('/register')[0].body).toMatchObject({ nodeId: 'node-daemon-test', slots: 2, gpus: [] });

    const done = randomUUID();
    const cancelled = randomUUID();
    api.addSession(done, 1, datasetSha);
    api.addSession(cancelled, 1, datasetSha);
    const doneJob = await enqueue(payload(done, 1, tinyConfig()));
    await enqueue(payload(cancelled, 1, tinyConfig({ epochs: 200 })));

    // Cancel once the second session has reported an epoch.
    await waitFor(async () => (await envelopes(cancelled)).some((e) => e.event.type === 'epoch'), 25_000, 'an epoch of the job to cancel');
    expect(node.runningSessionIds().sort()).toEqual([done, cancelled].sort());
    await waitFor(() => api.callsTo('/heartbeat').some((c) => c.body.runningSessionIds.includes(cancelled)), 5000, 'a heartbeat naming the session');
    await redis.publish(`${PREFIX}node-control`, JSON.stringify({ type: 'cancel', sessionId: cancelled, attempt: 1 }));
    // The same cancel repeated by heartbeat answers (as after a missed message) changes nothing.
    api.pendingCancels.push({ sessionId: cancelled, attempt: 1 });

    const doneEnvs = await waitFor(async () => {
      const envs = await envelopes(done);
      return envs.some((e) => e.event.type === 'completed') ? envs : null;
    }, 25_000, 'the completed event');
    const cancelledEnvs = await waitFor(async () => {
      const envs = await envelopes(cancelled);
      return envs.some((e) => e.event.type === 'stopped') ? envs : null;
    }, 25_000, 'the stopped event');

    api.pendingCancels.length = 0;
    // The claim carried the job's attempt and bee-queue id.
    expect(api.callsTo(`/sessions/${done}/claim`)).toEqual([{ path: `/node/v1/sessions/${done}/claim`, body: { nodeId: 'node-daemon-test', attempt: 1, jobId: doneJob }, status: 200 }]);

    // Completed job: every trainer event in order, seq 1..n, and nothing from the node after it.
    expectContiguous(doneEnvs);
    expect(doneEnvs.every((e) => e.nodeId === 'node-daemon-test' && e.attempt === 1 && e.source === 'trainer')).toBe(true);
    expect(doneEnvs[0].event.type).toBe('started');
    expect(doneEnvs.at(-1)!.event.type).toBe('completed');
    expect(doneEnvs.filter((e) => e.event.type === 'epoch').map((e) => (e.event as { epoch: number }).epoch)).toEqual([1, 2]);

    // Each checkpoint and artifact went up first; the stored bytes are the ones the trainer hashed.
    const withFiles = doneEnvs.filter((e) => e.event.type === 'checkpoint' || e.event.type === 'artifact');
    expect(withFiles.length).toBeGreaterThanOrEqual(4);
    for (const e of withFiles) {
      const ev = e.event as { sha256: string; size_bytes: number };
      expect(e.upload).toEqual({ key: expect.any(String), sha256: ev.sha256, sizeBytes: ev.size_bytes });
      expect(api.stored.get(e.upload!.key)).toMatchObject({ sha256: ev.sha256, sizeBytes: ev.size_bytes });
    }
    const uploadNames = api.callsTo(`/sessions/${done}/uploads`).map((c) => `${c.body.kind}:${c.body.name}`);
    expect(uploadNames).toEqual(expect.arrayContaining(['checkpoint:checkpoints/last.pt', 'checkpoint:checkpoints/best.pt', 'artifact:metrics.json', 'artifact:weights/best.pt']));

    // Cancelled job: `stopped` is the last word; no node event follows a clean stop.
    expectContiguous(cancelledEnvs);
    expect(cancelledEnvs.at(-1)!.event).toMatchObject({ type: 'stopped', reason: 'signal:SIGTERM', resumable: true });
    expect(cancelledEnvs.some((e) => e.source === 'node')).toBe(false);

    // One download served both jobs; work dirs are gone, the dataset stays cached.
    expect(api.downloads.get(datasetSha)).toBe(1);
    await waitFor(() => node.runningSessionIds().length === 0, 5000, 'both slots idle');
    await waitFor(() => readdirSync(path.join(dataDir, 'work')).length === 0, 5000, 'work dirs removed');
    expect(readdirSync(path.join(dataDir, 'datasets')).filter((n) => n === datasetSha)).toEqual([datasetSha]);
    expect(logger.lines.filter((l) => l.msg === 'dataset downloaded and extracted')).toHaveLength(1);
    // The node's own log tells the story of each job.
    const story = logger.lines.filter((l) => l.fields?.session === done).map((l) => l.msg);
    expect(story).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^training started: mobilenet_v3_small on cpu, epochs 1\.\.2$/),
        expect.stringMatching(/^epoch 1\/2: loss \d+\.\d{4}, top1 /),
        expect.stringMatching(/^epoch 2\/2: /),
        expect.stringMatching(/^job ended: completed \(2 epochs, best top1 /),
      ]),
    );
  }, 60_000);

  it('a refused claim (stale attempt) ends the job without running anything', async () => {
    const s = randomUUID();
    api.addSession(s, 2, datasetSha);
    const jobId = await enqueue(payload(s, 1, tinyConfig()));
    await waitFor(() => node.workers.some((w) => w.ended.some((e) => e.jobId === jobId)), 10_000, 'the job to end');
    const end = node.workers.flatMap((w) => w.ended).find((e) => e.jobId === jobId)!.end;
    expect(end).toEqual({ kind: 'refused', conflict: 'stale_attempt', message: 'not the current attempt' });
    expect(await envelopes(s)).toEqual([]);
    // bee-queue counts it as done (removed on success), not failed.
    await waitFor(async () => (await producer.checkHealth()).active === 0, 5000, 'no active job');
    expect((await producer.checkHealth()).failed).toBe(0);
  });

  it('a job is reported as running only once its claim is granted, so a slow claim is not stopped as stale', async () => {
    // The API answers a heartbeat naming a session it still has QUEUED with "stop" (queued
    // elsewhere). Reported during the claim, the job was stopped while the claim went through:
    // the session stayed RUNNING on this node with no trainer.
    const s = randomUUID();
    api.addSession(s, 1, datasetSha);
    api.slowClaims.set(s, 1500);
    api.stopWhatIsNotRunningHere = true;
    try {
      const jobId = await enqueue(payload(s, 1, tinyConfig()));
      await waitFor(() => node.workers.some((w) => w.current?.sessionId === s), 10_000, 'the job to be received');
      const before = api.callsTo('/heartbeat').length;
      await waitFor(() => api.callsTo('/heartbeat').length >= before + 3, 5000, 'heartbeats while the claim is pending');
      expect(api.callsTo(`/sessions/${s}/claim`)).toEqual([]); // still pending
      for (const beat of api.callsTo('/heartbeat').slice(before)) expect(beat.body.runningSessionIds).not.toContain(s);

      const envs = await waitFor(async () => {
        const e = await envelopes(s);
        return e.some((x) => x.event.type === 'completed') ? e : null;
      }, 25_000, 'the completed event');
      expectContiguous(envs);
      const ended = await waitFor(() => node.workers.flatMap((w) => w.ended).find((e) => e.jobId === jobId), 10_000, 'the job to end');
      expect(ended.end).toMatchObject({ kind: 'trainer', outcome: { kind: 'completed' } });
      // Once claimed, it was reported (and not told to stop).
      expect(api.callsTo('/heartbeat').some((c) => c.body.runningSessionIds.includes(s))).toBe(true);
    } finally {
      api.stopWhatIsNotRunningHere = false;
      api.slowClaims.delete(s);
    }
  }, 60_000);

  it('an invalid payload fails the bee-queue job and reaches no trainer', async () => {
    const jobId = await enqueue({ v: 1, sessionId: 'not-a-uuid' });
    await waitFor(async () => (await producer.checkHealth()).failed === 1, 10_000, 'the job to fail');
    const end = node.workers.flatMap((w) => w.ended).find((e) => e.jobId === jobId)!.end;
    expect(end).toMatchObject({ kind: 'error', error: expect.stringMatching(/job-payload\.schema\.json/) });
  });

  it('a trainer that fails: its `failed` event, then `crashed` from the node with the stderr tail', async () => {
    const s = randomUUID();
    api.addSession(s, 1, datasetSha);
    await enqueue(payload(s, 1, tinyConfig({ architecture: 'no_such_net' })));
    const envs = await waitFor(async () => {
      const e = await envelopes(s);
      return e.some((x) => x.source === 'node') ? e : null;
    }, 20_000, 'the crashed event');
    expectContiguous(envs);
    expect(envs.map((e) => `${e.source}:${e.event.type}`)).toEqual(['trainer:failed', 'node:crashed']);
    expect(envs[1].event).toMatchObject({ type: 'crashed', exitCode: 2, signal: null, lastEventType: 'failed', stderrTail: expect.stringMatching(/no_such_net/) });
  });

  it('time limit: stopped at a checkpoint, then timed_out; a session the heartbeat says to stop: stopped, not given back', async () => {
    const timed = randomUUID();
    const moved = randomUUID();
    api.addSession(timed, 1, datasetSha);
    api.addSession(moved, 1, datasetSha);
    const p = payload(timed, 1, tinyConfig({ epochs: 500 }));
    p.requirements.timeoutSeconds = 2;
    await enqueue(p);
    const movedJob = await enqueue(payload(moved, 1, tinyConfig({ epochs: 500 })));

    // The API re-queued `moved` elsewhere while it thought this node lost; the next beat says so.
    await waitFor(async () => (await envelopes(moved)).some((e) => e.event.type === 'epoch'), 25_000, 'an epoch of the moved session');
    api.stopSessions.add(moved);

    const timedEnvs = await waitFor(async () => {
      const e = await envelopes(timed);
      return e.some((x) => x.source === 'node') ? e : null;
    }, 25_000, 'the timed_out event');
    expectContiguous(timedEnvs);
    expect(timedEnvs.at(-2)!.event).toMatchObject({ type: 'stopped', reason: 'signal:SIGTERM' });
    expect(timedEnvs.at(-1)).toMatchObject({ source: 'node', event: { type: 'timed_out', afterSeconds: expect.any(Number), stderrTail: expect.any(String) } });
    expect((timedEnvs.at(-1)!.event as { afterSeconds: number }).afterSeconds).toBeGreaterThanOrEqual(2);

    await waitFor(() => node.workers.some((w) => w.ended.some((e) => e.jobId === movedJob)), 25_000, 'the moved job to end');
    api.stopSessions.delete(moved);
    const movedEnvs = await envelopes(moved);
    expectContiguous(movedEnvs);
    expect(movedEnvs.at(-1)!.event.type).toBe('stopped');
    expect(movedEnvs.some((e) => e.source === 'node')).toBe(false);
    expect(api.callsTo(`/sessions/${moved}/released`)).toEqual([]);
    expect(node.workers.flatMap((w) => w.ended).find((e) => e.jobId === movedJob)!.end).toMatchObject({ kind: 'stale' });
  }, 60_000);

  it('a heartbeat answered 404 makes the node register again', async () => {
    const before = api.callsTo('/register').length;
    api.nodes.clear();
    await waitFor(() => api.callsTo('/register').length > before, 5000, 're-registration');
    const after = api.callsTo('/heartbeat').length;
    await waitFor(() => api.callsTo('/heartbeat').slice(after).some((c) => c.status === 200), 5000, 'a heartbeat accepted again');
  });
});
