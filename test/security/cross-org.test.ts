// Hostile client, organization boundary: for every Query, Mutation and Subscription field, every
// argument that carries an ID (at any depth of its input) and every pagination cursor, organization
// B sends organization A's ids of every kind (as A's own queries and node(id:) hand them out),
// A's row ids re-encoded as every other type, upper-cased ids and random ids of every type, and
// must get nothing: null, an empty page or a typed error, exactly what a random id of the same
// type gets, with no byte of A's data (A's marker, ids, row ids or cursors) in the answer, and A's
// rows unchanged afterwards. The table of fields below is checked against the schema: a field or
// an ID argument added later fails the coverage test until it has a case here.
// (test/cross-org.test.ts holds the older hand-written cases, kept as they are.)
import { HTTP_SUBSCRIPTION_REFUSED } from '../../src/graphql/http-subscriptions.js';
import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { getNamedType, getNullableType, isInputObjectType, isListType, type GraphQLField, type GraphQLInputType } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { schema } from '../../src/graphql/schema.js';
import { signUp, startTestApi, type GqlResponse, type TestApi } from '../helpers/api.js';
import {
  RESULT,
  SUITE_ENV,
  RESULT_ID,
  bodyOf,
  decodeIfGlobal,
  harvest,
  leaksIn,
  localOf,
  newKey,
  newModel,
  newPausedSession,
  newProfile,
  newSession,
  newStorageProfile,
  orgRows,
    q,
  seedOrg,
  spareUser,
  unique,
  wsClient,
  wsRun,
  sseRun,
  bearer,
  type Harvest,
  type OrgFixture,
  type WsEvent,
} from '../helpers/hostile.js';

let api: TestApi;
let A: OrgFixture;
let B: OrgFixture;
let HA: Harvest;

type Kind = 'query' | 'mutation' | 'subscription';
const KINDS: Record<Kind, string> = { query: 'Query', mutation: 'Mutation', subscription: 'Subscription' };

/** The callers acting for organization B. */
const CALLERS: [string, () => string][] = [
  ['B user', () => B.owner.token],
  ['B API key', () => B.key.secret],
];

// --- The cases -------------------------------------------------------------------------------------

interface Slot {
  /** The type of ID the argument takes; '*' for any Node type (node(id:)); 'cursor' for after/before. */
  type: string;
  /** B's own value for the slot, made fresh where the positive control consumes it. */
  own?: () => string | Promise<string>;
  /** Variables besides the slot (instead of the field's). */
  base?: () => Record<string, unknown>;
  /** At most this many of A's rows re-encoded as the slot's type (each costs the server scrypt time in signIn). */
  confusions?: number;
}

interface FieldCase {
  kind: Kind;
  doc: string;
  /** Valid variables for B, so that the hostile value is the only thing wrong. */
  base: () => Record<string, unknown>;
  slots: Record<string, Slot>;
  /** Who may call it; signIn is anonymous (one caller is enough, each call costs scrypt time). */
  anonymous?: true;
}

const page = (field: string, args: string, node: string) => `query($after: String, $before: String, $first: Int, $last: Int) {
  ${field}(after: $after, before: $before, first: $first, last: $last${args}) { totalCount edges { cursor node { ${node} } } } }`;
const cursorSlots = (): Record<string, Slot> => ({
  after: { type: 'cursor', base: () => ({ first: 100 }) },
  before: { type: 'cursor', base: () => ({ last: 100 }) },
});
const mutation = (field: string, signature: string, args: string, success: string) =>
  `mutation(${signature}) { ${field}(${args}) { ${['createComputeProfile', 'signIn'].includes(field) ? RESULT : RESULT_ID} ... on ${field[0].toUpperCase()}${field.slice(1)}Success { ${success} } } }`;

const FIELDS: Record<string, FieldCase> = {
  // Queries
  'Query.model': {
    kind: 'query',
    doc: 'query($id: ID!) { model(id: $id) { id name description versions { id } } }',
    base: () => ({}),
    slots: { id: { type: 'Model', own: () => B.model } },
  },
  'Query.dataset': {
    kind: 'query',
    doc: 'query($id: ID!) { dataset(id: $id) { id name description versions { id status } } }',
    base: () => ({}),
    slots: { id: { type: 'Dataset', own: () => B.dataset } },
  },
  'Query.computeProfile': {
    kind: 'query',
    doc: 'query($id: ID!) { computeProfile(id: $id) { id name config credentialsHint fallbackProfileIds } }',
    base: () => ({}),
    slots: { id: { type: 'ComputeProfile', own: () => B.sagemakerProfile } },
  },
  'Query.trainingSession': {
    kind: 'query',
    doc: `query($id: ID!) { trainingSession(id: $id) { id status config model { id name } datasetVersion { id } computeProfile { id }
      latestEpoch { id metrics } artifacts { id name } } }`,
    base: () => ({}),
    slots: { id: { type: 'TrainingSession', own: () => B.session } },
  },
  'Query.node': {
    kind: 'query',
    doc: 'query($id: ID!) { node(id: $id) { __typename id } }',
    base: () => ({}),
    slots: { id: { type: '*', own: () => B.model } },
  },
  'Query.trainingSessions': {
    kind: 'query',
    doc: `query($filter: TrainingSessionFilter, $after: String, $before: String, $first: Int, $last: Int) {
      trainingSessions(filter: $filter, after: $after, before: $before, first: $first, last: $last) {
        totalCount edges { cursor node { id model { id } datasetVersion { id } } } } }`,
    base: () => ({ first: 100 }),
    slots: { 'filter.modelId': { type: 'Model', own: () => B.model }, ...cursorSlots() },
  },
  'Query.models': { kind: 'query', doc: page('models', ', includeArchived: true', 'id name'), base: () => ({ first: 100 }), slots: cursorSlots() },
  'Query.datasets': { kind: 'query', doc: page('datasets', '', 'id name'), base: () => ({ first: 100 }), slots: cursorSlots() },
  'Query.computeProfiles': { kind: 'query', doc: page('computeProfiles', '', 'id name'), base: () => ({ first: 100 }), slots: cursorSlots() },

  // Mutations
  'Mutation.updateModel': {
    kind: 'mutation',
    doc: mutation('updateModel', '$id: ID!, $input: UpdateModelInput!', 'id: $id, input: $input', 'model { id name }'),
    base: () => ({ input: { description: 'changed by B' } }),
    slots: { id: { type: 'Model', own: () => B.model } },
  },
  'Mutation.archiveModel': {
    kind: 'mutation',
    doc: mutation('archiveModel', '$id: ID!', 'id: $id', 'model { id }'),
    base: () => ({}),
    slots: { id: { type: 'Model', own: () => newModel(api, B.owner.token, unique('to archive')) } },
  },
  'Mutation.unarchiveModel': {
    kind: 'mutation',
    doc: mutation('unarchiveModel', '$id: ID!', 'id: $id', 'model { id }'),
    base: () => ({}),
    slots: {
      id: {
        type: 'Model',
        own: async () => {
          const id = await newModel(api, B.owner.token, unique('to unarchive'));
          await api.gql(q.archiveModel, { id }, B.owner.token);
          return id;
        },
      },
    },
  },
  'Mutation.createDatasetVersion': {
    kind: 'mutation',
    doc: mutation('createDatasetVersion', '$input: CreateDatasetVersionInput!', 'input: $input', 'datasetVersionUpload { version { id } }'),
    base: () => ({ input: { format: 'YOLO', filename: 'shapes.tar.gz' } }),
    slots: { 'input.datasetId': { type: 'Dataset', own: () => B.dataset } },
  },
  'Mutation.finalizeDatasetVersion': {
    kind: 'mutation',
    doc: mutation('finalizeDatasetVersion', '$id: ID!', 'id: $id', 'datasetVersion { id status }'),
    base: () => ({}),
    // B's uploaded version: new uploads would go to B's default storage, a dead endpoint.
    slots: { id: { type: 'DatasetVersion', own: () => B.uploadedVersion } },
  },
  'Mutation.createComputeProfile': {
    kind: 'mutation',
    doc: mutation('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input', 'computeProfile { id fallbackProfileIds }'),
    base: () => ({ input: { name: unique('borrower'), provider: 'PLATFORM', strategy: 'PREFERRED' } }),
    slots: { 'input.fallbackProfileIds[]': { type: 'ComputeProfile', own: () => B.platformProfile } },
  },
  'Mutation.updateComputeProfile': {
    kind: 'mutation',
    doc: mutation('updateComputeProfile', '$id: ID!, $input: UpdateComputeProfileInput!', 'id: $id, input: $input', 'computeProfile { id fallbackProfileIds }'),
    base: () => ({ id: B.sagemakerProfile, input: { maxConcurrentJobs: 3 } }),
    slots: {
      id: { type: 'ComputeProfile', own: () => B.sagemakerProfile },
      'input.fallbackProfileIds[]': { type: 'ComputeProfile', own: () => B.platformProfile },
    },
  },
  'Mutation.deleteComputeProfile': {
    kind: 'mutation',
    doc: mutation('deleteComputeProfile', '$id: ID!', 'id: $id', 'computeProfile { id }'),
    base: () => ({}),
    slots: { id: { type: 'ComputeProfile', own: () => newProfile(api, B.owner.token, unique('to delete')) } },
  },
  'Mutation.updateStorageProfile': {
    kind: 'mutation',
    doc: mutation('updateStorageProfile', '$id: ID!, $input: UpdateStorageProfileInput!', 'id: $id, input: $input', 'storageProfile { id name }'),
    base: () => ({ input: { name: unique('renamed by B') } }),
    slots: { id: { type: 'StorageProfile', own: () => B.storageProfile } },
  },
  'Mutation.deleteStorageProfile': {
    kind: 'mutation',
    doc: mutation('deleteStorageProfile', '$id: ID!', 'id: $id', 'storageProfile { id }'),
    base: () => ({}),
    slots: { id: { type: 'StorageProfile', own: () => newStorageProfile(api, B.owner.token, unique('to delete'), B.marker) } },
  },
  'Mutation.checkStorageProfile': {
    kind: 'mutation',
    doc: mutation('checkStorageProfile', '$id: ID!', 'id: $id', 'check { ok reason }'),
    base: () => ({}),
    slots: { id: { type: 'StorageProfile', own: () => B.storageProfile } },
  },
  'Mutation.trainModel': {
    kind: 'mutation',
    doc: mutation('trainModel', '$modelId: ID!, $input: TrainModelInput!', 'modelId: $modelId, input: $input', 'trainingSession { id }'),
    base: () => ({
      modelId: B.model,
      input: { datasetVersionId: B.datasetVersion, computeProfileId: B.platformProfile, config: { epochs: 1 } },
    }),
    slots: {
      modelId: { type: 'Model', own: () => B.model },
      'input.datasetVersionId': { type: 'DatasetVersion', own: () => B.datasetVersion },
      'input.computeProfileId': { type: 'ComputeProfile', own: () => B.platformProfile },
    },
  },
  'Mutation.cancelTrainingSession': {
    kind: 'mutation',
    doc: mutation('cancelTrainingSession', '$id: ID!', 'id: $id', 'trainingSession { id status }'),
    base: () => ({}),
    slots: { id: { type: 'TrainingSession', own: () => newSession(api, B) } },
  },
  'Mutation.resumeTrainingSession': {
    kind: 'mutation',
    doc: mutation('resumeTrainingSession', '$id: ID!', 'id: $id', 'trainingSession { id status }'),
    base: () => ({}),
    slots: { id: { type: 'TrainingSession', own: () => newPausedSession(api, B) } },
  },
  'Mutation.revokeApiKey': {
    kind: 'mutation',
    doc: mutation('revokeApiKey', '$id: ID!', 'id: $id', 'apiKey { id revokedAt }'),
    base: () => ({}),
    slots: { id: { type: 'ApiKey', own: async () => (await newKey(api, B.owner.token, 'VIEWER')).id } },
  },
  'Mutation.removeMember': {
    kind: 'mutation',
    doc: mutation('removeMember', '$userId: ID!', 'userId: $userId', 'membership { role user { id } }'),
    base: () => ({}),
    slots: {
      userId: {
        type: 'User',
        own: async () => {
          const user = await spareUser(api);
          await api.gql(q.addMember, { input: { email: user.email, role: 'VIEWER' } }, B.owner.token);
          return user.userId;
        },
      },
    },
  },
  'Mutation.signIn': {
    kind: 'mutation',
    doc: mutation('signIn', '$input: SignInInput!', 'input: $input', 'authPayload { token role organization { id name } }'),
    // B's own credentials, asking to act for another organization.
    base: () => ({ input: { email: B.owner.email, password: B.owner.password } }),
    slots: { 'input.organizationId': { type: 'Organization', own: () => B.owner.orgId, confusions: 4 } },
    anonymous: true,
  },

  // Subscriptions
  'Subscription.trainingSessionUpdated': {
    kind: 'subscription',
    doc: 'subscription($id: ID!) { trainingSessionUpdated(id: $id) { id status model { id name } datasetVersion { id } } }',
    base: () => ({}),
    slots: { id: { type: 'TrainingSession', own: () => B.session } },
  },
  'Subscription.trainingEpochs': {
    kind: 'subscription',
    doc: 'subscription($sessionId: ID!, $sinceEpoch: Int) { trainingEpochs(sessionId: $sessionId, sinceEpoch: $sinceEpoch) { id epoch metrics } }',
    base: () => ({ sinceEpoch: 0 }),
    slots: { sessionId: { type: 'TrainingSession', own: () => B.session } },
  },
  'Subscription.trainingLogs': {
    kind: 'subscription',
    doc: 'subscription($sessionId: ID!) { trainingLogs(sessionId: $sessionId) { stream line attempt } }',
    base: () => ({}),
    // Live only: the positive control (B's lines reach B) publishes while it listens.
    slots: { sessionId: { type: 'TrainingSession', own: () => B.session } },
  },
};

/**
 * Fields that take no ID and no cursor. Each says why no id of A can reach it and checks, as each
 * B caller, that the answer holds nothing of A (and, where it lists, that A's own answer does).
 */
const NO_ID: Record<string, { why: string; check: () => Promise<void> }> = {
  'Query.viewer': {
    why: "the caller's own organization and members",
    check: () => listCheck('{ viewer { role organization { id name members { role user { id email } } } apiKey { id name } user { id email } } }'),
  },
  'Query.apiKeys': { why: "the caller's organization's keys", check: () => listCheck('{ apiKeys { id name hint role } }') },
  'Query.members': { why: "the caller's organization's members", check: () => listCheck('{ members { role user { id email } } }') },
  'Query.storageProfiles': {
    why: "the caller's organization's storage profiles",
    check: () => listCheck('{ storageProfiles { id name config credentialsHint } }'),
  },
  'Query.gpuNodes': {
    why: "platform nodes are shared by design; what they run is not exposed by session",
    check: async () => {
      await registerNode(`xorg-${randomUUID().slice(0, 8)}`, [localOf(A.session)]);
      await listCheck('{ gpuNodes { id host status runningJobs slots gpus { name } } }', { aSees: false });
    },
  },
  'Mutation.createModel': {
    why: "names are per organization: B reuses A's model name and gets its own model",
    check: () => noIdMutation('createModel', q.createModel, (label) => ({ input: { name: aName(`${A.marker} detector`, label), task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' } })),
  },
  'Mutation.createDataset': {
    why: "names are per organization: B reuses A's dataset name",
    check: () => noIdMutation('createDataset', q.createDataset, (label) => ({ input: { name: aName(`${A.marker} shapes`, label), task: 'OBJECT_DETECTION' } })),
  },
  'Mutation.createStorageProfile': {
    why: "B's profile may name A's bucket: its keys still live under B's prefix; A's profile and default are untouched",
    check: () =>
      noIdMutation('createStorageProfile', q.createStorage, (label) => ({
        input: { name: aName(`${A.marker} lake`, label), kind: 'S3', config: { ...A_S3(), bucket: `${A.marker}-bucket` }, credentials: { accessKeyId: 'AKIABBBBBBBBBBBBBBBB', secretAccessKey: 'b-secret-access-key-0123456789' } },
      })),
  },
  'Mutation.createApiKey': {
    why: 'a new key acts for the caller\'s organization only',
    check: async () => {
      await noIdMutation('createApiKey', q.createKey, (label) => ({ input: { name: aName(`${A.marker} ci`, label), role: 'OWNER' } }), async (result) => {
        const viewer = await api.gql('{ viewer { organization { id } } }', {}, result.createdApiKey.secret);
        expect(viewer.data.viewer.organization.id).toBe(B.owner.orgId);
      });
    },
  },
  'Mutation.addMember': {
    why: "adds an account to the caller's organization; A's memberships are untouched",
    check: async () => {
      await noIdMutation('addMember', q.addMember, () => ({ input: { email: '', role: 'VIEWER' } }), undefined, async () => (await spareUser(api)).email);
    },
  },
  'Mutation.signUp': {
    why: "a new organization with A's exact name is a separate, empty one",
    check: async () => {
      const before = await snapshotA();
      const twin = await signUp(api, A.orgName);
      expect(twin.orgId).not.toBe(A.owner.orgId);
      const res = await api.gql('{ viewer { organization { name members { user { id } } } } models(includeArchived: true) { totalCount } trainingSessions { totalCount } }', {}, twin.token);
      expect(res.data.models.totalCount).toBe(0);
      expect(res.data.trainingSessions.totalCount).toBe(0);
      expect(leaksIn(bodyOf(res), { marker: A.marker, harvest: HA }, [], { marker: false })).toEqual([]);
      expect(await snapshotA()).toEqual(before);
    },
  },
  'Subscription.gpuNodeUpdated': {
    why: 'platform nodes are shared by design; an update of a node running A\'s session carries nothing of A',
    check: async () => {
      const nodeId = `xorg-${randomUUID().slice(0, 8)}`;
      for (const [, token] of CALLERS) {
        const client = wsClient(api, bearer(token()));
        let registering = true;
        const loop = (async () => {
          while (registering) {
            await registerNode(nodeId, [localOf(A.session)]);
            await new Promise((r) => setTimeout(r, 150));
          }
        })();
        try {
          const events = await wsRun(client, 'subscription { gpuNodeUpdated { id host status runningJobs slots gpus { name uuid } } }', {}, {
            until: (e) => e.some((x) => typeof x === 'object' && 'next' in x && x.next.data?.gpuNodeUpdated?.id === nodeId),
            waitMs: 8_000,
          });
          expect(events.some((x) => typeof x === 'object' && 'next' in x && x.next.data?.gpuNodeUpdated?.id === nodeId)).toBe(true);
          expect(leaksIn(JSON.stringify(events), { marker: A.marker, harvest: HA })).toEqual([]);
        } finally {
          registering = false;
          await loop;
          await client.dispose();
        }
      }
    },
  },
};

/** A's exact name for the first caller; both act for B, so the second would meet B's own copy. */
const aName = (name: string, label: string) => (label === CALLERS[0][0] ? name : `${name} (${label})`);

const A_S3 = () => ({ region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true });

async function registerNode(nodeId: string, runningSessionIds: string[]) {
  const origin = new URL(api.url).origin;
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${api.app.config.nodeToken}` };
  const reg = await fetch(`${origin}/node/v1/register`, { method: 'POST', headers, body: JSON.stringify({ nodeId, host: 'shared-gpu-host', version: '1', slots: 1, gpus: [] }) });
  expect(reg.status).toBe(200);
  const beat = await fetch(`${origin}/node/v1/heartbeat`, { method: 'POST', headers, body: JSON.stringify({ nodeId, status: 'ONLINE', gpus: [], runningSessionIds }) });
  expect(beat.status).toBe(200);
}

/** As each B caller: the answer holds nothing of A; as A (a positive control), it holds A's ids. */
async function listCheck(query: string, opts: { aSees?: boolean } = {}) {
  if (opts.aSees !== false) {
    const own = await api.gql(query, {}, A.owner.token);
    expect(own.errors).toBeUndefined();
    expect(leaksIn(bodyOf(own), { marker: A.marker, harvest: HA }).length).toBeGreaterThan(0);
  }
  for (const [label, token] of CALLERS) {
    const res = await api.gql(query, {}, token());
    expect(res.errors, label).toBeUndefined();
    expect(leaksIn(bodyOf(res), { marker: A.marker, harvest: HA }), label).toEqual([]);
  }
}

/** A mutation that takes no id, run by each B caller with A's names: it succeeds for B, holds nothing of A, and A is unchanged. */
async function noIdMutation(
  field: string,
  doc: string,
  variables: (label: string) => Record<string, any>,
  then?: (result: any) => Promise<void>,
  email?: () => Promise<string>,
) {
  const before = await snapshotA();
  for (const [label, token] of CALLERS) {
    const vars = variables(label);
    if (email) vars.input.email = await email();
    const res = await api.gql(doc, vars, token());
    expect(res.errors, label).toBeUndefined();
    expect(res.data[field].__typename, JSON.stringify(res.data[field])).toMatch(/Success$/);
    // B sent A's names itself, so only A's ids and cursors count here.
    expect(leaksIn(bodyOf(res), { marker: A.marker, harvest: HA }, [], { marker: false })).toEqual([]);
    await then?.(res.data[field]);
  }
  expect(await snapshotA()).toEqual(before);
}

// --- The hostile values ----------------------------------------------------------------------------

interface Hostile {
  sent: string;
  /** The type the id names (its guessed twin has the same). */
  type: string;
  origin: string;
}

let NODE_TYPES: string[];
/** Every type an id can name: the Node types, and Artifact (an ID that is not a Node). */
let ID_TYPES: string[];

/**
 * Every A id of the slot's type (as is and upper-cased), one A id of each other type, and one A
 * row of each type re-encoded as the slot's type (for node(id:), as every Node type): the type
 * must be checked, not only the row id. `sameTypeOnly` keeps the ids that name the slot's type,
 * the ones a lookup is made for (the second caller's share).
 */
function hostileIds(slotType: string, opts: { confusions?: number; sameTypeOnly?: boolean } = {}): Hostile[] {
  const out: Hostile[] = [];
  const rows: { type: string; uuid: string }[] = [];
  for (const [type, ids] of HA.ids) {
    const all = [...ids];
    const own = slotType === type || slotType === '*';
    for (const id of own ? all : all.slice(0, 1)) {
      out.push({ sent: id, type, origin: `A's ${type}` });
      if (own) out.push({ sent: encodeGlobalID(type, decodeIfGlobal(id)!.id.toUpperCase()), type, origin: `A's ${type}, upper-cased` });
    }
    rows.push({ type, uuid: decodeIfGlobal(all[0])!.id });
  }
  const targets = slotType === '*' ? NODE_TYPES : [slotType];
  let confused = 0;
  for (const r of rows) {
    if (confused >= (opts.confusions ?? Infinity)) break;
    if (r.type === slotType) continue;
    confused++;
    for (const t of targets) if (t !== r.type) out.push({ sent: encodeGlobalID(t, r.uuid), type: t, origin: `A's ${r.type} row as ${t}` });
  }
  return opts.sameTypeOnly ? out.filter((h) => (slotType === '*' ? !h.origin.includes(' row as ') : h.type === slotType)) : out;
}

/** A random id of each type: what "does not exist" looks like. */
function guesses(): Map<string, string> {
  return new Map(ID_TYPES.map((t) => [t, encodeGlobalID(t, randomUUID())]));
}

/** A's cursors, and cursors forged from A's rows' ids. */
function hostileCursors(): Hostile[] {
  const out: Hostile[] = [...HA.cursors].map((c) => ({ sent: c, type: 'cursor', origin: "A's cursor" }));
  for (const uuid of HA.uuids) {
    out.push({ sent: Buffer.from(`${new Date().toISOString()}|${uuid}`).toString('base64url'), type: 'cursor', origin: "cursor forged from A's row id" });
  }
  return out;
}

// --- Running a case --------------------------------------------------------------------------------

function setAt(vars: Record<string, any>, path: string, value: string) {
  const parts = path.split('.');
  let at = vars;
  for (const [i, raw] of parts.entries()) {
    const list = raw.endsWith('[]');
    const name = list ? raw.slice(0, -2) : raw;
    if (i === parts.length - 1) at[name] = list ? [value] : value;
    else at = at[name] = { ...(at[name] ?? {}) };
  }
  return vars;
}

function variablesFor(c: FieldCase, slotPath: string, value: string) {
  const slot = c.slots[slotPath];
  return setAt(structuredClone(slot.base ? slot.base() : c.base()), slotPath, value);
}

const fieldName = (key: string) => key.split('.')[1];

/**
 * Why `res` is more than nothing, or null when it is nothing. A GraphQL error carries no data and
 * counts as nothing here whatever its code (an untyped one is the id-shape tests' business); that
 * it says no more about A's id than about a random one is checked by comparing the two answers.
 */
function notNothing(field: string, data: any, errors: GqlResponse['errors']): string | null {
  for (const e of errors ?? []) {
    if (e.extensions?.code === 'GRAPHQL_VALIDATION_FAILED') return `an invalid document (a defect of this test): ${e.message}`;
  }
  const value = data?.[field];
  if (value == null) return null;
  if (Array.isArray(value)) return value.length ? 'a non-empty list' : null;
  if (typeof value === 'object') {
    // A typed error (NotFoundError, ValidationError, ...) is nothing; any other member of a result union is something.
    if (typeof value.__typename === 'string' && /Error$/.test(value.__typename) && !/Success$/.test(value.__typename)) return null;
    if (Array.isArray(value.edges)) return value.edges.length || value.totalCount ? 'a non-empty page' : null;
    return `${value.__typename ?? 'an object'}: ${JSON.stringify(value)}`;
  }
  return `a value: ${JSON.stringify(value)}`;
}

/** The sent value as the server may echo it: as sent, its row id, and its canonical (lower-case) global ID. */
function echoesOf(sent: string): string[] {
  const d = decodeIfGlobal(sent);
  return d ? [sent, encodeGlobalID(d.typename, d.id.toLowerCase()), d.id] : [sent];
}

/** The answer with the sent id replaced (in every form it may be echoed), to compare with a guess's. */
function normalized(text: string, sent: string): string {
  const [asSent, canonical, uuid] = echoesOf(sent);
  let t = text.split(asSent).join('<ID>');
  if (canonical) t = t.split(canonical).join('<ID>');
  if (uuid) t = t.replace(new RegExp(uuid, 'gi'), '<UUID>');
  return t;
}

async function inBatches<T, R>(items: T[], size: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

/** An HTTP answer, or for subscriptions what a graphql-ws subscription received. */
async function call(c: FieldCase, vars: Record<string, unknown>, token: string | null, ws?: ReturnType<typeof wsClient>): Promise<{ text: string; problem: string | null }> {
  const field = fieldName(Object.entries(FIELDS).find(([, v]) => v === c)![0]);
  if (c.kind === 'subscription') {
    const events = await wsRun(ws!, c.doc, vars, { waitMs: 3_000 });
    return { text: JSON.stringify(events), problem: subscriptionProblem(events) };
  }
  const res = await api.gql(c.doc, vars, token);
  return { text: bodyOf(res), problem: notNothing(field, res.data, res.errors) };
}

/** Nothing, for a subscription: no data at all; it ends with NOT_FOUND or BAD_USER_INPUT (or a closed socket). */
function subscriptionProblem(events: WsEvent[]): string | null {
  if (events.length === 0) return 'no answer within 3 s (the subscription stayed open)';
  for (const e of events) {
    if (e === 'complete' || 'closed' in e) continue;
    if ('next' in e) {
      if (e.next.data) return `data ${JSON.stringify(e.next.data)}`;
      const p = notNothing('_', null, e.next.errors);
      if (p) return p;
    } else {
      const p = notNothing('_', null, e.error as GqlResponse['errors']);
      if (p) return p;
    }
  }
  return null;
}

/** A's state through A's own queries, and A's rows straight from the database (writes the API would not show). */
const A_STATE = `{
  viewer { organization { id name } }
  models(first: 100, includeArchived: true) { totalCount edges { node { id name description architecture archivedAt updatedAt versions { id } } } }
  datasets(first: 100) { totalCount edges { node { id name description updatedAt versions { id version status sha256 sizeBytes finalizedAt } } } }
  computeProfiles(first: 100) { totalCount edges { node { id name strategy config hasCredentials credentialsHint
    fallbackProfileIds isDefault maxConcurrentJobs maxCostPerSessionUsd updatedAt } } }
  trainingSessions(first: 100) { totalCount edges { node { id status attempt cancelRequested finishedAt computeProfile { id }
    artifacts { id sha256 } epochs { totalCount } } } }
  storageProfiles { id name kind config isDefault credentialsHint updatedAt }
  apiKeys { id name role revokedAt }
  members { role user { id email } }
}`;
async function snapshotA() {
  const res = await api.gql(A_STATE, {}, A.owner.token);
  expect(res.errors).toBeUndefined();
  return { api: res.data, rows: await orgRows(api, A) };
}

async function runSlot(key: string, slotPath: string) {
  const c = FIELDS[key];
  const slot = c.slots[slotPath];
  const field = fieldName(key);
  const guess = guesses();
  const callers: [string, string | null][] = c.anonymous ? [['anonymous', null]] : CALLERS.map(([l, t]) => [l, t()]);
  const before = { a: await snapshotA(), b: await orgRows(api, B) };
  const failures: string[] = [];
  let count = 0;
  for (const [i, [label, token]] of callers.entries()) {
    // Ids of another type are refused before any lookup, whoever calls: the first caller sends
    // them all, the second only the ids its organization's lookups see.
    const values =
      slot.type === 'cursor' ? hostileCursors() : hostileIds(slot.type, { confusions: slot.confusions, sameTypeOnly: i > 0 });
    count += values.length;
    const ws = c.kind === 'subscription' ? wsClient(api, bearer(token)) : undefined;
    try {
      // Subscriptions share one socket per caller, one operation at a time.
      const run = (sent: string) => call(c, variablesFor(c, slotPath, sent), token, ws);
      const guessed = new Map<string, string>();
      if (slot.type !== 'cursor') {
        await inBatches([...guess].filter(([type]) => i === 0 || slot.type === '*' || type === slot.type), 4, async ([type, id]) => {
          const r = await run(id);
          if (r.problem) failures.push(`${label}: a random ${type} id got ${r.problem}`);
          guessed.set(type, normalized(r.text, id));
        });
      }
      const results = await inBatches(values, 4, async (h) => ({ h, r: await run(h.sent) }));
      for (const { h, r } of results) {
        const leaks = leaksIn(r.text, { marker: A.marker, harvest: HA }, echoesOf(h.sent));
        if (leaks.length) failures.push(`${label}: ${h.origin} (${h.sent}) leaked ${leaks.join(', ')}: ${r.text}`);
        if (slot.type === 'cursor') {
          if (r.problem && !/a non-empty page/.test(r.problem)) failures.push(`${label}: ${h.origin} got ${r.problem}`);
          continue;
        }
        if (r.problem) failures.push(`${label}: ${h.origin} (${h.sent}) got ${r.problem}`);
        // Exactly what an id of the same type that exists nowhere gets.
        const twin = guessed.get(h.type);
        if (twin !== undefined && normalized(r.text, h.sent) !== twin) {
          failures.push(`${label}: ${h.origin} is told apart from a random ${h.type} id:\n  ${normalized(r.text, h.sent)}\n  ${twin}`);
        }
      }
    } finally {
      await ws?.dispose();
    }
  }
  expect(failures).toEqual([]);
  // Nothing of A changed, and a refused call wrote nothing for B either.
  const after = { a: await snapshotA(), b: await orgRows(api, B) };
  expect(after.a).toEqual(before.a);
  expect(after.b).toEqual(before.b);
  return count;
}

/** The positive control: the same document with B's own value works for B, so the refusals above were about A. */
async function positive(key: string, slotPath: string) {
  const c = FIELDS[key];
  const slot = c.slots[slotPath];
  const field = fieldName(key);
  if (slot.type === 'cursor') {
    // After B's newest, or before B's oldest: every other row of B, and only those.
    const all = (await api.gql(c.doc, c.base(), B.owner.token)).data[field].edges.map((e: any) => e.cursor);
    expect(all.length).toBeGreaterThan(1);
    const cursor = slotPath === 'after' ? all[0] : all[all.length - 1];
    const res = await api.gql(c.doc, variablesFor(c, slotPath, cursor), B.owner.token);
    expect(res.errors).toBeUndefined();
    const got: string[] = res.data[field].edges.map((e: any) => e.cursor);
    for (const x of got) expect(all).toContain(x);
    // Exact both ways since sessions are stored at their cursor's millisecond (session-cursors.test.ts).
    expect(got.sort()).toEqual(all.filter((x: string) => x !== cursor).sort());
    return;
  }
  const token = c.anonymous ? null : B.owner.token;
  const own = await slot.own!();
  if (c.kind === 'subscription') {
    const ws = wsClient(api, bearer(token));
    let publishing = field === 'trainingLogs';
    const publish = (async () => {
      while (publishing) {
        api.app.topics.publish(api.app.redisNames.logsChannel(localOf(own)), { sessionId: localOf(own), attempt: 1, stream: 'stdout', line: 'B line', ts: new Date().toISOString() });
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    try {
      const events = await wsRun(ws, c.doc, variablesFor(c, slotPath, own), { until: (e) => e.length > 0, waitMs: 5_000 });
      expect(events[0]).toHaveProperty('next.data');
    } finally {
      publishing = false;
      await publish;
      await ws.dispose();
    }
    return;
  }
  const res = await api.gql(c.doc, variablesFor(c, slotPath, own), token);
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  const value = res.data[field];
  if (c.kind === 'mutation') expect(value.__typename, JSON.stringify(value)).toMatch(/Success$/);
  else expect(notNothing(field, res.data, res.errors)).not.toBeNull();
}

// --- The schema's fields and their ID arguments ----------------------------------------------------

/** Every argument path of a field that carries an ID (inputs walked to any depth) or a cursor. */
function slotsOf(field: GraphQLField<unknown, unknown>): string[] {
  const out: string[] = [];
  const walk = (type: GraphQLInputType, path: string, seen: Set<string>) => {
    const list = isListType(getNullableType(type));
    const named = getNamedType(type);
    const at = list ? `${path}[]` : path;
    if (named.name === 'ID') out.push(at);
    else if (isInputObjectType(named) && !seen.has(named.name)) {
      for (const f of Object.values(named.getFields())) walk(f.type, `${at}.${f.name}`, new Set([...seen, named.name]));
    }
  };
  for (const arg of field.args) {
    if ((arg.name === 'after' || arg.name === 'before') && getNamedType(arg.type).name === 'String') out.push(arg.name);
    else walk(arg.type, arg.name, new Set());
  }
  return out.sort();
}

function schemaFields(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [kind, root] of [['Query', schema.getQueryType()], ['Mutation', schema.getMutationType()], ['Subscription', schema.getSubscriptionType()]] as const) {
    for (const f of Object.values(root?.getFields() ?? {})) out.set(`${kind}.${f.name}`, slotsOf(f));
  }
  return out;
}

const SLOT_CASES = Object.entries(FIELDS).flatMap(([key, c]) => Object.keys(c.slots).map((slot) => [`${key}(${slot})`, key, slot] as const));

beforeAll(async () => {
  NODE_TYPES = schema.getPossibleTypes(schema.getType('Node') as never).map((t) => t.name).sort();
  ID_TYPES = [...NODE_TYPES, 'Artifact'];
  api = await startTestApi({ env: SUITE_ENV });
  A = await seedOrg(api, 'A');
  B = await seedOrg(api, 'B');
  HA = await harvest(api, A.owner.token);
}, 120_000);
afterAll(() => api?.close());

describe('coverage', () => {
  it('every Query, Mutation and Subscription field has a case, with exactly the ID and cursor arguments the schema gives it', () => {
    const fromSchema = schemaFields();
    const listed = new Map<string, string[]>([
      ...Object.entries(FIELDS).map(([k, c]) => [k, Object.keys(c.slots).sort()] as [string, string[]]),
      ...Object.keys(NO_ID).map((k) => [k, []] as [string, string[]]),
    ]);
    // A field added to the schema, or an ID argument added to a field, needs a case in FIELDS
    // (or, taking no id at all, in NO_ID) proving that B cannot reach A through it.
    expect(Object.fromEntries([...listed].sort())).toEqual(Object.fromEntries([...fromSchema].sort()));
    for (const [key, c] of Object.entries(FIELDS)) expect(KINDS[c.kind], key).toBe(key.split('.')[0]);
  });

  it("A's ids, as A's queries hand them out, cover every type an id can name", async () => {
    expect([...HA.ids.keys()].sort()).toEqual([...ID_TYPES].sort());
    // And node(id:) gives each Node back to A (EpochMetric rows are reached through their session only).
    for (const [type, ids] of HA.ids) {
      for (const id of ids) {
        const res = await api.gql('query($id: ID!) { node(id: $id) { __typename id } }', { id }, A.owner.token);
        if (type === 'EpochMetric' || type === 'Artifact') expect(res.data?.node ?? null).toBeNull();
        else expect(res.data.node).toEqual({ __typename: type, id });
      }
    }
  });
});

describe("B sends A's ids, A's row ids under every type name, and random ids, into every ID argument", () => {
  it.each(SLOT_CASES)('%s', async (_name, key, slot) => {
    const n = await runSlot(key, slot);
    expect(n).toBeGreaterThan(0);
  });
});

describe('fields that take no id', () => {
  it.each(Object.entries(NO_ID).map(([k, v]) => [`${k}: ${v.why}`, v] as const))('%s', async (_name, c) => {
    await c.check();
  });
});

describe('the same queries and mutations over graphql-ws', () => {
  it.each(CALLERS)("as %s, A's ids of the argument's type get nothing over the websocket either", async (_label, token) => {
    const before = await snapshotA();
    const ws = wsClient(api, bearer(token()));
    const failures: string[] = [];
    try {
      for (const [key, slotPath] of SLOT_CASES.map(([, k, s]) => [k, s] as const)) {
        const c = FIELDS[key];
        const slot = c.slots[slotPath];
        if (c.kind === 'subscription' || c.anonymous || slot.type === 'cursor') continue;
        const ids = slot.type === '*' ? [...HA.ids.values()].flatMap((s) => [...s]) : [...(HA.ids.get(slot.type) ?? [])];
        for (const id of ids) {
          const events = await wsRun(ws, c.doc, variablesFor(c, slotPath, id), { waitMs: 5_000 });
          const result = events.find((e): e is { next: { data?: any; errors?: any[] } } => typeof e === 'object' && 'next' in e);
          const problem = result
            ? notNothing(fieldName(key), result.next.data, result.next.errors)
            : events.some((e) => typeof e === 'object' && 'error' in e) ? subscriptionProblem(events) : 'no result';
          if (problem) failures.push(`${key}(${slotPath}) ${id}: ${problem}`);
          const leaks = leaksIn(JSON.stringify(events), { marker: A.marker, harvest: HA }, echoesOf(id));
          if (leaks.length) failures.push(`${key}(${slotPath}) ${id}: leaked ${leaks.join(', ')}`);
        }
      }
    } finally {
      await ws.dispose();
    }
    expect(failures).toEqual([]);
    expect(await snapshotA()).toEqual(before);
  });
});

describe('subscriptions over Server-Sent Events (the same /graphql, Accept: text/event-stream)', () => {
  it.each(CALLERS)("as %s, A's sessions get nothing over SSE either", async (_label, token) => {
    const failures: string[] = [];
    for (const [key, c] of Object.entries(FIELDS)) {
      if (c.kind !== 'subscription') continue;
      for (const [slotPath, slot] of Object.entries(c.slots)) {
        for (const h of hostileIds(slot.type, { sameTypeOnly: true })) {
          const events = await sseRun(api, `Bearer ${token()}`, c.doc, variablesFor(c, slotPath, h.sent));
          const problem = subscriptionProblem(events);
          if (problem) failures.push(`${key}(${slotPath}) ${h.origin}: ${problem}`);
          const leaks = leaksIn(JSON.stringify(events), { marker: A.marker, harvest: HA }, echoesOf(h.sent));
          if (leaks.length) failures.push(`${key}(${slotPath}) ${h.origin}: leaked ${leaks.join(', ')}`);
        }
      }
    }
    expect(failures).toEqual([]);
    // Subscriptions are refused over SSE (test/security/http-subscriptions.test.ts): B's own
    // session gets the refusal too, so the answers above were not a cross-org decision alone.
    const own = await sseRun(api, `Bearer ${token()}`, FIELDS['Subscription.trainingSessionUpdated'].doc, { id: B.session }, { until: (e) => e.length > 0 });
    expect(own[0]).toMatchObject({ next: { errors: [{ message: HTTP_SUBSCRIPTION_REFUSED }] } });
    expect(own[0]).not.toHaveProperty('next.data');
  });
});

describe("positive controls: B's own values work in the same documents", () => {
  it.each(SLOT_CASES)('%s', async (_name, key, slot) => {
    await positive(key, slot);
  });
});
