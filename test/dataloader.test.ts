// Listing sessions with their model, dataset version and latest epoch must cost the same number
// of SQL statements for 5 sessions as for 50: DataLoaders batch the relations per request.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

let api: TestApi;
let user: SignedUp;
let counting = false;
const expectedEpochs = new Map<string, number>();
const statements: string[] = [];

const LIST = `query($first: Int!) { trainingSessions(first: $first) {
  edges { node { id status config
    model { id name architecture }
    datasetVersion { id version format dataset { id name } }
    computeProfile { id name }
    latestEpoch { epoch metrics }
  } } } }`;

beforeAll(async () => {
  api = await startTestApi({ onQuery: (sql) => counting && statements.push(sql) });
  user = await signUp(api, 'Loaders');
  const profile = ok(
    await api.gql(
      `mutation { createComputeProfile(input: {name: "gpus", provider: PLATFORM, strategy: QUEUE}) {
        __typename ... on CreateComputeProfileSuccess { computeProfile { id } } } }`,
      {},
      user.token,
    ),
    'createComputeProfile',
    'computeProfile',
  );
  // 50 sessions over 10 models and 10 dataset versions, so relations repeat and differ.
  const models: string[] = [];
  const versions: string[] = [];
  for (let i = 0; i < 10; i++) {
    const model = ok(
      await api.gql(
        `mutation($i: CreateModelInput!) { createModel(input: $i) { __typename ... on CreateModelSuccess { model { id } } } }`,
        { i: { name: `m${i}`, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' } },
        user.token,
      ),
      'createModel',
      'model',
    );
    const dataset = ok(
      await api.gql(
        `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { __typename ... on CreateDatasetSuccess { dataset { id } } } }`,
        { i: { name: `d${i}`, task: 'OBJECT_DETECTION' } },
        user.token,
      ),
      'createDataset',
      'dataset',
    );
    models.push(model.id);
    // Through the public API: createDatasetVersion, PUT of a real archive, finalizeDatasetVersion.
    versions.push(await seedReadyDatasetVersion(api, dataset.id, 'YOLO', user.token));
  }
  const conn = api.orm.em.getConnection();
  for (let i = 0; i < 50; i++) {
    const session = ok(
      await api.gql(
        `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) {
          __typename ... on TrainModelSuccess { trainingSession { id } } } }`,
        { m: models[i % 10], i: { datasetVersionId: versions[(i * 3) % 10], computeProfileId: profile.id, config: { epochs: 5 } } },
        user.token,
      ),
      'trainModel',
      'trainingSession',
    );
    // Epoch rows have no public writer: the event ingester stores them from a trainer's events on a
    // gpu-node. Without running a trainer they are inserted here as the ingester does.
    const sessionId = decodeGlobalID(session.id).id;
    expectedEpochs.set(session.id, i % 4);
    for (let epoch = 1; epoch <= (i % 4); epoch++) {
      await conn.execute(
        `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
         values (?, now(), now(), ?, ?, ?, ?)`,
        [randomUUID(), decodeGlobalID(user.orgId).id, sessionId, epoch, JSON.stringify({ loss: 1 / epoch, mAP: epoch / 10 })],
      );
    }
  }
}, 120_000);
afterAll(() => api?.close());

async function countStatements(first: number) {
  statements.length = 0;
  counting = true;
  const res = await api.gql(LIST, { first }, user.token);
  counting = false;
  expect(res.errors).toBeUndefined();
  return { count: statements.length, edges: res.data.trainingSessions.edges };
}

describe('DataLoaders', () => {
  it('issues the same small number of statements for 5 and for 50 sessions', async () => {
    const five = await countStatements(5);
    const fifty = await countStatements(50);
    expect(five.edges).toHaveLength(5);
    expect(fifty.edges).toHaveLength(50);
    // principal + sessions + models + dataset versions + datasets + compute profiles + latest epochs
    console.info(`SQL statements: ${five.count} for 5 sessions, ${fifty.count} for 50`);
    expect(fifty.count).toBe(five.count);
    expect(fifty.count).toBeLessThanOrEqual(7);
  });

  it('returns the right relations and the latest epoch of each session', async () => {
    const { edges } = await countStatements(50);
    expect(new Set(edges.map((e: { node: { id: string } }) => e.node.id))).toEqual(new Set(expectedEpochs.keys()));
    for (const { node } of edges) {
      expect(node.model.architecture).toBe('ssdlite320_mobilenet_v3_large');
      expect(node.datasetVersion.dataset.name).toMatch(/^d\d$/);
      expect(node.computeProfile.name).toBe('gpus');
      const epochs = expectedEpochs.get(node.id)!;
      expect(node.latestEpoch?.epoch ?? 0).toBe(epochs);
      if (epochs) expect(node.latestEpoch.metrics).toEqual({ loss: 1 / epochs, mAP: epochs / 10 });
    }
  });
});
