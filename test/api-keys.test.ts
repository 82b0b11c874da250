// API keys: the secret is shown once and stored as a SHA-256 only; a key authenticates as its
// organization with its role until revoked; persisted-only keys run nothing but the operations of
// schema/persisted-operations.json (built from schema/operations/*.graphql by `npm run schema:print`).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { buildManifest, manifestFile } from '../src/graphql/persisted.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

let api: TestApi;
let owner: SignedUp;
let other: SignedUp;
let session: string;
let modelId: string;

const CREATE_KEY = `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) {
  __typename ... on Error { message }
  ... on CreateApiKeySuccess { createdApiKey { secret apiKey { id name role hint persistedOnly lastUsedAt revokedAt createdAt } } } } }`;
const REVOKE_KEY = `mutation($id: ID!) { revokeApiKey(id: $id) {
  __typename ... on Error { message } ... on RevokeApiKeySuccess { apiKey { id revokedAt } } } }`;
const VIEWER = '{ viewer { role organization { id } user { id } apiKey { id name persistedOnly } } }';
const KEY_RE = /^cvt_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$/;

async function createKey(input: { name: string; role: string; persistedOnly?: boolean }, token = owner.token) {
  return ok(await api.gql(CREATE_KEY, { input }, token), 'createApiKey', 'createdApiKey') as {
    secret: string;
    apiKey: { id: string; name: string; role: string; hint: string; persistedOnly: boolean; revokedAt: string | null };
  };
}

/** POST /graphql with a raw body, returning the status, parsed body and raw text. */
async function post(body: unknown, token: string | null) {
  const res = await fetch(api.url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
    },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, text, body: JSON.parse(text) as { data?: any; errors?: { message: string }[] } };
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Record<string, string>;
const hashOf = (operationName: string) => {
  const entry = Object.entries(manifest).find(([, doc]) => new RegExp(`query ${operationName}\\b`).test(doc));
  if (!entry) throw new Error(`${operationName} is not in ${manifestFile}`);
  return entry[0];
};
const persisted = (operationName: string, variables: Record<string, unknown>) => ({
  operationName,
  variables,
  extensions: { persistedQuery: { version: 1, sha256Hash: hashOf(operationName) } },
});

beforeAll(async () => {
  api = await startTestApi();
  owner = await signUp(api, 'Keys Inc');
  other = await signUp(api, 'Other Inc');
  const model = await api.gql(
    `mutation { createModel(input: { name: "det", task: OBJECT_DETECTION, framework: TORCHVISION, architecture: "fasterrcnn_mobilenet_v3_large_320_fpn" }) {
      ... on CreateModelSuccess { model { id } } } }`,
    {},
    owner.token,
  );
  modelId = model.data.createModel.model.id;
  const ds = await api.gql(`mutation { createDataset(input: { name: "d", task: OBJECT_DETECTION }) { ... on CreateDatasetSuccess { dataset { id } } } }`, {}, owner.token);
  const dv = await seedReadyDatasetVersion(api, ds.data.createDataset.dataset.id, 'YOLO', owner.token);
  const train = await api.gql(
    `mutation($m: ID!, $dv: ID!) { trainModel(modelId: $m, input: { datasetVersionId: $dv, config: { epochs: 4 } }) {
      __typename ... on TrainModelSuccess { trainingSession { id } } } }`,
    { m: modelId, dv },
    owner.token,
  );
  session = train.data.trainModel.trainingSession.id;
  // Epochs have no public writer (the event ingester stores a trainer's): inserted as it does.
  await api.orm.em.getConnection().execute(
    `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics)
     values (gen_random_uuid(), now(), now(), ?, ?, 1, '{"loss": 0.75}')`,
    [decodeGlobalID(owner.orgId).id, decodeGlobalID(session).id],
  );
}, 60_000);
afterAll(() => api?.close());

describe('creating and listing keys', () => {
  it('shows the secret once and stores only its SHA-256', async () => {
    const created = await createKey({ name: 'ci', role: 'MEMBER' });
    expect(created.secret).toMatch(KEY_RE);
    expect(created.apiKey).toMatchObject({ name: 'ci', role: 'MEMBER', persistedOnly: false, revokedAt: null });
    const [, hexId, secretPart] = KEY_RE.exec(created.secret)!;
    expect(decodeGlobalID(created.apiKey.id).id.replace(/-/g, '')).toBe(hexId);
    // The hint tells keys apart without any of the secret.
    expect(created.secret.startsWith(created.apiKey.hint.replace('…', ''))).toBe(true);
    expect(created.apiKey.hint).not.toContain(secretPart.slice(0, 4));

    // Listing never shows it: not in any field, not anywhere in the response.
    const listed = await post({ query: '{ apiKeys { id name role hint persistedOnly lastUsedAt revokedAt createdAt } }' }, owner.token);
    expect(listed.body.data.apiKeys.map((k: { id: string }) => k.id)).toContain(created.apiKey.id);
    expect(listed.text).not.toContain(secretPart);
    const viaNode = await post({ query: 'query($id: ID!) { node(id: $id) { ... on ApiKey { id hint name } } }', variables: { id: created.apiKey.id } }, owner.token);
    expect(viaNode.body.data.node.id).toBe(created.apiKey.id);
    expect(viaNode.text).not.toContain(secretPart);

    // The type has no field that could carry it.
    const type = await api.gql('{ __type(name: "ApiKey") { fields { name } } }');
    const fields = type.data.__type.fields.map((f: { name: string }) => f.name);
    expect(fields.filter((f: string) => /secret|hash|token/i.test(f))).toEqual([]);

    // The database holds a hex SHA-256 of the secret and nothing that contains the secret.
    const rows = await api.orm.em.getConnection().execute<Record<string, unknown>[]>('select * from api_keys where id = ?', [
      decodeGlobalID(created.apiKey.id).id,
    ]);
    expect(rows).toHaveLength(1);
    expect(rows[0].secret_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(rows[0].secret_hash).toBe(sha256(secretPart));
    expect(JSON.stringify(rows[0])).not.toContain(secretPart);
  });

  it('lists keys to OWNER and ADMIN only', async () => {
    const memberKey = await createKey({ name: 'member', role: 'MEMBER' });
    const res = await api.gql('{ apiKeys { id } }', {}, memberKey.secret);
    expect(res.errors?.[0].extensions?.code).toBe('FORBIDDEN');
  });
});

describe('authenticating with a key', () => {
  it('acts for its organization with its role, and records its last use', async () => {
    const created = await createKey({ name: 'reader', role: 'VIEWER' });
    const res = await api.gql(VIEWER, {}, created.secret);
    expect(res.data.viewer).toEqual({
      role: 'VIEWER',
      organization: { id: owner.orgId },
      user: null,
      apiKey: { id: created.apiKey.id, name: 'reader', persistedOnly: false },
    });
    // last_used_at is written in the background, at most once a minute.
    await expect
      .poll(async () => (await api.gql('{ apiKeys { id lastUsedAt } }', {}, owner.token)).data.apiKeys.find((k: any) => k.id === created.apiKey.id).lastUsedAt)
      .not.toBeNull();
  });

  it('works with any casing of "Bearer" but not without it', async () => {
    const created = await createKey({ name: 'casing', role: 'VIEWER' });
    for (const header of [`bearer ${created.secret}`, `BEARER ${created.secret}`]) {
      const res = await fetch(api.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: header },
        body: JSON.stringify({ query: '{ viewer { role } }' }),
      });
      expect((await res.json()).data.viewer).toEqual({ role: 'VIEWER' });
    }
    const bare = await fetch(api.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: created.secret },
      body: JSON.stringify({ query: '{ viewer { role } }' }),
    });
    expect((await bare.json()).data.viewer).toBeNull();
  });

  it('refuses a wrong secret with a right key id, and a right secret with a wrong key id', async () => {
    const a = await createKey({ name: 'a', role: 'ADMIN' });
    const b = await createKey({ name: 'b', role: 'ADMIN' });
    const [, idA, secretA] = KEY_RE.exec(a.secret)!;
    const [, idB, secretB] = KEY_RE.exec(b.secret)!;
    const flip = (s: string) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1);
    const wrong = [
      `cvt_${idA}_${secretB}`,
      `cvt_${idB}_${secretA}`,
      `cvt_${idA}_${flip(secretA)}`,
      `cvt_${idA}_${secretA.slice(0, -1)}`,
      `cvt_${'0'.repeat(32)}_${secretA}`,
      `cvt_${idA.toUpperCase()}_${secretA}`,
    ];
    for (const token of wrong) {
      expect((await api.gql('{ viewer { role } }', {}, token)).data.viewer, token).toBeNull();
      const write = await api.gql(`mutation { createDataset(input: { name: "nope", task: OBJECT_DETECTION }) { __typename } }`, {}, token);
      expect(write.data.createDataset.__typename).toBe('AuthenticationError');
    }
    expect((await api.gql('{ viewer { role } }', {}, a.secret)).data.viewer).toEqual({ role: 'ADMIN' });
  });

  it('stops working at once when revoked; revoking again keeps the first time', async () => {
    const created = await createKey({ name: 'short-lived', role: 'ADMIN' });
    expect((await api.gql('{ viewer { role } }', {}, created.secret)).data.viewer).toEqual({ role: 'ADMIN' });
    const revoked = ok(await api.gql(REVOKE_KEY, { id: created.apiKey.id }, owner.token), 'revokeApiKey', 'apiKey');
    expect(revoked.revokedAt).not.toBeNull();

    expect((await api.gql('{ viewer { role } }', {}, created.secret)).data.viewer).toBeNull();
    const models = await api.gql('{ models { totalCount } }', {}, created.secret);
    expect(models.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');

    const again = ok(await api.gql(REVOKE_KEY, { id: created.apiKey.id }, owner.token), 'revokeApiKey', 'apiKey');
    expect(again.revokedAt).toBe(revoked.revokedAt);
    const listed = await api.gql('{ apiKeys { id revokedAt } }', {}, owner.token);
    expect(listed.data.apiKeys).toContainEqual({ id: created.apiKey.id, revokedAt: revoked.revokedAt });
  });

  it('authenticates subscriptions in connection_init, and a revoked key cannot subscribe', async () => {
    const created = await createKey({ name: 'live', role: 'VIEWER' });
    const subscribeOnce = async (token: string) => {
      const client = createClient({
        url: api.url.replace(/^http/, 'ws'),
        webSocketImpl: WebSocket,
        connectionParams: { authorization: `Bearer ${token}` },
        retryAttempts: 0,
        lazy: true,
      });
      try {
        return await new Promise<{ data?: any; errors?: readonly { message: string; extensions?: { code?: string } }[]; closeCode?: number }>((resolve) => {
          client.subscribe(
            { query: 'subscription($id: ID!) { trainingSessionUpdated(id: $id) { id status } }', variables: { id: session } },
            {
              // The first value is the session as it is now; that is enough here.
              next: (value) => resolve(value as never),
              error: (err) =>
                resolve(
                  Array.isArray(err) ? { errors: err } : typeof (err as { code?: unknown })?.code === 'number' ? { closeCode: (err as { code: number }).code } : { errors: [{ message: String(err) }] },
                ),
              complete: () => resolve({}),
            },
          );
        });
      } finally {
        await client.dispose();
      }
    };
    expect(await subscribeOnce(created.secret)).toEqual({ data: { trainingSessionUpdated: { id: session, status: 'QUEUED' } } });
    ok(await api.gql(REVOKE_KEY, { id: created.apiKey.id }, owner.token), 'revokeApiKey', 'apiKey');
    // A revoked key gets no connection: the socket is closed with 4401 at connection_init.
    expect(await subscribeOnce(created.secret)).toEqual({ closeCode: 4401 });
  });

  it('a key can revoke itself, and is refused from then on', async () => {
    const created = await createKey({ name: 'self', role: 'ADMIN' });
    const res = await api.gql(REVOKE_KEY, { id: created.apiKey.id }, created.secret);
    expect(res.data.revokeApiKey.__typename).toBe('RevokeApiKeySuccess');
    const after = await api.gql(REVOKE_KEY, { id: created.apiKey.id }, created.secret);
    expect(after.data.revokeApiKey.__typename).toBe('AuthenticationError');
  });
});

describe("another organization's keys", () => {
  it('are not listed, not found by node(id:), cannot be revoked, and act only for their organization', async () => {
    const theirs = await createKey({ name: 'theirs', role: 'OWNER' }, other.token);
    const mine = await api.gql('{ apiKeys { id } }', {}, owner.token);
    expect(mine.data.apiKeys.map((k: { id: string }) => k.id)).not.toContain(theirs.apiKey.id);
    const node = await api.gql('query($id: ID!) { node(id: $id) { id } }', { id: theirs.apiKey.id }, owner.token);
    expect(node.data.node).toBeNull();
    const revoke = await api.gql(REVOKE_KEY, { id: theirs.apiKey.id }, owner.token);
    expect(revoke.data.revokeApiKey.__typename).toBe('NotFoundError');
    const viewer = await api.gql(VIEWER, {}, theirs.secret);
    expect(viewer.data.viewer.organization.id).toBe(other.orgId);
    expect(viewer.data.viewer.apiKey.id).toBe(theirs.apiKey.id);
    const sessions = await api.gql('query($id: ID!) { trainingSession(id: $id) { id } }', { id: session }, theirs.secret);
    expect(sessions.data.trainingSession).toBeNull();
  });
});

describe('persisted operations', () => {
  it('the manifest is built from schema/operations and keyed by the SHA-256 of each document', () => {
    // `npm run schema:print` rebuilds it; a stale manifest fails here.
    expect(manifest).toEqual(buildManifest());
    for (const [hash, document] of Object.entries(manifest)) expect(sha256(document)).toBe(hash);
    expect(Object.keys(manifest).length).toBeGreaterThanOrEqual(2);
    hashOf('TrainingSessionStatus');
    hashOf('ListTrainingSessions');
  });

  it('every persisted operation is valid against the schema', async () => {
    const key = await createKey({ name: 'validator', role: 'VIEWER', persistedOnly: true });
    for (const hash of Object.keys(manifest)) {
      const res = await post({ variables: { id: session }, extensions: { persistedQuery: { version: 1, sha256Hash: hash } } }, key.secret);
      expect(res.body.errors ?? [], hash).not.toContainEqual(expect.objectContaining({ extensions: expect.objectContaining({ code: 'GRAPHQL_VALIDATION_FAILED' }) }));
    }
  });

  it('a persisted-only key runs persisted operations and nothing else', async () => {
    const key = await createKey({ name: 'integration', role: 'MEMBER', persistedOnly: true });
    expect(key.apiKey.persistedOnly).toBe(true);

    const status = await post(persisted('TrainingSessionStatus', { id: session }), key.secret);
    expect(status.status).toBe(200);
    expect(status.body.errors).toBeUndefined();
    expect(status.body.data.trainingSession).toMatchObject({
      id: session,
      // Placed by the orchestrator at once; no GPU node runs it, so it waits.
      status: 'QUEUED',
      progress: { epoch: 0, totalEpochs: 4, fraction: 0 },
      latestEpoch: { epoch: 1, metrics: { loss: 0.75 } },
      error: null,
    });

    const list = await post(persisted('ListTrainingSessions', { first: 10, filter: { modelId } }), key.secret);
    expect(list.body.errors).toBeUndefined();
    expect(list.body.data.trainingSessions.totalCount).toBe(1);
    expect(list.body.data.trainingSessions.edges[0].node).toMatchObject({ id: session, model: { id: modelId, name: 'det' } });

    // Anything sent as a document is refused, queries and mutations alike, and writes nothing.
    const countDatasets = async () =>
      (await api.orm.em.getConnection().execute<{ n: string }[]>('select count(*) as n from datasets'))[0].n;
    const datasetsBefore = await countDatasets();
    for (const query of [
      '{ viewer { role } }',
      '{ apiKeys { id } }',
      `mutation { createDataset(input: { name: "sneaky", task: OBJECT_DETECTION }) { __typename } }`,
      manifest[hashOf('TrainingSessionStatus')].replace('query TrainingSessionStatus', 'query Renamed'),
    ]) {
      const res = await post({ query, variables: { id: session } }, key.secret);
      expect(res.body.data ?? null, query).toBeNull();
      expect(res.body.errors?.length, query).toBeGreaterThan(0);
    }
    expect(await countDatasets()).toBe(datasetsBefore);

    // An unknown hash is not an open door either.
    const unknown = await post({ extensions: { persistedQuery: { version: 1, sha256Hash: sha256('{ viewer { role } }') } } }, key.secret);
    expect(unknown.body.data ?? null).toBeNull();
    expect(unknown.body.errors?.[0].message).toMatch(/PersistedQueryNotFound/);
  });

  it('a normal key runs both persisted operations and arbitrary queries', async () => {
    const key = await createKey({ name: 'normal', role: 'VIEWER' });
    const status = await post(persisted('TrainingSessionStatus', { id: session }), key.secret);
    expect(status.body.data.trainingSession.id).toBe(session);
    const arbitrary = await post({ query: '{ viewer { role apiKey { persistedOnly } } }' }, key.secret);
    expect(arbitrary.body.data.viewer).toEqual({ role: 'VIEWER', apiKey: { persistedOnly: false } });
  });

  it('over websockets too, a persisted-only key runs only persisted operations', async () => {
    const key = await createKey({ name: 'ws integration', role: 'VIEWER', persistedOnly: true });
    const client = createClient({
      url: api.url.replace(/^http/, 'ws'),
      webSocketImpl: WebSocket,
      connectionParams: { authorization: `Bearer ${key.secret}` },
      retryAttempts: 0,
      lazy: true,
    });
    const runOnce = (payload: { query: string; variables?: Record<string, unknown>; extensions?: Record<string, unknown> }) =>
      new Promise<{ data?: any; errors?: readonly { message: string }[] }>((resolve) => {
        let result: { data?: any; errors?: readonly { message: string }[] } = {};
        client.subscribe(payload, {
          next: (value) => (result = value as typeof result),
          error: (err) => resolve({ errors: Array.isArray(err) ? err : [{ message: err instanceof Error ? err.message : JSON.stringify(err, ["code", "reason", "message"]) }] }),
          complete: () => resolve(result),
        });
      });
    try {
      const refused = await runOnce({ query: '{ viewer { role } }' });
      expect(refused.data ?? null).toBeNull();
      expect(refused.errors?.[0].message).toMatch(/persisted/i);

      const allowed = await runOnce({
        query: '',
        variables: { id: session },
        extensions: { persistedQuery: { version: 1, sha256Hash: hashOf('TrainingSessionStatus') } },
      });
      expect(allowed.errors).toBeUndefined();
      expect(allowed.data.trainingSession.id).toBe(session);
    } finally {
      await client.dispose();
    }
  });
});
