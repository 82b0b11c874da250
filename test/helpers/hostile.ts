// Shared by the hostile-client suite (test/security/): one organization with an object of every
// kind, seeded through the public API as a client would (SQL only where no public writer exists),
// a graphql-ws client that records everything the server sends, and the leak scanner: every free
// text of a seeded organization carries its marker, so a response that holds the marker, or any
// of its ids, came from that organization.
import { randomBytes, randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { createClient, type Client } from 'graphql-ws';
import WebSocket from 'ws';
import { ok, signUp, type GqlResponse, type SignedUp, type TestApi } from './api.js';
import { createDatasetVersion, datasetArchive, putArchive, seedReadyDatasetVersion } from './seed.js';

/**
 * The server settings of the hostile suites. Request rate limits and sign-in throttling have tests
 * of their own; here they would only turn thousands of hostile calls a second into 429s and
 * LimitExceededErrors and hide what the boundary answers. `0` turns each off; a variable this
 * build does not know is ignored.
 */
export const SUITE_ENV: Record<string, string> = {
  CVTRAIN_RATE_LIMIT_RPS: '0',
  CVTRAIN_ANON_RATE_LIMIT_RPS: '0',
  CVTRAIN_AUTH_ADDRESS_PER_MIN: '0',
  CVTRAIN_AUTH_ACCOUNT_PER_MIN: '0',
};

/** What a mutation's result union is asked for; RESULT_ID for unions that include NotFoundError. */
export const RESULT = `__typename ... on Error { message } ... on ValidationError { field }`;
export const RESULT_ID = `${RESULT} ... on NotFoundError { resource id }`;

export interface OrgFixture {
  label: string;
  /** In every name, description, email and secret of this organization; nothing else holds it. */
  marker: string;
  orgName: string;
  owner: SignedUp;
  /** A second user, MEMBER of this organization (and OWNER of their own). */
  member: SignedUp;
  /** An OWNER API key of the organization. */
  key: { id: string; secret: string };
  model: string;
  archivedModel: string;
  dataset: string;
  /** READY. */
  datasetVersion: string;
  /** Uploaded, not finalized: UPLOADING. */
  uploadedVersion: string;
  /** PLATFORM, the organization's default. */
  platformProfile: string;
  /** SAGEMAKER with credentials, falling back to platformProfile. */
  sagemakerProfile: string;
  /** S3, the organization's default storage (nothing listens at its endpoint). */
  storageProfile: string;
  /** QUEUED (no GPU node runs it). */
  session: string;
  /** PAUSED_BUDGET (set by SQL: only a budget monitor pauses). */
  pausedSession: string;
  /** Inserted by SQL, as the event ingester would. */
  modelVersion: string;
  epochMetric: string;
  artifact: string;
}

export function localOf(globalId: string): string {
  return decodeGlobalID(globalId).id;
}

export const unique = (prefix: string) => `${prefix} ${randomUUID().slice(0, 8)}`;

async function must(api: TestApi, token: string, query: string, variables: Record<string, unknown>, field: string, dataField: string) {
  return ok(await api.gql(query, variables, token), field, dataField);
}

export const q = {
  createModel: `mutation($input: CreateModelInput!) { createModel(input: $input) { ${RESULT} ... on CreateModelSuccess { model { id } } } }`,
  archiveModel: `mutation($id: ID!) { archiveModel(id: $id) { ${RESULT_ID} ... on ArchiveModelSuccess { model { id } } } }`,
  createDataset: `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { ${RESULT} ... on CreateDatasetSuccess { dataset { id } } } }`,
  createProfile: `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) {
    ${RESULT} ... on CreateComputeProfileSuccess { computeProfile { id } } } }`,
  createStorage: `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) {
    ${RESULT} ... on CreateStorageProfileSuccess { storageProfile { id } } } }`,
  train: `mutation($modelId: ID!, $input: TrainModelInput!) { trainModel(modelId: $modelId, input: $input) {
    ${RESULT_ID} ... on TrainModelSuccess { trainingSession { id } } } }`,
  createKey: `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) {
    ${RESULT} ... on CreateApiKeySuccess { createdApiKey { secret apiKey { id } } } } }`,
  addMember: `mutation($input: AddMemberInput!) { addMember(input: $input) { ${RESULT} ... on AddMemberSuccess { membership { role } } } }`,
  signIn: `mutation($input: SignInInput!) { signIn(input: $input) { ${RESULT} ... on SignInSuccess { authPayload { token role organization { id } } } } }`,
};

export const s3Config = (marker: string) => ({
  bucket: `${marker}-bucket`,
  region: 'eu-west-1',
  endpoint: 'http://127.0.0.1:9',
  forcePathStyle: true,
});
export const s3Credentials = (marker: string) => ({ accessKeyId: 'AKIAHOSTILEHOSTILE00', secretAccessKey: `${marker}-secret-access-key-0123` });

export async function newModel(api: TestApi, token: string, name: string, description?: string): Promise<string> {
  return (
    await must(api, token, q.createModel, {
      input: { name, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn', description },
    }, 'createModel', 'model')
  ).id;
}

export async function newProfile(api: TestApi, token: string, name: string, extra: Record<string, unknown> = {}): Promise<string> {
  return (await must(api, token, q.createProfile, { input: { name, provider: 'PLATFORM', strategy: 'QUEUE', ...extra } }, 'createComputeProfile', 'computeProfile')).id;
}

export async function newStorageProfile(api: TestApi, token: string, name: string, marker: string, isDefault = false): Promise<string> {
  return (
    await must(api, token, q.createStorage, {
      input: { name, kind: 'S3', config: s3Config(marker), credentials: s3Credentials(marker), isDefault },
    }, 'createStorageProfile', 'storageProfile')
  ).id;
}

export async function newSession(api: TestApi, f: OrgFixture, token = f.owner.token): Promise<string> {
  return (
    await must(api, token, q.train, {
      modelId: f.model,
      input: { datasetVersionId: f.datasetVersion, computeProfileId: f.platformProfile, config: { epochs: 2 } },
    }, 'trainModel', 'trainingSession')
  ).id;
}

/** A QUEUED session moved to PAUSED_BUDGET, the state resumeTrainingSession acts on. */
export async function newPausedSession(api: TestApi, f: OrgFixture): Promise<string> {
  const id = await newSession(api, f);
  await api.app.sql.query(`update training_sessions set status = 'PAUSED_BUDGET', updated_at = now() where id = ?`, [localOf(id)]);
  return id;
}

export async function newKey(api: TestApi, token: string, role: string, name = unique('key')): Promise<{ id: string; secret: string }> {
  const created = await must(api, token, q.createKey, { input: { name, role } }, 'createApiKey', 'createdApiKey');
  return { id: created.apiKey.id, secret: created.secret };
}

/** An uploaded, not finalized dataset version of the fixture's dataset. */
export async function newUploadedVersion(api: TestApi, f: OrgFixture): Promise<string> {
  const upload = await createDatasetVersion(api, f.owner.token, f.dataset, 'YOLO');
  await putArchive(upload, datasetArchive('YOLO').bytes);
  return upload.version.id;
}

/**
 * An account that never signs in, inserted directly (signing up costs scrypt time for nothing);
 * for the cases that add and remove members.
 */
export async function spareUser(api: TestApi, marker = 'spare'): Promise<{ userId: string; email: string }> {
  const id = randomUUID();
  const email = `${marker}-${id.slice(0, 8)}@example.com`;
  await api.app.sql.query(`insert into users (id, created_at, updated_at, email, password_hash) values (?, now(), now(), ?, 'scrypt$unusable')`, [id, email]);
  return { userId: encodeGlobalID('User', id), email };
}

export async function seedOrg(api: TestApi, label: string): Promise<OrgFixture> {
  const marker = `zq${randomBytes(5).toString('hex')}`;
  const orgName = `${marker} ${label} Corp`;
  const owner = await signUp(api, orgName, `${marker}-owner@example.com`);
  const t = owner.token;
  const model = await newModel(api, t, `${marker} detector`, `${marker} model`);
  const archivedModel = await newModel(api, t, `${marker} old detector`);
  await must(api, t, q.archiveModel, { id: archivedModel }, 'archiveModel', 'model');
  const dataset = (await must(api, t, q.createDataset, { input: { name: `${marker} shapes`, task: 'OBJECT_DETECTION', description: `${marker} data` } }, 'createDataset', 'dataset')).id;
  const datasetVersion = await seedReadyDatasetVersion(api, dataset, 'YOLO', t);
  const platformProfile = await newProfile(api, t, `${marker} gpus`, { config: { gpus: 1 }, isDefault: true });
  const sagemakerProfile = await newProfile(api, t, `${marker} aws`, {
    provider: 'SAGEMAKER',
    strategy: 'PREFERRED',
    config: { region: 'eu-west-1', roleArn: 'arn:aws:iam::123456789012:role/cvtrain', instanceType: 'ml.g5.xlarge', image: 'cvtrain/trainer:latest' },
    credentials: { accessKeyId: 'AKIAABCDEFGHIJKLMNOP', secretAccessKey: `${marker}-sagemaker-secret-0123` },
    fallbackProfileIds: [platformProfile],
    maxCostPerSessionUsd: 25,
  });
  const partial = { label, marker, orgName, owner, model, archivedModel, dataset, datasetVersion, platformProfile, sagemakerProfile } as OrgFixture;
  const session = await newSession(api, partial);
  const pausedSession = await newPausedSession(api, { ...partial, session } as OrgFixture);
  partial.uploadedVersion = await newUploadedVersion(api, partial);
  // Made after the dataset versions, which stay in the platform's storage.
  const storageProfile = await newStorageProfile(api, t, `${marker} lake`, marker, true);
  const key = await newKey(api, t, 'OWNER', `${marker} ci`);
  const member = await signUp(api, `${marker} member home`, `${marker}-member@example.com`);
  ok(await api.gql(q.addMember, { input: { email: member.email, role: 'MEMBER' } }, t), 'addMember', 'membership');

  // No public API writes these (the event ingester does, from a trainer's events).
  const orgId = localOf(owner.orgId);
  const modelVersionId = randomUUID();
  await api.app.sql.query(
    `insert into model_versions (id, created_at, updated_at, organization_id, model_id, version, session_id, metrics) values (?, now(), now(), ?, ?, 1, ?, ?)`,
    [modelVersionId, orgId, localOf(model), localOf(session), JSON.stringify({ 'mAP@.5': 0.5, note: `${marker} metrics` })],
  );
  const epochId = randomUUID();
  await api.app.sql.query(
    `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics) values (?, now(), now(), ?, ?, 1, ?)`,
    [epochId, orgId, localOf(session), JSON.stringify({ loss: 1.5, note: `${marker} epoch` })],
  );
  const artifactId = randomUUID();
  await api.app.sql.query(
    `insert into artifacts (id, created_at, updated_at, organization_id, session_id, kind, storage_key, size_bytes, sha256)
     values (?, now(), now(), ?, ?, 'WEIGHTS', ?, 10, ?)`,
    [artifactId, orgId, localOf(session), `orgs/${orgId}/sessions/${localOf(session)}/${marker}-weights.pt`, 'a'.repeat(64)],
  );
  return {
    ...partial,
    session,
    pausedSession,
    storageProfile,
    key,
    member,
    modelVersion: encodeGlobalID('ModelVersion', modelVersionId),
    epochMetric: encodeGlobalID('EpochMetric', epochId),
    artifact: encodeGlobalID('Artifact', artifactId),
  };
}

const TABLES = ['models', 'model_versions', 'datasets', 'dataset_versions', 'compute_profiles', 'storage_profiles', 'training_sessions', 'epoch_metrics', 'artifacts', 'api_keys', 'memberships'];

/**
 * Every row the organization owns, its organization row and its two users, straight from the
 * database (catches writes the API would not show), in one statement. last_used_at is bookkeeping
 * written when the organization's own key is used.
 */
export async function orgRows(api: TestApi, f: OrgFixture) {
  const org = localOf(f.owner.orgId);
  const [row] = await api.app.sql.query<Record<string, unknown>>(
    `select ${TABLES.map((t) => `(select coalesce(json_agg(to_jsonb(x) - 'last_used_at' order by x.id), '[]') from ${t} x where organization_id = ?) as ${t}`).join(', ')},
      (select json_agg(to_jsonb(o)) from organizations o where id = ?) as organizations,
      (select json_agg(to_jsonb(u) order by u.id) from users u where id in (?, ?)) as users`,
    [...TABLES.map(() => org), org, localOf(f.owner.userId), localOf(f.member.userId)],
  );
  return row;
}

// --- What an organization exposes to itself: the ids and cursors an attacker would want ---------------

/** Everything the organization's OWNER can list, with every nested id and cursor. */
export const HARVEST = `{
  viewer { organization { id members { user { id } } } }
  models(first: 100, includeArchived: true) { edges { cursor node { id versions { id model { id } }
    trainingSessions(first: 100) { edges { cursor node { id } } } } } }
  datasets(first: 100) { edges { cursor node { id versions { id dataset { id } } } } }
  computeProfiles(first: 100) { edges { cursor node { id fallbackProfileIds fallbackProfiles { id } } } }
  trainingSessions(first: 100) { edges { cursor node { id model { id } datasetVersion { id } computeProfile { id } latestEpoch { id }
    attempts { computeProfileId } artifacts { id } epochs(first: 100) { edges { cursor node { id } } } } } }
  storageProfiles { id }
  apiKeys { id }
  members { user { id } }
}`;

export interface Harvest {
  /** Every global ID found, by type. */
  ids: Map<string, Set<string>>;
  /** Every row id (UUID) found, lower case. */
  uuids: Set<string>;
  cursors: Set<string>;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function decodeIfGlobal(value: string): { typename: string; id: string } | null {
  try {
    const d = decodeGlobalID(value);
    return /^[A-Z][A-Za-z]+$/.test(d.typename) && UUID.test(d.id) && encodeGlobalID(d.typename, d.id) === value ? d : null;
  } catch {
    return null;
  }
}

export async function harvest(api: TestApi, token: string): Promise<Harvest> {
  const res = await api.gql(HARVEST, {}, token);
  if (res.errors) throw new Error(`harvest: ${JSON.stringify(res.errors)}`);
  const out: Harvest = { ids: new Map(), uuids: new Set(), cursors: new Set() };
  const walk = (v: unknown, key: string) => {
    if (typeof v === 'string') {
      if (key === 'cursor') out.cursors.add(v);
      const d = decodeIfGlobal(v);
      if (d) {
        if (!out.ids.has(d.typename)) out.ids.set(d.typename, new Set());
        out.ids.get(d.typename)!.add(v);
        out.uuids.add(d.id.toLowerCase());
      }
    } else if (Array.isArray(v)) v.forEach((x) => walk(x, key));
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, k);
  };
  walk(res.data, '');
  return out;
}

/**
 * What in `text` came from the organization: its marker, any of its global IDs or row ids, or a
 * cursor into its rows. `allowed` are strings the caller itself sent (an error may echo them).
 */
export function leaksIn(text: string, from: { marker: string; harvest: Harvest }, allowed: string[] = [], opts: { marker?: boolean } = {}): string[] {
  let t = text;
  // Case-insensitively: the server may echo an upper-cased row id it was sent in lower case.
  for (const a of allowed) t = t.replace(new RegExp(a.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'gi'), '<sent>');
  const lower = t.toLowerCase();
  const found: string[] = [];
  if (opts.marker !== false && lower.includes(from.marker)) found.push(`marker ${from.marker}`);
  for (const u of from.harvest.uuids) if (lower.includes(u)) found.push(`row id ${u}`);
  for (const ids of from.harvest.ids.values()) for (const id of ids) if (t.includes(id)) found.push(`id ${id}`);
  for (const c of from.harvest.cursors) if (t.includes(c)) found.push(`cursor ${c}`);
  return found;
}

// --- graphql-ws --------------------------------------------------------------------------------

export type WsEvent =
  | { next: { data?: any; errors?: any[] } }
  | { error: { message: string; extensions?: Record<string, unknown> }[] }
  | { closed: { code: number; reason: string } }
  | 'complete';

export function wsUrl(api: TestApi): string {
  return api.url.replace(/^http/, 'ws');
}

/** A graphql-ws client authenticated in connection_init as clients do; records how the socket closed. */
export function wsClient(
  api: TestApi,
  connectionParams: Record<string, unknown> | null,
  closes: { code: number; reason: string }[] = [],
  webSocketImpl: unknown = WebSocket,
): Client {
  return createClient({
    url: wsUrl(api),
    webSocketImpl,
    connectionParams: connectionParams ?? undefined,
    retryAttempts: 0,
    lazy: true,
    on: { closed: (e) => closes.push({ code: (e as { code: number }).code, reason: String((e as { reason?: string }).reason ?? '') }) },
  });
}

export const bearer = (token: string | null) => (token ? { authorization: `Bearer ${token}` } : {});

/**
 * Runs one operation on `client` and collects what arrives until the server errors or completes
 * it, `until` says enough, or `waitMs` passes. A socket the server closes ends it too (recorded
 * as `closed`, with the close code).
 */
export function wsRun(
  client: Client,
  query: string,
  variables: Record<string, unknown>,
  opts: { until?: (events: WsEvent[]) => boolean; waitMs?: number; onNext?: (events: WsEvent[]) => void } = {},
): Promise<WsEvent[]> {
  const events: WsEvent[] = [];
  return new Promise((resolve) => {
    let dispose = () => {};
    const done = () => {
      clearTimeout(timer);
      dispose();
      resolve(events);
    };
    const timer = setTimeout(done, opts.waitMs ?? 3_000);
    dispose = client.subscribe(
      { query, variables },
      {
        next: (value) => {
          events.push({ next: value as any });
          opts.onNext?.(events);
          if (opts.until?.(events)) done();
        },
        error: (err) => {
          if (Array.isArray(err)) events.push({ error: err });
          else if (err && typeof err === 'object' && 'code' in err && typeof (err as { code: unknown }).code === 'number') {
            events.push({ closed: { code: (err as { code: number }).code, reason: String((err as { reason?: string }).reason ?? '') } });
          } else events.push({ error: [{ message: String((err as Error)?.message ?? JSON.stringify(err)) }] });
          done();
        },
        complete: () => {
          events.push('complete');
          done();
        },
      },
    );
  });
}

/** One operation on a fresh client, disposed afterwards. */
export async function wsOnce(
  api: TestApi,
  token: string | null,
  query: string,
  variables: Record<string, unknown>,
  opts: Parameters<typeof wsRun>[3] = {},
): Promise<WsEvent[]> {
  const client = wsClient(api, bearer(token));
  try {
    return await wsRun(client, query, variables, opts);
  } finally {
    await client.dispose();
  }
}

/** Responses of `gql` with the parts that vary between identical answers (nothing, today) removed. */
export function bodyOf(res: GqlResponse): string {
  return JSON.stringify({ data: res.data ?? null, errors: res.errors ?? null });
}

/**
 * One operation over GraphQL over Server-Sent Events (the API serves subscriptions on POST
 * /graphql with `Accept: text/event-stream` too), collected like wsRun's: until the server
 * completes it, `until` says enough, or `waitMs` passes. A non-200 answer is recorded as `closed`
 * with the HTTP status.
 */
export async function sseRun(
  api: TestApi,
  authorization: string | null,
  query: string,
  variables: Record<string, unknown>,
  opts: { until?: (events: WsEvent[]) => boolean; waitMs?: number } = {},
): Promise<WsEvent[]> {
  const events: WsEvent[] = [];
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), opts.waitMs ?? 3_000);
  try {
    const res = await fetch(api.url, {
      method: 'POST',
      signal: abort.signal,
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...(authorization !== null ? { authorization } : {}) },
      body: JSON.stringify({ query, variables }),
    });
    if (res.status !== 200 || !res.headers.get('content-type')?.startsWith('text/event-stream')) {
      events.push({ closed: { code: res.status, reason: (await res.text()).slice(0, 300) } });
      return events;
    }
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
        if (event === 'complete') {
          events.push('complete');
          return events;
        }
        if (event === 'next') events.push({ next: JSON.parse(data) });
        if (opts.until?.(events)) return events;
      }
    }
  } catch (err) {
    if (!abort.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
  return events;
}
