// Session cursors carry created_at in milliseconds (a JS Date); the column is read back the same
// way. Rows written with PostgreSQL's now() kept microseconds, so a cursor stood just before its
// own row: `before: X` returned X, and paging skipped rows created within the boundary row's
// millisecond but after its truncated time.
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

let api: TestApi;
let user: SignedUp;
const sessions: string[] = [];

const PAGE = `query($first: Int, $after: String, $last: Int, $before: String) {
  trainingSessions(first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }`;

beforeAll(async () => {
  api = await startTestApi({ env: { CVTRAIN_RESPONSE_CACHE_ENTRIES: '0' } });
  user = await signUp(api, 'Cursors');
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
  const model = ok(
    await api.gql(
      `mutation($i: CreateModelInput!) { createModel(input: $i) { __typename ... on CreateModelSuccess { model { id } } } }`,
      { i: { name: 'm', task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' } },
      user.token,
    ),
    'createModel',
    'model',
  );
  const dataset = ok(
    await api.gql(
      `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { __typename ... on CreateDatasetSuccess { dataset { id } } } }`,
      { i: { name: 'd', task: 'OBJECT_DETECTION' } },
      user.token,
    ),
    'createDataset',
    'dataset',
  );
  const version = await seedReadyDatasetVersion(api, dataset.id, 'YOLO', user.token);
  for (let i = 0; i < 4; i++) {
    const session = ok(
      await api.gql(
        `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) {
          __typename ... on TrainModelSuccess { trainingSession { id } } } }`,
        { m: model.id, i: { datasetVersionId: version, computeProfileId: profile.id, config: { epochs: 1 } } },
        user.token,
      ),
      'trainModel',
      'trainingSession',
    );
    sessions.push(session.id);
  }
}, 60_000);

afterAll(async () => {
  await api?.close();
});

async function walk(): Promise<string[]> {
  const seen: string[] = [];
  let after: string | null = null;
  for (let page = 0; page < 10; page++) {
    const res: { data: any } = await api.gql(PAGE, { first: 1, after }, user.token);
    const conn: { edges: { node: { id: string } }[]; pageInfo: { hasNextPage: boolean; endCursor: string } } = res.data.trainingSessions;
    seen.push(...conn.edges.map((e: { node: { id: string } }) => e.node.id));
    if (!conn.pageInfo.hasNextPage) break;
    after = conn.pageInfo.endCursor;
  }
  return seen;
}

describe('session cursors', () => {
  it('a new session is stored at the millisecond its cursor names', async () => {
    const rows = await api.app.sql.query<{ n: string }>(
      `select count(*) as n from training_sessions where created_at <> date_trunc('milliseconds', created_at)`,
    );
    expect(Number(rows[0].n)).toBe(0);
  });

  it('before: a cursor does not return its own row, and pages of one visit every session once', async () => {
    const all = await api.gql(PAGE, { first: 10 }, user.token);
    const edges = all.data.trainingSessions.edges as { cursor: string; node: { id: string } }[];
    expect(edges.map((e) => e.node.id).sort()).toEqual([...sessions].sort());
    const second = edges[1];
    const before = await api.gql(PAGE, { last: 10, before: second.cursor }, user.token);
    expect(before.data.trainingSessions.edges.map((e: { node: { id: string } }) => e.node.id)).toEqual([edges[0].node.id]);
    expect((await walk()).sort()).toEqual([...sessions].sort());
  });

  it('sessions created within one millisecond are paged by id, none skipped', async () => {
    // As when a burst of trainModel calls lands in the same millisecond.
    await api.app.sql.query(`update training_sessions set created_at = date_trunc('milliseconds', now()) where id = any(?)`, [
      sessions.map((id) => decodeGlobalID(id).id),
    ]);
    const seen = await walk();
    expect(seen).toHaveLength(sessions.length);
    expect([...seen].sort()).toEqual([...sessions].sort());
  });
});
