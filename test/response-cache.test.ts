// The cross-request response cache (src/graphql/response-cache.ts) must answer exactly what a
// fresh execution would: every write to an organization's rows, by any path, invalidates it.
// Each check compares the caching server with a reference server on the same database and app
// whose cache is off, byte for byte.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { getNamedType, isObjectType, parse } from 'graphql';
import { createClient } from 'graphql-ws';
import pg from 'pg';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadPersistedOperations } from '../src/graphql/persisted.js';
import { isCacheableDocument, OBJECT_TYPE_CACHING } from '../src/graphql/response-cache.js';
import { schema } from '../src/graphql/schema.js';
import { startServer, type RunningServer } from '../src/server.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

let api: TestApi;
let reference: RunningServer;
let owner: SignedUp;
let other: SignedUp;
let counting = false;
const statements: string[] = [];
let writer: pg.Client;
let orgId: string;
let modelId: string;
const sessionIds: string[] = [];

const PAGE = `query($first: Int!) { trainingSessions(first: $first) {
  totalCount
  edges { cursor node { id status config createdAt
    model { id name description architecture }
    datasetVersion { id version format dataset { id name } }
    computeProfile { id name }
    progress { epoch fraction totalEpochs }
    latestEpoch { epoch metrics }
  } } pageInfo { hasNextPage endCursor } } }`;

async function post(url: string, query: string, variables: Record<string, unknown>, token: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  return { status: res.status, text: await res.text() };
}

/** The caching server's answer and how many SQL statements it took. */
async function cached(query: string, variables: Record<string, unknown> = {}, token = owner.token) {
  statements.length = 0;
  counting = true;
  const res = await post(api.url, query, variables, token);
  counting = false;
  return { ...res, statements: statements.length };
}

async function fresh(query: string, variables: Record<string, unknown> = {}, token = owner.token) {
  return post(reference.url, query, variables, token);
}

/** Asserts the cache answers what a fresh execution answers now; returns whether it was a hit. */
async function expectSameAsFresh(query: string, variables: Record<string, unknown> = {}, token = owner.token) {
  const got = await cached(query, variables, token);
  const want = await fresh(query, variables, token);
  expect(got.status).toBe(200);
  expect(got.text).toBe(want.text);
  expect(JSON.parse(got.text).errors).toBeUndefined();
  // A hit reads only the caller's credentials (and the data version with them).
  return got.statements === 1;
}

beforeAll(async () => {
  api = await startTestApi({ onQuery: (sql) => counting && statements.push(sql) });
  reference = await startServer(
    { ...api.app, config: { ...api.app.config, responseCache: { maxEntries: 0, maxBytes: 1 } } },
    { port: 0, host: '127.0.0.1' },
  );
  owner = await signUp(api, 'Cached');
  other = await signUp(api, 'Elsewhere');
  orgId = decodeGlobalID(owner.orgId).id;
  writer = new pg.Client({ connectionString: api.dbUrl });
  await writer.connect();
  const model = ok(
    await api.gql(
      `mutation($i: CreateModelInput!) { createModel(input: $i) { __typename ... on CreateModelSuccess { model { id } } } }`,
      { i: { name: 'det', task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' } },
      owner.token,
    ),
    'createModel',
    'model',
  );
  modelId = model.id;
  const dataset = ok(
    await api.gql(
      `mutation($i: CreateDatasetInput!) { createDataset(input: $i) { __typename ... on CreateDatasetSuccess { dataset { id } } } }`,
      { i: { name: 'shapes', task: 'OBJECT_DETECTION' } },
      owner.token,
    ),
    'createDataset',
    'dataset',
  );
  const version = await seedReadyDatasetVersion(api, dataset.id, 'YOLO', owner.token);
  for (let i = 0; i < 3; i++) {
    const session = ok(
      await api.gql(
        `mutation($m: ID!, $i: TrainModelInput!) { trainModel(modelId: $m, input: $i) {
          __typename ... on TrainModelSuccess { trainingSession { id } } ... on Error { message } } }`,
        { m: modelId, i: { datasetVersionId: version, config: { epochs: 5 } } },
        owner.token,
      ),
      'trainModel',
      'trainingSession',
    );
    sessionIds.push(decodeGlobalID(session.id).id);
  }
}, 120_000);

afterAll(async () => {
  await writer?.end();
  await reference?.close();
  await api?.close();
});

describe('response cache', () => {
  it('answers a repeated page from the cache with one statement, byte for byte the same', async () => {
    const first = await cached(PAGE, { first: 50 });
    const second = await cached(PAGE, { first: 50 });
    expect(first.statements).toBeGreaterThan(1);
    expect(second.statements).toBe(1);
    expect(second.text).toBe(first.text);
    expect(JSON.parse(second.text).data.trainingSessions.edges).toHaveLength(3);
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(true);
    // Other variables are another entry.
    expect((await cached(PAGE, { first: 2 })).statements).toBeGreaterThan(1);
    expect(await expectSameAsFresh(PAGE, { first: 2 })).toBe(true);
  });

  it('is invalidated by a GraphQL mutation', async () => {
    await expectSameAsFresh(PAGE, { first: 50 });
    ok(
      await api.gql(
        `mutation($id: ID!) { updateModel(id: $id, input: {description: "renamed"}) { __typename ... on UpdateModelSuccess { model { id } } } }`,
        { id: modelId },
        owner.token,
      ),
      'updateModel',
      'model',
    );
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);
    expect((await cached(PAGE, { first: 50 })).text).toContain('"description":"renamed"');
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(true);
  });

  it('is invalidated by SQL from another connection: inserts, updates, deletes, savepoints', async () => {
    const [a, b] = sessionIds;
    // As the event ingester stores an epoch (it may run in another process).
    await expectSameAsFresh(PAGE, { first: 50 });
    await writer.query(
      `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
       values ($1, now(), now(), $2, $3, 1, '{"loss": 0.5}')`,
      [randomUUID(), orgId, a],
    );
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);
    expect((await cached(PAGE, { first: 50 })).text).toContain('"loss":0.5');

    await expectSameAsFresh(PAGE, { first: 50 });
    await writer.query(`update training_sessions set progress_fraction = 0.25, current_epoch = 1 where id = $1`, [a]);
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);

    // A transaction whose first change is rolled back to a savepoint and whose second commits.
    await expectSameAsFresh(PAGE, { first: 50 });
    await writer.query('begin');
    await writer.query('savepoint s');
    await writer.query(`update models set name = 'never' where organization_id = $1`, [orgId]);
    await writer.query('rollback to savepoint s');
    await writer.query(`update training_sessions set progress_fraction = 0.5 where id = $1`, [b]);
    await writer.query('commit');
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);
    expect((await cached(PAGE, { first: 50 })).text).not.toContain('never');

    // A rolled-back transaction changes nothing, so the entry stays good.
    await expectSameAsFresh(PAGE, { first: 50 });
    await writer.query('begin');
    await writer.query(`update models set name = 'rolled back' where organization_id = $1`, [orgId]);
    await writer.query('rollback');
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(true);

    await writer.query(`delete from epoch_metrics where session_id = $1`, [a]);
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);
    expect((await cached(PAGE, { first: 50 })).text).not.toContain('"loss":0.5');
  });

  it('is not invalidated by another organization’s writes', async () => {
    await expectSameAsFresh(PAGE, { first: 50 });
    ok(
      await api.gql(
        `mutation { createModel(input: {name: "theirs", task: CLASSIFICATION, framework: TORCHVISION, architecture: "resnet18"}) {
          __typename ... on CreateModelSuccess { model { id } } } }`,
        {},
        other.token,
      ),
      'createModel',
      'model',
    );
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(true);
  });

  it('keeps callers apart: another key of the same organization gets its own entry', async () => {
    await expectSameAsFresh(PAGE, { first: 50 });
    const created = ok(
      await api.gql(
        `mutation { createApiKey(input: {name: "dash", role: VIEWER}) { __typename ... on CreateApiKeySuccess { createdApiKey { secret } } } }`,
        {},
        owner.token,
      ),
      'createApiKey',
      'createdApiKey',
    );
    // Creating the key wrote the organization's rows: the owner's entry is stale now.
    expect(await expectSameAsFresh(PAGE, { first: 50 })).toBe(false);
    expect(await expectSameAsFresh(PAGE, { first: 50 }, created.secret)).toBe(false);
    // The key's first use records last_used_at (a write to the organization's rows, so one more
    // miss may follow); from then on the key is served from its own entry.
    await expectSameAsFresh(PAGE, { first: 50 }, created.secret);
    expect(await expectSameAsFresh(PAGE, { first: 50 }, created.secret)).toBe(true);
    // An unauthenticated caller is never served an entry.
    const anonymous = JSON.parse((await post(api.url, PAGE, { first: 50 }, '')).text);
    expect(anonymous.errors?.[0]?.extensions?.code).toBe('UNAUTHENTICATED');
    expect(anonymous.data?.trainingSessions ?? null).toBeNull();
  });

  it('never caches what is not organization data or changes per request', async () => {
    const artifacts = `{ trainingSessions(first: 5) { edges { node { id artifacts { url } } } } }`;
    const viewer = `{ viewer { role organization { name } } }`;
    const node = `query($id: ID!) { node(id: $id) { id } }`;
    for (const [query, variables] of [
      [artifacts, {}],
      [viewer, {}],
      [node, { id: modelId }],
    ] as const) {
      await cached(query, variables);
      const again = await cached(query, variables);
      expect(again.statements, query).toBeGreaterThan(1);
      expect(again.text).toBe((await fresh(query, variables)).text);
    }
    // A mutation is executed every time, even when repeated with the same variables.
    const rename = `mutation($id: ID!) { updateModel(id: $id, input: {name: "det"}) { __typename } }`;
    for (let i = 0; i < 2; i++) expect((await cached(rename, { id: modelId })).statements).toBeGreaterThan(1);
  });

  it('never serves a response older than a write that committed before the request', async () => {
    // A writer and readers race: a read that starts after write i committed must show i or later,
    // also when the previous write committed while an earlier read of the same entry was running.
    const query = `query($id: ID!) { model(id: $id) { id description } }`;
    const seen = (text: string) => Number(JSON.parse(text).data.model.description);
    await writer.query(`update models set description = '0' where organization_id = $1`, [orgId]);
    for (let i = 1; i <= 60; i++) {
      const racing = [post(api.url, query, { id: modelId }, owner.token), post(api.url, query, { id: modelId }, owner.token)];
      await writer.query(`update models set description = $1 where organization_id = $2`, [String(i), orgId]);
      const after = await Promise.all([
        post(api.url, query, { id: modelId }, owner.token),
        post(api.url, query, { id: modelId }, owner.token),
      ]);
      for (const r of after) expect(seen(r.text)).toBe(i);
      for (const r of await Promise.all(racing)) expect(seen(r.text)).toBeGreaterThanOrEqual(i - 1);
    }
    expect(await expectSameAsFresh(query, { id: modelId })).toBe(true);
  });

  it('runs a query once for many concurrent callers that miss at the same version', async () => {
    await writer.query(`update training_sessions set progress_fraction = 0.6 where id = $1`, [sessionIds[1]]);
    statements.length = 0;
    counting = true;
    await post(api.url, PAGE, { first: 3 }, owner.token);
    counting = false;
    const executed = statements.length; // principal + what executing the page costs
    expect(executed).toBeGreaterThan(1);

    await writer.query(`update training_sessions set progress_fraction = 0.65 where id = $1`, [sessionIds[1]]);
    const before = api.server.responseCache.stats();
    statements.length = 0;
    counting = true;
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(api.url, PAGE, { first: 3 }, owner.token)));
    counting = false;
    const after = api.server.responseCache.stats();
    // 20 principal statements and one execution, whether the others waited for it or came after.
    expect(statements.length).toBe(20 + executed - 1);
    expect(after.misses - before.misses).toBe(1);
    expect(after.hits - before.hits + after.coalesced - before.coalesced).toBe(19);
    const want = (await fresh(PAGE, { first: 3 })).text;
    expect(want).toContain('"fraction":0.65');
    for (const a of answers) expect(a.text).toBe(want);
  });

  it('caches persisted operations as it caches the same documents sent in full', async () => {
    const [hash, document] = [...loadPersistedOperations()].find(([, doc]) => /query ListTrainingSessions\b/.test(doc))!;
    const persisted = async () => {
      statements.length = 0;
      counting = true;
      const res = await fetch(api.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${owner.token}` },
        body: JSON.stringify({
          operationName: 'ListTrainingSessions',
          variables: { first: 10 },
          extensions: { persistedQuery: { version: 1, sha256Hash: hash } },
        }),
      });
      const text = await res.text();
      counting = false;
      return { text, statements: statements.length };
    };
    await writer.query(`update training_sessions set progress_fraction = 0.3 where id = $1`, [sessionIds[0]]);
    const first = await persisted();
    const second = await persisted();
    expect(first.statements).toBeGreaterThan(1);
    expect(second.statements).toBe(1);
    expect(second.text).toBe(first.text);
    const full = await post(reference.url, document, { first: 10 }, owner.token);
    expect(JSON.parse(second.text)).toEqual(JSON.parse(full.text));
    expect(second.text).toContain('"fraction":0.3');
  });

  it('answers queries over the websocket from the same entries', async () => {
    const client = createClient({
      url: api.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${owner.token}` },
      retryAttempts: 0,
    });
    const overWs = () =>
      new Promise<unknown>((resolve, reject) => {
        let value: unknown;
        client.subscribe(
          { query: PAGE, variables: { first: 50 } },
          { next: (v) => (value = v), error: reject, complete: () => resolve(value) },
        );
      });
    try {
      await writer.query(`update training_sessions set progress_fraction = 0.75 where id = $1`, [sessionIds[2]]);
      // Stored by a websocket query (not yet serialized), then served to HTTP and websocket alike.
      const first = await overWs();
      const overHttp = await cached(PAGE, { first: 50 });
      expect(overHttp.statements).toBe(1);
      expect(first).toEqual(JSON.parse(overHttp.text));
      expect(await overWs()).toEqual(JSON.parse(overHttp.text));
      expect(JSON.stringify(first)).toContain('"fraction":0.75');
      expect(overHttp.text).toBe((await fresh(PAGE, { first: 50 })).text);
    } finally {
      await client.dispose();
    }
  });

  it('evicts the least recently used entries beyond its bounds', async () => {
    const small = await startServer(
      { ...api.app, config: { ...api.app.config, responseCache: { maxEntries: 2, maxBytes: 64 * 1024 } } },
      { port: 0, host: '127.0.0.1' },
    );
    try {
      const run = async (first: number) => {
        statements.length = 0;
        counting = true;
        await post(small.url, PAGE, { first }, owner.token);
        counting = false;
        return statements.length;
      };
      await run(1);
      await run(2);
      expect(await run(1)).toBe(1); // hit; 2 is now the least recently used
      await run(3); // evicts 2
      expect(await run(1)).toBe(1);
      expect(await run(2)).toBeGreaterThan(1);
      expect(small.responseCache.stats().entries).toBe(2);
      expect(small.responseCache.stats().bytes).toBeLessThanOrEqual(64 * 1024);
    } finally {
      await small.close();
    }
  });
});

describe('response cache coverage', () => {
  it('has the version triggers on every table that holds organization rows', async () => {
    const tables = await writer.query<{ table_name: string }>(
      `select table_name from information_schema.columns
        where table_schema = 'public' and column_name = 'organization_id' and table_name <> 'org_data_versions'`,
    );
    const names = [...tables.rows.map((r) => r.table_name), 'organizations'].sort();
    expect(names.length).toBeGreaterThanOrEqual(12);
    const triggers = await writer.query<{ table: string; tgname: string }>(
      `select tgrelid::regclass::text as table, tgname from pg_trigger where tgname like 'cvtrain_%' and not tgisinternal`,
    );
    for (const table of names) {
      const on = triggers.rows.filter((t) => t.table === table || t.table === `"${table}"`).map((t) => t.tgname).sort();
      expect(on, table).toEqual(['cvtrain_bump_all_org_versions', 'cvtrain_bump_org_versions', 'cvtrain_note_org_change']);
    }
  });

  it('classifies every object type of the schema', () => {
    const roots = new Set([schema.getQueryType(), schema.getMutationType(), schema.getSubscriptionType()]);
    const errorInterface = schema.getType('Error');
    for (const type of Object.values(schema.getTypeMap())) {
      if (!isObjectType(type) || type.name.startsWith('__') || roots.has(type)) continue;
      // Mutation payloads and typed errors never appear in a cacheable query.
      if (type.name.endsWith('Success') || type.getInterfaces().some((i) => i === errorInterface)) continue;
      expect(OBJECT_TYPE_CACHING[type.name], `${type.name} is not classified in OBJECT_TYPE_CACHING`).toBeDefined();
    }
  });

  it('decides from every field a document can select', () => {
    const cacheable = (q: string) => isCacheableDocument(schema, parse(q));
    expect(cacheable(PAGE)).toBe(true);
    expect(cacheable(`query { models(first: 5) { edges { node { ...M } } } } fragment M on Model { id name versions { metrics } }`)).toBe(true);
    expect(cacheable(`{ trainingSession(id: "x") { artifacts { name } } }`)).toBe(false);
    expect(cacheable(`{ trainingSessions { totalCount } viewer { role } }`)).toBe(false);
    expect(cacheable(`{ trainingSessions { edges { node { ... on Node { id } } } } }`)).toBe(false);
    expect(cacheable(`{ __typename }`)).toBe(false);
    expect(cacheable(`{ __schema { queryType { name } } }`)).toBe(false);
    expect(cacheable(`mutation { archiveModel(id: "x") { __typename } }`)).toBe(false);
    expect(cacheable(`query A { models { totalCount } } query B { gpuNodes { id } }`)).toBe(false);
    // Every field named by the allowlists exists in the schema.
    for (const [name, verdict] of Object.entries(OBJECT_TYPE_CACHING)) {
      expect(schema.getType(name), name).toBeDefined();
      if (verdict !== true) expect(verdict.length).toBeGreaterThan(5);
    }
    const query = schema.getQueryType()!.getFields();
    for (const name of ['trainingSessions', 'model', 'datasets', 'computeProfiles']) {
      expect(OBJECT_TYPE_CACHING[getNamedType(query[name].type).name]).toBe(true);
    }
  });
});
