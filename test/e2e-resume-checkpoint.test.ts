// End to end (issue 5, recovery): a node that dies after uploading a newer checkpoint but before
// its event reached the stream. The API still points at the older checkpoint (key and sha256 from
// the last event it ingested); the session must resume from exactly those bytes on another node.
//
// Found by the frozen-node test: with one storage key per (attempt, file name), the newer upload
// replaced the bytes under the recorded key, so the next attempt's resume download failed its
// sha256 check and the session ended FAILED instead of resuming. The dead node is played here
// through its own protocol (node HTTP API with the join token, events appended to the Redis
// Stream) so the moment of death is exact; the node that resumes is a real gpu-node.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import {
  apiBaseUrl,
  getSession,
  PYTHON,
  query,
  sessionUuid,
  streamEvents,
  tinyTraining,
  trainModel,
  TRAINERS,
  waitFor,
  waitForStatus,
} from './helpers/e2e.js';
import { useE2eFixture } from './helpers/e2e-fixture.js';

// The node that resumes the session (started in the test, once the dead one is found silent).
const e2e = useE2eFixture({ name: 'resume', env: { CVTRAIN_NODE_OFFLINE_MS: '2000' }, node: { id: 'e2e-rescuer', dir: 'rescuer' } });

async function nodeApi(route: string, body: unknown): Promise<any> {
  const res = await fetch(`${apiBaseUrl(e2e.api)}/node/v1/${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${e2e.api.app.config.nodeToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`node API ${route}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function uploadCheckpoint(sessionId: string, nodeId: string, bytes: Buffer): Promise<{ key: string; sha256: string; sizeBytes: number }> {
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const grant = await nodeApi(`sessions/${sessionId}/uploads`, {
    nodeId,
    attempt: 1,
    kind: 'checkpoint',
    name: 'checkpoints/last.pt',
    sizeBytes: bytes.length,
    sha256,
  });
  const put = await fetch(new URL(grant.url, apiBaseUrl(e2e.api)), { method: 'PUT', headers: { ...grant.headers, 'content-length': String(bytes.length) }, body: new Uint8Array(bytes) });
  if (!put.ok) throw new Error(`PUT ${put.status} ${await put.text()}`);
  return { key: grant.key, sha256, sizeBytes: bytes.length };
}

describe('e2e: resume after a node died between uploading a checkpoint and reporting it', () => {
  it('resumes from the checkpoint the API recorded, not from bytes that arrived after it', async () => {
    const session = await trainModel(e2e.api, e2e.org, tinyTraining({ epochs: 2 }));
    const id = sessionUuid(session.id);
    const { config } = (await query(e2e.api, e2e.org.token, 'query($id: ID!) { trainingSession(id: $id) { config } }', { id: session.id })).trainingSession;

    // One epoch of the same run, trained here: a real epoch event and a real resumable checkpoint.
    const work = path.join(e2e.root, 'local-run');
    const runJson = path.join(e2e.root, 'run.json');
    writeFileSync(
      runJson,
      // As the API hands it to nodes: unset (null) settings left out.
      JSON.stringify({ ...Object.fromEntries(Object.entries(config).filter(([, v]) => v !== null)), epochs: 1, dataset: { path: path.join(e2e.root, 'dataset'), format: 'image_folder' }, output_dir: work, session_id: id, device: 'cpu' }),
    );
    // Not execFileSync: this process also runs the API, and blocking its event loop for the whole
    // epoch let the server's keep-alive timer close a pooled socket just as the next request
    // reused it (ECONNRESET on the first node API call, seen on a loaded host).
    await promisify(execFile)(PYTHON, ['-m', 'cvtrain', 'train', '--config', runJson, '--events', path.join(e2e.root, 'events.jsonl')], {
      env: { ...process.env, PYTHONPATH: TRAINERS },
    });
    const events = readFileSync(path.join(e2e.root, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const epochEvent = events.find((e) => e.type === 'epoch' && e.epoch === 1);
    const checkpointEvent = events.find((e) => e.type === 'checkpoint' && e.kind === 'last' && e.epoch === 1);
    const v1 = readFileSync(checkpointEvent.path);
    expect(createHash('sha256').update(v1).digest('hex')).toBe(checkpointEvent.sha256);

    // The doomed node: registers, claims attempt 1, reports epoch 1 and its checkpoint...
    const nodeId = 'e2e-doomed';
    await nodeApi('register', { nodeId, host: 'doomed', version: '0', slots: 1, gpus: [] });
    await nodeApi(`sessions/${id}/claim`, { nodeId, attempt: 1, jobId: `${id}:1` });
    const upload1 = await uploadCheckpoint(id, nodeId, v1);
    const redis = new Redis(e2e.api.app.config.redisUrl);
    e2e.cleanup.add('redis client', () => redis.disconnect());
    const envelope = (seq: number, event: unknown, upload?: unknown) =>
      JSON.stringify({ v: 1, nodeId, sessionId: id, attempt: 1, seq, source: 'trainer', event, ...(upload ? { upload } : {}) });
    await redis.xadd(`${e2e.api.app.config.redisPrefix}events`, '*', 'data', envelope(1, epochEvent));
    await redis.xadd(`${e2e.api.app.config.redisPrefix}events`, '*', 'data', envelope(2, checkpointEvent, upload1));
    await waitFor(async () => (await getSession(e2e.api, e2e.org.token, session.id)).epochs.edges.length === 1, 15_000, 'epoch 1 stored');

    // ...uploads the next checkpoint (here: other bytes under the same file name) and dies before
    // the event that would report it reaches the stream. It never heartbeats again.
    await uploadCheckpoint(id, nodeId, randomBytes(4096));

    // A real node takes over once the dead one is found silent.
    await e2e.ensureNode();
    const done = await waitForStatus(e2e.api, e2e.org.token, session.id, ['COMPLETED'], 90_000);
    expect(done.attempt).toBe(2);
    expect(done.epochs.edges.map((e) => e.node.epoch)).toEqual([1, 2]);
    expect(done.epochs.edges[0].node.metrics.train_loss).toBe(epochEvent.train_loss);
    const stream = await streamEvents(e2e.api.app.config.redisUrl, e2e.api.app.config.redisPrefix, id);
    const started = stream.find((e) => e.attempt === 2 && e.event.type === 'started')!;
    expect(started).toMatchObject({ nodeId: 'e2e-rescuer', event: { start_epoch: 1, resumed_from: expect.any(String) } });
  }, 120_000);
});
