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
  // The response cache off: these tests count what executing the page costs, not a cache hit.
  api = await startTestApi({
    onQuery: (sql) => counting && statements.push(sql),
    env: { CVTRAIN_RESPONSE_CACHE_ENTRIES: '0' },
  });
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
    // principal + the page (sessions with their models, dataset versions and latest epochs in one
    // statement) + datasets + compute profiles
    console.info(`SQL statements: ${five.count} for 5 sessions, ${fifty.count} for 50`);
    expect(fifty.count).toBe(five.count);
    expect(fifty.count).toBeLessThanOrEqual(4);
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

// The list reads only the columns its selection needs and primes the loaders from one JSON
// statement (src/modules/training/selection.ts, service.ts); trainingSession(id:) reads whole rows
// and loads each relation through its DataLoader. Both must answer the same for every field.
describe('session list look-ahead', () => {
  type TypeRef = { kind: string; name: string | null; ofType: TypeRef | null };
  type Field = { name: string; args: { type: TypeRef }[]; type: TypeRef };
  let types: Map<string, Field[]>;

  const unwrap = (t: TypeRef): TypeRef => (t.ofType ? unwrap(t.ofType) : t);
  // Each field without required arguments, with its objects' fields `depth` levels deep.
  function fieldSelections(typeName: string, depth: number): Map<string, string> {
    const out = new Map<string, string>();
    for (const f of types.get(typeName)!) {
      if (f.args.some((a) => a.type.kind === 'NON_NULL')) continue;
      const base = unwrap(f.type);
      if (base.kind === 'SCALAR' || base.kind === 'ENUM') out.set(f.name, f.name);
      else if (base.kind === 'OBJECT' && depth > 0) out.set(f.name, `${f.name} { ${selectionOf(base.name!, depth - 1)} }`);
    }
    return out;
  }
  const selectionOf = (typeName: string, depth: number) =>
    [...fieldSelections(typeName, depth).values()].join(' ') || '__typename';

  beforeAll(async () => {
    const res = await api.gql(
      `{ __schema { types { name fields { name args { type { kind } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }`,
      {},
      user.token,
    );
    types = new Map(res.data.__schema.types.filter((t: { fields: unknown }) => t.fields).map((t: { name: string; fields: Field[] }) => [t.name, t.fields]));
    // Fill the columns a fresh QUEUED session leaves empty, so each field has something to compare.
    const conn = api.orm.em.getConnection();
    const rows: { id: string }[] = await conn.execute(`select id from training_sessions order by created_at desc, id desc limit 6`);
    const ids = rows.map((r) => r.id);
    await conn.execute(
      `update training_sessions set provider = 'PLATFORM', external_job_id = 'job-1', started_at = now() - interval '5 minutes',
         current_epoch = 2, progress_fraction = 0.45, estimated_cost_usd = 1.25, attempt = 2 where id = ?`,
      [ids[0]],
    );
    await conn.execute(
      `update training_sessions set status = 'FAILED', error_message = 'boom', error_exit_code = 3, error_stderr_tail = 'tail',
         finished_at = now(), cost_usd = 0.5 where id = ?`,
      [ids[1]],
    );
    await conn.execute(`update training_sessions set cancel_requested_at = now() where id = ?`, [ids[2]]);
  });

  it('answers every TrainingSession field as trainingSession(id:) does', async () => {
    const fields = fieldSelections('TrainingSession', 2);
    expect(fields.size).toBe(types.get('TrainingSession')!.length);
    const full = selectionOf('TrainingSession', 2);
    const list = await api.gql(`{ trainingSessions(first: 50) { edges { node { id } } } }`, {}, user.token);
    const sample = list.data.trainingSessions.edges.slice(0, 8).map((e: { node: { id: string } }) => e.node.id);
    const reference = new Map<string, Record<string, unknown>>();
    for (const id of sample) {
      const res = await api.gql(`query($id: ID!) { trainingSession(id: $id) { ${full} } }`, { id }, user.token);
      expect(res.errors).toBeUndefined();
      reference.set(id, res.data.trainingSession);
    }
    // One field at a time, so each field's columns are read alone.
    for (const [name, part] of fields) {
      const res = await api.gql(`{ trainingSessions(first: 50) { edges { node { id ${part} } } } }`, {}, user.token);
      expect(res.errors, name).toBeUndefined();
      let compared = 0;
      for (const { node } of res.data.trainingSessions.edges) {
        const ref = reference.get(node.id);
        if (!ref) continue;
        expect(node[name], `${name} of ${node.id}`).toEqual(ref[name]);
        compared++;
      }
      expect(compared, name).toBe(sample.length);
    }
    // And all of them at once.
    const all = await api.gql(`{ trainingSessions(first: 50) { edges { node { ${full} } } } }`, {}, user.token);
    expect(all.errors).toBeUndefined();
    for (const { node } of all.data.trainingSessions.edges) {
      const ref = reference.get(node.id);
      if (ref) expect(node).toEqual(ref);
    }
  });

  it('follows fragments and never lends a partial row to node lookups in the same request', async () => {
    const plain = await api.gql(
      `{ trainingSessions(first: 5) { edges { node { id status config model { name } latestEpoch { epoch } } } } }`,
      {},
      user.token,
    );
    const viaFragments = await api.gql(
      `fragment M on Model { name }
       fragment S on TrainingSession { status ... on TrainingSession { config } model { ...M } }
       { trainingSessions(first: 5) { ... on QueryTrainingSessionsConnection { edges { node { id ...S ... { latestEpoch { epoch } } } } } } }`,
      {},
      user.token,
    );
    expect(viaFragments.errors).toBeUndefined();
    expect(viaFragments.data).toEqual(plain.data);

    const first = plain.data.trainingSessions.edges[0].node;
    const mixed = await api.gql(
      `query($id: ID!) { trainingSessions(first: 5) { edges { node { id } } }
         trainingSession(id: $id) { id status config createdAt model { name } } }`,
      { id: first.id },
      user.token,
    );
    expect(mixed.errors).toBeUndefined();
    expect(mixed.data.trainingSession).toMatchObject({ id: first.id, status: first.status, config: first.config });
    expect(mixed.data.trainingSession.createdAt).toEqual(expect.any(String));
  });
});
