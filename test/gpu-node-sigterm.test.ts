// The daemon as a process (gpu-node/main.ts, what `npm run gpu-node` runs): SIGTERM mid-training
// stops the trainer at a checkpoint, uploads it, says `given_back` with that checkpoint's key,
// POSTs `released` and exits 0. The next attempt, on another node, resumes from that checkpoint.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import type BeeQueueType from 'bee-queue';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNodeConfig } from '../gpu-node/config.js';
import { startGpuNode, type GpuNode } from '../gpu-node/node.js';
import { GPU_QUEUE as QUEUE_NAME, type Envelope, type JobPayload } from '../protocol/index.js';
import { beeQueueRedisOptions } from '../gpu-node/worker.js';
import { FakeNodeApi, makeDataset, recordingLogger, tempDir, tinyConfig, waitFor, zipDataset } from './gpu-node-helpers.js';

const require = createRequire(import.meta.url);
const BeeQueue = require('bee-queue') as typeof BeeQueueType;

const REPO = path.resolve(import.meta.dirname, '..');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PREFIX = `gpu-node-sigterm-${randomUUID().slice(0, 8)}:`;
const api = new FakeNodeApi();
let redis: Redis;
let producer: BeeQueueType;
let datasetSha: string;
let root: string;
let child: ChildProcess | null = null;
let second: GpuNode | null = null;

beforeAll(async () => {
  await api.start();
  root = tempDir('sigterm');
  const zip = zipDataset(makeDataset(path.join(root, 'shapes')), path.join(root, 'shapes.zip'));
  datasetSha = createHash('sha256').update(zip).digest('hex');
  api.addFile(datasetSha, zip);
  redis = new Redis(REDIS_URL);
  producer = new BeeQueue(QUEUE_NAME, { prefix: `${PREFIX}bq`, redis: beeQueueRedisOptions(REDIS_URL) as never, isWorker: false, getEvents: false });
});

afterAll(async () => {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  await second?.stop();
  await producer?.close();
  if (redis) {
    const keys = await redis.keys(`${PREFIX}*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  await api.close();
});

function payload(sessionId: string, attempt: number, config: Record<string, unknown>, resume: string | null): JobPayload {
  return {
    v: 1,
    sessionId,
    organizationId: randomUUID(),
    attempt,
    config: config as JobPayload['config'],
    dataset: { versionId: randomUUID(), sha256: datasetSha, format: 'image_folder', sizeBytes: api.files.get(datasetSha)!.length },
    resume: resume ? { checkpointKey: resume } : null,
    requirements: { gpus: 0, gpuType: null, timeoutSeconds: null },
    enqueuedAt: new Date().toISOString(),
  };
}

async function envelopes(sessionId: string): Promise<Envelope[]> {
  const entries = await redis.xrange(`${PREFIX}events`, '-', '+');
  return entries.map(([, f]) => JSON.parse(f[1]) as Envelope).filter((e) => e.sessionId === sessionId);
}

describe.sequential('gpu-node SIGTERM', () => {
  it('gives the session back at a checkpoint and exits 0; another node resumes from it', async () => {
    const s = randomUUID();
    api.addSession(s, 1, datasetSha);
    const output: string[] = [];
    child = spawn(process.execPath, ['--import', 'tsx', 'gpu-node/main.ts'], {
      cwd: REPO,
      env: {
        ...process.env,
        REDIS_URL,
        CVTRAIN_API_URL: api.url,
        CVTRAIN_NODE_TOKEN: api.token,
        CVTRAIN_REDIS_PREFIX: PREFIX,
        CVTRAIN_NODE_DATA_DIR: path.join(root, 'node-a'),
        CVTRAIN_NODE_ID: 'node-a',
        CVTRAIN_PYTHON: '/usr/bin/python3',
        CVTRAIN_NODE_SLOTS: '1',
        // No GPUs here whatever the machine has: the test is about the shutdown path.
        PATH: `/nonexistent-nvidia:${process.env.PATH}`,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (b: Buffer) => output.push(b.toString()));
    child.stderr!.on('data', (b: Buffer) => output.push(b.toString()));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));

    await producer.createJob(payload(s, 1, tinyConfig({ epochs: 500 }), null) as never).save();
    // Wait until a checkpoint is in storage, then stop the node.
    await waitFor(async () => (await envelopes(s)).some((e) => e.event.type === 'checkpoint' && e.upload), 30_000, 'a first uploaded checkpoint');
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('no exit within 25 s'), 25_000))]);
    expect(code, output.join('')).toBe(0);

    const envs = await envelopes(s);
    expect(envs.map((e) => e.seq)).toEqual(envs.map((_, i) => i + 1));
    const stopped = envs.find((e) => e.event.type === 'stopped')!;
    expect(stopped.event).toMatchObject({ reason: 'signal:SIGTERM', resumable: true });
    const givenBack = envs.at(-1)!;
    expect(givenBack).toMatchObject({ source: 'node', event: { type: 'given_back', reason: 'node_shutdown', checkpointKey: expect.any(String) } });
    // The key handed back is the checkpoint at the stop position, and its bytes are in storage.
    const { epoch, step } = stopped.event as { epoch: number; step: number };
    const atStop = envs.filter((e) => e.event.type === 'checkpoint' && (e.event as any).epoch === epoch && (e.event as any).step === step && (e.event as any).kind !== 'best');
    const key = (givenBack.event as { checkpointKey: string }).checkpointKey;
    expect(atStop.map((e) => e.upload!.key)).toContain(key);
    expect(api.stored.get(key)?.sha256).toBe(atStop.find((e) => e.upload!.key === key)!.upload!.sha256);
    expect(api.callsTo(`/sessions/${s}/released`)).toEqual([{ path: `/node/v1/sessions/${s}/released`, body: { nodeId: 'node-a', attempt: 1 }, status: 200 }]);
    const text = output.join('');
    expect(text).toMatch(/SIGTERM received/);
    expect(text).toMatch(/job ended: given back/);
    expect(api.callsTo('/heartbeat').some((c) => c.body.nodeId === 'node-a' && c.body.status === 'DRAINING')).toBe(true);

    // The API re-queues with a new attempt and the checkpoint; another node resumes from it.
    const session = api.sessions.get(s)!;
    Object.assign(session, { attempt: 2, status: 'QUEUED', claimedBy: null, resume: { key } });
    second = await startGpuNode(
      loadNodeConfig({
        REDIS_URL,
        CVTRAIN_API_URL: api.url,
        CVTRAIN_NODE_TOKEN: api.token,
        CVTRAIN_REDIS_PREFIX: PREFIX,
        CVTRAIN_NODE_DATA_DIR: path.join(root, 'node-b'),
        CVTRAIN_NODE_ID: 'node-b',
        CVTRAIN_PYTHON: '/usr/bin/python3',
      }),
      { logger: recordingLogger(), gpus: [] },
    );
    await producer.createJob(payload(s, 2, tinyConfig({ epochs: epoch + 1 }), key) as never).save();
    const resumed = await waitFor(async () => {
      const all = (await envelopes(s)).filter((e) => e.attempt === 2);
      return all.some((e) => e.event.type === 'completed') ? all : null;
    }, 30_000, 'the resumed run to complete');
    expect(resumed.map((e) => e.seq)).toEqual(resumed.map((_, i) => i + 1));
    expect(resumed[0]).toMatchObject({ nodeId: 'node-b', event: { type: 'started', start_epoch: epoch, start_step: step, resumed_from: expect.stringMatching(/checkpoint\.pt$/) } });
    expect(resumed.filter((e) => e.event.type === 'epoch').map((e) => (e.event as { epoch: number }).epoch)).toEqual([epoch + 1]);
    expect(api.downloads.get(`stored:${key}`)).toBe(1);
  }, 90_000);

  it('stopped while still downloading the dataset: given back with the checkpoint it was to resume from, then released', async () => {
    const prefix = `${PREFIX}solo-`;
    const solo = await startGpuNode(
      loadNodeConfig({
        REDIS_URL,
        CVTRAIN_API_URL: api.url,
        CVTRAIN_NODE_TOKEN: api.token,
        CVTRAIN_REDIS_PREFIX: prefix,
        CVTRAIN_NODE_DATA_DIR: path.join(root, 'solo'),
        CVTRAIN_NODE_ID: 'node-solo',
        CVTRAIN_PYTHON: '/usr/bin/python3',
      }),
      { logger: recordingLogger(), gpus: [] },
    );
    const soloProducer = new BeeQueue(QUEUE_NAME, { prefix: `${prefix}bq`, redis: beeQueueRedisOptions(REDIS_URL) as never, isWorker: false, getEvents: false });
    try {
      // Other bytes than the shared dataset (so no cache hit); never fully served anyway.
      const slowSha = api.addFile('pending', Buffer.concat([api.files.get(datasetSha)!, Buffer.from('x')]));
      api.files.set(slowSha, api.files.get('pending')!);
      api.slowFiles.set(slowSha, 10_000);
      const s = randomUUID();
      api.addSession(s, 1, slowSha);
      const p = payload(s, 1, tinyConfig(), null);
      p.dataset.sha256 = slowSha;
      p.resume = { checkpointKey: 'orgs/o/sessions/prev/last.pt' };
      await soloProducer.createJob(p as never).save();
      await waitFor(() => api.downloads.get(slowSha) === 1, 10_000, 'the download to start');
      const t0 = Date.now();
      await solo.stop();
      expect(Date.now() - t0).toBeLessThan(8000);
      const envs = (await redis.xrange(`${prefix}events`, '-', '+')).map(([, f]) => JSON.parse(f[1]) as Envelope);
      expect(envs).toEqual([
        {
          v: 1,
          nodeId: 'node-solo',
          sessionId: s,
          attempt: 1,
          seq: 1,
          source: 'node',
          event: { type: 'given_back', ts: expect.any(String), reason: 'node_shutdown', checkpointKey: 'orgs/o/sessions/prev/last.pt' },
        },
      ]);
      expect(api.callsTo(`/sessions/${s}/released`)).toEqual([{ path: `/node/v1/sessions/${s}/released`, body: { nodeId: 'node-solo', attempt: 1 }, status: 200 }]);
    } finally {
      await solo.stop();
      await soloProducer.close();
    }
  }, 40_000);
});
