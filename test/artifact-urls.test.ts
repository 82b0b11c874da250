// Artifact download links: `TrainingSession.artifacts { url }` is a fresh presigned GET that
// downloads the file for members of the session's organization, expires after
// CVTRAIN_PRESIGN_TTL_S, and is out of reach of every other organization.
//
// Artifacts come from training. Without running a trainer, this file does what a gpu-node does for
// one: it claims the session and asks for an upload link through the node HTTP API, PUTs the file
// there, and writes the trainer's `artifact` event to the Redis events stream, from which the
// API's own event ingester (workers: true) records the artifact row (src/modules/training/repository.ts upsertArtifact).
import { createHash, randomBytes } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { check } from '../protocol/index.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

// The shortest lifetime the configuration accepts (it refuses under 60 s); expiry is reached by
// moving this process's clock, which the server in it reads, past it.
const TTL_S = 60;

let api: TestApi;
let a: SignedUp;
let b: SignedUp;
let viewerKey: string;
let session: string;
const file = randomBytes(64 * 1024 + 17);
const fileSha = createHash('sha256').update(file).digest('hex');

const RB = `__typename ... on Error { message }`;
const ARTIFACTS = `query($id: ID!) { trainingSession(id: $id) { id artifacts { id kind name url sizeBytes sha256 createdAt } } }`;

async function node(path: string, body: unknown) {
  const res = await fetch(`${new URL(api.url).origin}/node/v1/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${api.app.config.nodeToken}` },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (res.status !== 200) throw new Error(`node API ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json as any;
}

async function artifactsAs(token: string | null) {
  const res = await api.gql(ARTIFACTS, { id: session }, token);
  expect(res.errors).toBeUndefined();
  return res.data.trainingSession;
}

beforeAll(async () => {
  api = await startTestApi({ workers: true, env: { CVTRAIN_PRESIGN_TTL_S: String(TTL_S) } });
  a = await signUp(api, 'Artifacts A');
  b = await signUp(api, 'Artifacts B');
  viewerKey = ok(
    await api.gql(`mutation { createApiKey(input: { name: "reader", role: VIEWER }) { ${RB} ... on CreateApiKeySuccess { createdApiKey { secret } } } }`, {}, a.token),
    'createApiKey',
    'createdApiKey',
  ).secret;
  const dataset = ok(
    await api.gql(`mutation { createDataset(input: { name: "d", task: OBJECT_DETECTION }) { ${RB} ... on CreateDatasetSuccess { dataset { id } } } }`, {}, a.token),
    'createDataset',
    'dataset',
  ).id;
  const version = await seedReadyDatasetVersion(api, dataset, 'YOLO', a.token);
  const model = ok(
    await api.gql(`mutation { createModel(input: { name: "m", task: OBJECT_DETECTION, framework: TORCHVISION, architecture: "ssdlite320_mobilenet_v3_large" }) { ${RB} ... on CreateModelSuccess { model { id } } } }`, {}, a.token),
    'createModel',
    'model',
  ).id;
  session = ok(
    await api.gql(
      `mutation($m: ID!, $dv: ID!) { trainModel(modelId: $m, input: { datasetVersionId: $dv, config: { epochs: 1 } }) { ${RB} ... on TrainModelSuccess { trainingSession { id attempt } } } }`,
      { m: model, dv: version },
      a.token,
    ),
    'trainModel',
    'trainingSession',
  ).id;

  // What a gpu-node does for one artifact (gpu-node/PROTOCOL.md): register, claim, upload, report.
  const sessionId = decodeGlobalID(session).id;
  const nodeId = `artifact-node-${randomBytes(3).toString('hex')}`;
  await node('register', { nodeId, host: 'gpu-host', version: 'test', slots: 1, gpus: [] });
  await node(`sessions/${sessionId}/claim`, { nodeId, attempt: 1, jobId: `job-${sessionId}` });
  const upload = await node(`sessions/${sessionId}/uploads`, { nodeId, attempt: 1, kind: 'artifact', name: 'export/model.onnx', sizeBytes: file.length, sha256: fileSha });
  const put = await fetch(upload.url, { method: 'PUT', headers: upload.headers, body: new Uint8Array(file) });
  expect(put.status).toBe(200);
  const redis = new Redis(api.app.config.redisUrl);
  try {
    const envelope = {
      v: 1,
      nodeId,
      sessionId,
      attempt: 1,
      seq: 1,
      source: 'trainer',
      event: { v: 1, type: 'artifact', ts: new Date().toISOString(), session: sessionId, kind: 'onnx', path: '/work/out/export/model.onnx', size_bytes: file.length, sha256: fileSha, verified: true, runtime: 'onnxruntime 1.20.1', max_abs_diff: 0.00001 },
      upload: { key: upload.key, sha256: fileSha, sizeBytes: file.length },
    };
    // Checked here too, so a change of the event schema fails with its reason rather than a timeout.
    expect(check('envelope', envelope)).toEqual({ ok: true });
    await redis.xadd(api.app.redisNames.eventsStream, '*', 'data', JSON.stringify(envelope));
  } finally {
    redis.disconnect();
  }
  // The ingester records it.
  const deadline = Date.now() + 10_000;
  while ((await artifactsAs(a.token)).artifacts.length === 0) {
    if (Date.now() > deadline) throw new Error('the ingester did not record the artifact within 10 s');
    await new Promise((r) => setTimeout(r, 100));
  }
}, 60_000);
afterAll(() => api?.close());
afterEach(() => {
  vi.useRealTimers();
});

describe('artifact url', () => {
  it('downloads the file for members of the organization, as an attachment', async () => {
    for (const token of [a.token, viewerKey]) {
      const { artifacts } = await artifactsAs(token);
      expect(artifacts).toEqual([
        expect.objectContaining({ kind: 'ONNX', name: 'export/model.onnx', sizeBytes: file.length, sha256: fileSha }),
      ]);
      const res = await fetch(artifacts[0].url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toMatch(/^attachment; filename="model\.onnx"/);
      const body = Buffer.from(await res.arrayBuffer());
      expect(body.length).toBe(file.length);
      expect(createHash('sha256').update(body).digest('hex')).toBe(fileSha);
    }
  });

  it(`expires after CVTRAIN_PRESIGN_TTL_S (${TTL_S} s); a new request gives a new link that works`, async () => {
    const { artifacts } = await artifactsAs(a.token);
    const url = new URL(artifacts[0].url);
    const expires = Number(url.searchParams.get('expires'));
    const now = Math.floor(Date.now() / 1000);
    expect(expires - now).toBeGreaterThanOrEqual(TTL_S - 2);
    expect(expires - now).toBeLessThanOrEqual(TTL_S);
    expect((await fetch(url)).status).toBe(200);

    // Only Date is faked: timers, sockets and the database keep running normally.
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime((expires + 1) * 1000);
    const expired = await fetch(url);
    expect(expired.status).toBe(403);
    expect(await expired.text()).toMatch(/expired/);
    // Nor can the expiry simply be moved: it is signed.
    const extended = new URL(url);
    extended.searchParams.set('expires', String(expires + 3600));
    expect((await fetch(extended)).status).toBe(403);

    const fresh = (await artifactsAs(a.token)).artifacts[0].url as string;
    expect(fresh).not.toBe(artifacts[0].url);
    expect(Number(new URL(fresh).searchParams.get('expires'))).toBe(expires + 1 + TTL_S);
    const res = await fetch(fresh);
    expect(res.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')).toBe(fileSha);
  });

  it('is out of reach of another organization: its lookups of the session return null', async () => {
    const { artifacts } = await artifactsAs(a.token);
    const artifactPath = new URL(artifacts[0].url).pathname;
    const asB = await api.gql(
      `query($id: ID!) {
        trainingSession(id: $id) { artifacts { url } }
        node(id: $id) { ... on TrainingSession { artifacts { url } } }
        trainingSessions(first: 100) { edges { node { artifacts { url } } } }
      }`,
      { id: session },
      b.token,
    );
    expect(asB.errors).toBeUndefined();
    expect(asB.data.trainingSession).toBeNull();
    expect(asB.data.node).toBeNull();
    expect(asB.data.trainingSessions.edges).toEqual([]);
    expect(JSON.stringify(asB.data)).not.toContain(artifactPath);
    // Without credentials there is no session either.
    const anonymous = await api.gql(ARTIFACTS, { id: session }, null);
    expect(anonymous.data?.trainingSession ?? null).toBeNull();
    // A link handed out to A does not open another key of A's organization prefix, let alone B's.
    const url = new URL(artifacts[0].url);
    for (const pathname of [
      artifactPath.replace('model.onnx', 'other.onnx'),
      artifactPath.replace(`/orgs/${decodeGlobalID(a.orgId).id}/`, `/orgs/${decodeGlobalID(b.orgId).id}/`),
    ]) {
      expect((await fetch(`${url.origin}${pathname}${url.search}`)).status).toBe(403);
    }
  });
});
