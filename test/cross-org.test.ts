// Cross-organization isolation: organization B (signed in as a user, and as an API key) must not
// see, find, change or reference anything of organization A, through any query, mutation or
// node(id:). Every Query and Mutation field of the schema is listed in one of the tables below,
// and a test fails when the schema gains a field that no table lists.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { seedReadyDatasetVersion } from './helpers/seed.js';

let api: TestApi;

// What every mutation result is asked for: enough to tell which member of the union came back.
const RESULT = `__typename ... on Error { message } ... on ValidationError { field }`;
/** For mutations that take an id (their unions include NotFoundError). */
const RESULT_ID = `${RESULT} ... on NotFoundError { resource id }`;

const CREATE_MODEL = `mutation($input: CreateModelInput!) { createModel(input: $input) {
  ${RESULT} ... on CreateModelSuccess { model { id name } } } }`;
const CREATE_DATASET = `mutation($input: CreateDatasetInput!) { createDataset(input: $input) {
  ${RESULT} ... on CreateDatasetSuccess { dataset { id name } } } }`;
const CREATE_PROFILE = `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) {
  ${RESULT} ... on CreateComputeProfileSuccess { computeProfile { id isDefault } } } }`;
const UPDATE_PROFILE = `mutation($id: ID!, $input: UpdateComputeProfileInput!) { updateComputeProfile(id: $id, input: $input) {
  ${RESULT_ID} ... on UpdateComputeProfileSuccess { computeProfile { id isDefault } } } }`;
const CREATE_KEY = `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) {
  ${RESULT} ... on CreateApiKeySuccess { createdApiKey { secret apiKey { id } } } } }`;
const ADD_MEMBER = `mutation($input: AddMemberInput!) { addMember(input: $input) {
  ${RESULT} ... on AddMemberSuccess { membership { role user { id } } } } }`;
const TRAIN = `mutation($modelId: ID!, $input: TrainModelInput!) { trainModel(modelId: $modelId, input: $input) {
  ${RESULT_ID} ... on TrainModelSuccess { trainingSession { id status } } } }`;
const SIGN_IN = `mutation($input: SignInInput!) { signIn(input: $input) {
  ${RESULT} ... on SignInSuccess { authPayload { token role organization { id } } } } }`;
const SIGN_UP = `mutation($input: SignUpInput!) { signUp(input: $input) {
  ${RESULT} ... on SignUpSuccess { authPayload { token organization { id name } } } } }`;

const SAGEMAKER_CONFIG = {
  region: 'eu-west-1',
  roleArn: 'arn:aws:iam::123456789012:role/cvtrain',
  instanceType: 'ml.g5.xlarge',
  image: 'cvtrain/trainer:latest',
};
const SAGEMAKER_CREDENTIALS = { accessKeyId: 'AKIAABCDEFGHIJKLMNOP', secretAccessKey: 'cross-org-secret-access-key-0123' };

/** Everything one organization owns, as global IDs. */
interface OrgFixture {
  owner: SignedUp;
  orgName: string;
  model: string;
  archivedModel: string;
  dataset: string;
  datasetVersion: string;
  platformProfile: string;
  sagemakerProfile: string;
  session: string;
  apiKey: string;
  apiKeySecret: string;
  /** A second user who is a MEMBER of this organization. */
  member: SignedUp;
  modelVersion: string;
  epochMetric: string;
}

async function mutate(token: string, query: string, variables: Record<string, unknown>, field: string) {
  const res = await api.gql(query, variables, token);
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data[field];
}

/** Seeds one of every object through the public API (dataset versions, model versions and epochs by SQL until their API lands). */
async function seedOrg(label: string): Promise<OrgFixture> {
  const orgName = `${label} Corp ${randomUUID().slice(0, 6)}`;
  const owner = await signUp(api, orgName);
  const t = owner.token;
  const model = ok(
    await api.gql(CREATE_MODEL, {
      input: { name: 'detector', task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn', description: `${label} model` },
    }, t),
    'createModel',
    'model',
  ).id as string;
  const archivedModel = ok(
    await api.gql(CREATE_MODEL, {
      input: { name: 'old detector', task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' },
    }, t),
    'createModel',
    'model',
  ).id as string;
  ok(await api.gql(`mutation($id: ID!) { archiveModel(id: $id) { ${RESULT_ID} ... on ArchiveModelSuccess { model { id } } } }`, { id: archivedModel }, t), 'archiveModel', 'model');
  const dataset = ok(
    await api.gql(CREATE_DATASET, { input: { name: 'shapes', task: 'OBJECT_DETECTION', description: `${label} data` } }, t),
    'createDataset',
    'dataset',
  ).id as string;
  const datasetVersion = await seedReadyDatasetVersion(api, dataset, 'YOLO');
  const platformProfile = ok(
    await api.gql(CREATE_PROFILE, {
      input: { name: 'gpus', provider: 'PLATFORM', strategy: 'QUEUE', config: { gpus: 1 }, isDefault: true, maxConcurrentJobs: 2 },
    }, t),
    'createComputeProfile',
    'computeProfile',
  ).id as string;
  const sagemakerProfile = ok(
    await api.gql(CREATE_PROFILE, {
      input: {
        name: 'aws',
        provider: 'SAGEMAKER',
        strategy: 'PREFERRED',
        config: SAGEMAKER_CONFIG,
        credentials: SAGEMAKER_CREDENTIALS,
        fallbackProfileIds: [platformProfile],
        maxCostPerSessionUsd: 25,
      },
    }, t),
    'createComputeProfile',
    'computeProfile',
  ).id as string;
  const session = ok(
    await api.gql(TRAIN, { modelId: model, input: { datasetVersionId: datasetVersion, computeProfileId: platformProfile, config: { epochs: 3 } } }, t),
    'trainModel',
    'trainingSession',
  ).id as string;
  const created = ok(await api.gql(CREATE_KEY, { input: { name: `${label} ci`, role: 'OWNER' } }, t), 'createApiKey', 'createdApiKey');
  const member = await signUp(api, `${label} member home`);
  ok(await api.gql(ADD_MEMBER, { input: { email: member.email, role: 'MEMBER' } }, t), 'addMember', 'membership');

  // No public API creates these yet (the orchestrator and ingester do): insert them so node(id:) covers their types.
  const conn = api.orm.em.getConnection();
  const orgId = localOf(owner.orgId);
  const modelVersionId = randomUUID();
  await conn.execute(
    `insert into model_versions (id, created_at, updated_at, organization_id, model_id, version, session_id, metrics)
     values (?, now(), now(), ?, ?, 1, ?, ?)`,
    [modelVersionId, orgId, localOf(model), localOf(session), JSON.stringify({ 'mAP@.5': 0.5 })],
  );
  const epochId = randomUUID();
  await conn.execute(
    `insert into epoch_metrics (id, created_at, updated_at, organization_id, session_id, epoch, metrics) values (?, now(), now(), ?, ?, 1, ?)`,
    [epochId, orgId, localOf(session), JSON.stringify({ loss: 1.5 })],
  );
  return {
    owner,
    orgName,
    model,
    archivedModel,
    dataset,
    datasetVersion,
    platformProfile,
    sagemakerProfile,
    session,
    apiKey: created.apiKey.id,
    apiKeySecret: created.secret,
    member,
    modelVersion: encodeGlobalID('ModelVersion', modelVersionId),
    epochMetric: encodeGlobalID('EpochMetric', epochId),
  };
}

function localOf(globalId: string): string {
  return decodeGlobalID(globalId).id;
}

let A: OrgFixture;
let B: OrgFixture;
let bKey: string;

/** The callers acting for organization B; every table runs once per caller. */
const CALLERS: [string, () => string][] = [
  ['B user (OWNER)', () => B.owner.token],
  ['B API key (OWNER)', () => bKey],
];

// --- Queries -------------------------------------------------------------------------------------

interface ListCase {
  field: string;
  query: string;
  /** Ids found in the result. */
  ids: (data: any) => string[];
  /** totalCount, where the list is a connection. */
  total?: (data: any) => number;
  /** Which of A's objects the list would show if it leaked. */
  aIds: (a: OrgFixture) => string[];
  variables?: (a: OrgFixture) => Record<string, unknown>;
}

const edgeIds = (conn: any) => conn.edges.map((e: any) => e.node.id as string);

const LISTS: ListCase[] = [
  {
    field: 'models',
    query: '{ models(first: 100, includeArchived: true) { totalCount edges { node { id versions { id } } } } }',
    ids: (d) => [...edgeIds(d.models), ...d.models.edges.flatMap((e: any) => e.node.versions.map((v: any) => v.id))],
    total: (d) => d.models.totalCount,
    aIds: (a) => [a.model, a.archivedModel, a.modelVersion],
  },
  {
    field: 'datasets',
    query: '{ datasets(first: 100) { totalCount edges { node { id versions { id } } } } }',
    ids: (d) => [...edgeIds(d.datasets), ...d.datasets.edges.flatMap((e: any) => e.node.versions.map((v: any) => v.id))],
    total: (d) => d.datasets.totalCount,
    aIds: (a) => [a.dataset, a.datasetVersion],
  },
  {
    field: 'computeProfiles',
    query: '{ computeProfiles(first: 100) { totalCount edges { node { id fallbackProfiles { id } } } } }',
    ids: (d) => [
      ...edgeIds(d.computeProfiles),
      ...d.computeProfiles.edges.flatMap((e: any) => e.node.fallbackProfiles.map((p: any) => p.id)),
    ],
    total: (d) => d.computeProfiles.totalCount,
    aIds: (a) => [a.platformProfile, a.sagemakerProfile],
  },
  {
    field: 'trainingSessions',
    query: `{ trainingSessions(first: 100) { totalCount edges { node { id latestEpoch { id }
      model { id } datasetVersion { id } computeProfile { id } } } } }`,
    ids: (d) =>
      d.trainingSessions.edges.flatMap((e: any) =>
        [e.node.id, e.node.latestEpoch?.id, e.node.model.id, e.node.datasetVersion.id, e.node.computeProfile?.id].filter(Boolean),
      ),
    total: (d) => d.trainingSessions.totalCount,
    aIds: (a) => [a.session, a.epochMetric, a.model, a.datasetVersion, a.platformProfile],
  },
  {
    field: 'trainingSessions',
    // Filtering by another organization's model finds nothing, rather than that model's sessions.
    query: `query($modelId: ID!) { trainingSessions(first: 100, filter: { modelId: $modelId }) { totalCount edges { node { id } } } }`,
    variables: (a) => ({ modelId: a.model }),
    ids: (d) => edgeIds(d.trainingSessions),
    total: (d) => d.trainingSessions.totalCount,
    aIds: (a) => [a.session],
  },
  {
    field: 'apiKeys',
    query: '{ apiKeys { id } }',
    ids: (d) => d.apiKeys.map((k: any) => k.id),
    aIds: (a) => [a.apiKey],
  },
  {
    field: 'members',
    query: '{ members { user { id } } }',
    ids: (d) => d.members.map((m: any) => m.user.id),
    aIds: (a) => [a.owner.userId, a.member.userId],
  },
];

interface GetterCase {
  field: string;
  target: (a: OrgFixture) => string;
}

const GETTERS: GetterCase[] = [
  { field: 'model', target: (a) => a.model },
  { field: 'model', target: (a) => a.archivedModel },
  { field: 'dataset', target: (a) => a.dataset },
  { field: 'computeProfile', target: (a) => a.platformProfile },
  { field: 'computeProfile', target: (a) => a.sagemakerProfile },
  { field: 'trainingSession', target: (a) => a.session },
];

/** node(id:) for every type implementing Node (the test below checks this list against the schema). */
const NODES: { type: string; target: (a: OrgFixture) => string }[] = [
  { type: 'Organization', target: (a) => a.owner.orgId },
  { type: 'User', target: (a) => a.owner.userId },
  { type: 'User', target: (a) => a.member.userId },
  { type: 'Model', target: (a) => a.model },
  { type: 'ModelVersion', target: (a) => a.modelVersion },
  { type: 'Dataset', target: (a) => a.dataset },
  { type: 'DatasetVersion', target: (a) => a.datasetVersion },
  { type: 'ComputeProfile', target: (a) => a.platformProfile },
  { type: 'ComputeProfile', target: (a) => a.sagemakerProfile },
  { type: 'TrainingSession', target: (a) => a.session },
  { type: 'EpochMetric', target: (a) => a.epochMetric },
  { type: 'ApiKey', target: (a) => a.apiKey },
];

// --- Mutations that take an id -------------------------------------------------------------------

interface MutationCase {
  field: string;
  name: string;
  query: string;
  variables: (a: OrgFixture, b: OrgFixture) => Record<string, unknown>;
  /** The typed error B must get; `id` is compared with the global ID that was sent. */
  expected: (a: OrgFixture) => Record<string, unknown>;
}

const notFound = (resource: string, id: (a: OrgFixture) => string) => (a: OrgFixture) => ({
  __typename: 'NotFoundError',
  resource,
  id: id(a),
});

const MUTATIONS: MutationCase[] = [
  {
    field: 'updateModel',
    name: "updateModel(A's model)",
    query: `mutation($id: ID!) { updateModel(id: $id, input: { name: "taken over", description: "by B", architecture: "fasterrcnn_resnet50_fpn" }) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.model }),
    expected: notFound('Model', (a) => a.model),
  },
  {
    field: 'archiveModel',
    name: "archiveModel(A's model)",
    query: `mutation($id: ID!) { archiveModel(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.model }),
    expected: notFound('Model', (a) => a.model),
  },
  {
    field: 'unarchiveModel',
    name: "unarchiveModel(A's archived model)",
    query: `mutation($id: ID!) { unarchiveModel(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.archivedModel }),
    expected: notFound('Model', (a) => a.archivedModel),
  },
  {
    field: 'updateComputeProfile',
    name: "updateComputeProfile(A's PLATFORM profile)",
    query: `mutation($id: ID!) { updateComputeProfile(id: $id, input: { name: "taken over", isDefault: false, maxConcurrentJobs: 99 }) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.platformProfile }),
    expected: notFound('ComputeProfile', (a) => a.platformProfile),
  },
  {
    field: 'updateComputeProfile',
    name: "updateComputeProfile(A's SAGEMAKER profile, replacing its credentials)",
    query: `mutation($id: ID!, $creds: JSON) { updateComputeProfile(id: $id, input: { credentials: $creds }) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.sagemakerProfile, creds: { accessKeyId: 'AKIAATTACKERATTACKER', secretAccessKey: 'attacker-secret-0123456789' } }),
    expected: notFound('ComputeProfile', (a) => a.sagemakerProfile),
  },
  {
    field: 'updateComputeProfile',
    name: "updateComputeProfile(B's profile, falling back to A's profile)",
    query: `mutation($id: ID!, $fallback: ID!) { updateComputeProfile(id: $id, input: { fallbackProfileIds: [$fallback] }) { ${RESULT_ID} } }`,
    variables: (a, b) => ({ id: b.sagemakerProfile, fallback: a.platformProfile }),
    expected: () => ({ __typename: 'ValidationError', field: 'input.fallbackProfileIds.0' }),
  },
  {
    field: 'deleteComputeProfile',
    name: "deleteComputeProfile(A's SAGEMAKER profile)",
    query: `mutation($id: ID!) { deleteComputeProfile(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.sagemakerProfile }),
    expected: notFound('ComputeProfile', (a) => a.sagemakerProfile),
  },
  {
    field: 'createComputeProfile',
    name: "createComputeProfile falling back to A's profile",
    query: `mutation($name: String!, $fallback: ID!) { createComputeProfile(input: { name: $name, provider: PLATFORM, strategy: PREFERRED, fallbackProfileIds: [$fallback] }) { ${RESULT} } }`,
    variables: (a) => ({ name: `borrower ${randomUUID().slice(0, 8)}`, fallback: a.platformProfile }),
    expected: () => ({ __typename: 'ValidationError', field: 'input.fallbackProfileIds.0' }),
  },
  {
    field: 'revokeApiKey',
    name: "revokeApiKey(A's key)",
    query: `mutation($id: ID!) { revokeApiKey(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.apiKey }),
    expected: notFound('ApiKey', (a) => a.apiKey),
  },
  {
    field: 'removeMember',
    name: "removeMember(A's MEMBER)",
    query: `mutation($id: ID!) { removeMember(userId: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.member.userId }),
    expected: (a) => ({ __typename: 'NotFoundError', id: a.member.userId }),
  },
  {
    field: 'removeMember',
    name: "removeMember(A's OWNER)",
    query: `mutation($id: ID!) { removeMember(userId: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.owner.userId }),
    expected: (a) => ({ __typename: 'NotFoundError', id: a.owner.userId }),
  },
  {
    field: 'trainModel',
    name: "trainModel(A's model, B's dataset version)",
    query: `mutation($modelId: ID!, $dv: ID!) { trainModel(modelId: $modelId, input: { datasetVersionId: $dv, config: { epochs: 1 } }) { ${RESULT_ID} } }`,
    variables: (a, b) => ({ modelId: a.model, dv: b.datasetVersion }),
    expected: notFound('Model', (a) => a.model),
  },
  {
    field: 'trainModel',
    name: "trainModel(B's model, A's dataset version)",
    query: `mutation($modelId: ID!, $dv: ID!) { trainModel(modelId: $modelId, input: { datasetVersionId: $dv, config: { epochs: 1 } }) { ${RESULT_ID} } }`,
    variables: (a, b) => ({ modelId: b.model, dv: a.datasetVersion }),
    expected: notFound('DatasetVersion', (a) => a.datasetVersion),
  },
  {
    field: 'trainModel',
    name: "trainModel(B's model and dataset version, A's PLATFORM profile)",
    query: `mutation($modelId: ID!, $dv: ID!, $cp: ID!) { trainModel(modelId: $modelId, input: { datasetVersionId: $dv, computeProfileId: $cp, config: { epochs: 1 } }) { ${RESULT_ID} } }`,
    variables: (a, b) => ({ modelId: b.model, dv: b.datasetVersion, cp: a.platformProfile }),
    expected: notFound('ComputeProfile', (a) => a.platformProfile),
  },
  {
    field: 'trainModel',
    name: "trainModel(B's model and dataset version, A's SAGEMAKER profile)",
    query: `mutation($modelId: ID!, $dv: ID!, $cp: ID!) { trainModel(modelId: $modelId, input: { datasetVersionId: $dv, computeProfileId: $cp, config: { epochs: 1 } }) { ${RESULT_ID} } }`,
    variables: (a, b) => ({ modelId: b.model, dv: b.datasetVersion, cp: a.sagemakerProfile }),
    expected: notFound('ComputeProfile', (a) => a.sagemakerProfile),
  },
  {
    field: 'cancelTrainingSession',
    name: "cancelTrainingSession(A's PENDING session)",
    query: `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.session }),
    expected: notFound('TrainingSession', (a) => a.session),
  },
];

// --- Fields that take no id of another organization, each with its own cross-org check ------------

interface OtherCase {
  field: string;
  kind: 'query' | 'mutation';
  why: string;
  check: () => Promise<void>;
}

const OTHERS: OtherCase[] = [
  {
    field: 'viewer',
    kind: 'query',
    why: "shows the caller's own organization",
    check: async () => {
      for (const [, token] of CALLERS) {
        const res = await api.gql('{ viewer { role organization { id name members { user { id } } } } }', {}, token());
        expect(res.data.viewer.organization.id).toBe(B.owner.orgId);
        expect(res.data.viewer.organization.members.map((m: any) => m.user.id)).not.toContain(A.owner.userId);
      }
    },
  },
  {
    field: 'gpuNodes',
    kind: 'query',
    why: 'platform GPU machines are shared by every organization by design: both see the same list',
    check: async () => {
      const id = `node-${randomUUID().slice(0, 8)}`;
      await api.orm.em.getConnection().execute(
        `insert into gpu_nodes (id, host, status, gpus, slots, running_session_ids, last_heartbeat_at, created_at, updated_at)
         values (?, 'gpu-host-1', 'ONLINE', '[]', 1, ?, now(), now(), now())`,
        [id, JSON.stringify([localOf(A.session)])],
      );
      const q = '{ gpuNodes { id host runningJobs } }';
      const asA = await api.gql(q, {}, A.owner.token);
      expect(asA.data.gpuNodes.map((n: any) => n.id)).toContain(id);
      for (const [, token] of CALLERS) {
        const asB = await api.gql(q, {}, token());
        expect(asB.data.gpuNodes).toEqual(asA.data.gpuNodes);
        // Which sessions a node runs is not exposed by id, so B learns nothing about A's sessions.
        expect(JSON.stringify(asB.data)).not.toContain(A.session);
      }
    },
  },
  {
    field: 'signUp',
    kind: 'mutation',
    why: "a new organization with A's exact name is a separate, empty organization",
    check: async () => {
      const res = await api.gql(SIGN_UP, {
        input: { email: `twin-${randomUUID().slice(0, 8)}@example.com`, password: 'correct horse battery', organizationName: A.orgName },
      });
      const payload = res.data.signUp.authPayload;
      expect(payload.organization.name).toBe(A.orgName);
      expect(payload.organization.id).not.toBe(A.owner.orgId);
      const models = await api.gql('{ models(includeArchived: true) { totalCount } computeProfiles { totalCount } }', {}, payload.token);
      expect(models.data).toEqual({ models: { totalCount: 0 }, computeProfiles: { totalCount: 0 } });
    },
  },
  {
    field: 'signIn',
    kind: 'mutation',
    why: "B's user cannot sign in to A's organization",
    check: async () => {
      const res = await api.gql(SIGN_IN, {
        input: { email: B.owner.email, password: B.owner.password, organizationId: A.owner.orgId },
      });
      expect(res.data.signIn.__typename).toBe('ForbiddenError');
      // A's member can pick either organization; each token acts for the organization chosen.
      const own = await api.gql(SIGN_IN, { input: { email: B.owner.email, password: B.owner.password, organizationId: B.owner.orgId } });
      expect(own.data.signIn.authPayload.organization.id).toBe(B.owner.orgId);
    },
  },
  {
    field: 'createModel',
    kind: 'mutation',
    why: "names are unique per organization: B may reuse A's model name, and A does not see B's model",
    check: async () => {
      for (const [label, token] of CALLERS) {
        const input = { name: `twin ${label}`, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' };
        // A first takes the name; B can still use it.
        ok(await api.gql(CREATE_MODEL, { input }, A.owner.token), 'createModel', 'model');
        const model = ok(await api.gql(CREATE_MODEL, { input }, token()), 'createModel', 'model');
        const asA = await api.gql('query($id: ID!) { model(id: $id) { id } node(id: $id) { id } }', { id: model.id }, A.owner.token);
        expect(asA.data).toEqual({ model: null, node: null });
      }
    },
  },
  {
    field: 'createDataset',
    kind: 'mutation',
    why: "names are unique per organization: B may reuse A's dataset name",
    check: async () => {
      for (const [label, token] of CALLERS) {
        const input = { name: `twin data ${label}`, task: 'OBJECT_DETECTION' };
        ok(await api.gql(CREATE_DATASET, { input }, A.owner.token), 'createDataset', 'dataset');
        const ds = ok(await api.gql(CREATE_DATASET, { input }, token()), 'createDataset', 'dataset');
        const asA = await api.gql('query($id: ID!) { dataset(id: $id) { id } }', { id: ds.id }, A.owner.token);
        expect(asA.data.dataset).toBeNull();
      }
    },
  },
  {
    field: 'createApiKey',
    kind: 'mutation',
    why: "B's new key acts for B only and is not listed to A",
    check: async () => {
      for (const [label, token] of CALLERS) {
        const created = ok(await api.gql(CREATE_KEY, { input: { name: `b key ${label}`, role: 'MEMBER' } }, token()), 'createApiKey', 'createdApiKey');
        const viewer = await api.gql('{ viewer { organization { id } } }', {}, created.secret);
        expect(viewer.data.viewer.organization.id).toBe(B.owner.orgId);
        const aKeys = await api.gql('{ apiKeys { id } }', {}, A.owner.token);
        expect(aKeys.data.apiKeys.map((k: any) => k.id)).not.toContain(created.apiKey.id);
      }
    },
  },
  {
    field: 'addMember',
    kind: 'mutation',
    why: "adding A's member to B gives a separate membership and leaves A's untouched",
    check: async () => {
      const shared = await signUp(api, 'Shared home');
      ok(await api.gql(ADD_MEMBER, { input: { email: shared.email, role: 'MEMBER' } }, A.owner.token), 'addMember', 'membership');
      const added = ok(await api.gql(ADD_MEMBER, { input: { email: shared.email, role: 'VIEWER' } }, bKey), 'addMember', 'membership');
      expect(added.role).toBe('VIEWER');
      const aMembers = await api.gql('{ members { role user { id } } }', {}, A.owner.token);
      expect(aMembers.data.members).toContainEqual({ role: 'MEMBER', user: { id: shared.userId } });
      const inA = await api.gql(SIGN_IN, { input: { email: shared.email, password: shared.password, organizationId: A.owner.orgId } });
      expect(inA.data.signIn.authPayload.role).toBe('MEMBER');
      const inB = await api.gql(SIGN_IN, { input: { email: shared.email, password: shared.password, organizationId: B.owner.orgId } });
      expect(inB.data.signIn.authPayload.role).toBe('VIEWER');
      // Acting for B, the shared user still sees nothing of A.
      const models = await api.gql('{ models(includeArchived: true) { edges { node { id } } } }', {}, inB.data.signIn.authPayload.token);
      expect(edgeIds(models.data.models)).not.toContain(A.model);
    },
  },
];

// --- A's state, read back as A, to prove nothing changed --------------------------------------------

const A_STATE = `{
  viewer { organization { id name } }
  models(first: 100, includeArchived: true) { totalCount edges { node { id name description architecture archivedAt updatedAt versions { id } } } }
  datasets(first: 100) { totalCount edges { node { id name description updatedAt versions { id status } } } }
  computeProfiles(first: 100) { totalCount edges { node { id name strategy config hasCredentials credentialsHint
    fallbackProfileIds isDefault maxConcurrentJobs maxCostPerSessionUsd updatedAt } } }
  trainingSessions(first: 100) { totalCount edges { node { id status finishedAt computeProfile { id } } } }
  apiKeys { id name role revokedAt }
  members { role user { id email } }
}`;

async function stateOfA() {
  const res = await api.gql(A_STATE, {}, A.owner.token);
  expect(res.errors).toBeUndefined();
  return res.data;
}

/** Every row an organization owns, straight from the database (catches writes the API would not show). */
async function rowsOf(org: OrgFixture) {
  const conn = api.orm.em.getConnection();
  const orgId = localOf(org.owner.orgId);
  const out: Record<string, unknown> = {};
  for (const table of ['models', 'model_versions', 'datasets', 'dataset_versions', 'compute_profiles', 'training_sessions', 'epoch_metrics', 'api_keys', 'memberships']) {
    // last_used_at is bookkeeping written when A's own key is used.
    out[table] = (await conn.execute(`select * from ${table} where organization_id = ? order by id`, [orgId])).map(
      ({ last_used_at: _ignored, ...row }: Record<string, unknown>) => row,
    );
  }
  out.organizations = await conn.execute('select * from organizations where id = ?', [orgId]);
  return JSON.parse(JSON.stringify(out));
}

beforeAll(async () => {
  api = await startTestApi();
  A = await seedOrg('A');
  B = await seedOrg('B');
  bKey = B.apiKeySecret;
}, 60_000);
afterAll(() => api?.close());

describe('positive controls: A sees its own objects', () => {
  it.each(LISTS.map((c) => [c.field, c] as const))('%s lists A\'s objects to A', async (_f, c) => {
    const res = await api.gql(c.query, c.variables?.(A) ?? {}, A.owner.token);
    expect(res.errors).toBeUndefined();
    const ids = c.ids(res.data);
    for (const id of c.aIds(A)) expect(ids).toContain(id);
  });

  it.each(GETTERS.map((c) => [c.field, c] as const))('%s(id) returns A\'s object to A', async (field, c) => {
    const res = await api.gql(`query($id: ID!) { ${field}(id: $id) { id } }`, { id: c.target(A) }, A.owner.token);
    expect(res.data[field]).toEqual({ id: c.target(A) });
  });

  it.each(NODES.map((c) => [c.type, c] as const))('node(%s) returns A\'s object to A', async (type, c) => {
    const res = await api.gql('query($id: ID!) { node(id: $id) { __typename id } }', { id: c.target(A) }, A.owner.token);
    if (type === 'EpochMetric') {
      // Epoch rows are reached through their session only; node() never loads them, for anyone.
      expect(res.data.node).toBeNull();
    } else {
      expect(res.data.node).toEqual({ __typename: type, id: c.target(A) });
    }
  });
});

describe.each(CALLERS)('as %s', (_label, token) => {
  describe('lists leave out A and count only B', () => {
    it.each(LISTS.map((c) => [c.field, c] as const))('%s', async (_f, c) => {
      const res = await api.gql(c.query, c.variables?.(A) ?? {}, token());
      expect(res.errors).toBeUndefined();
      const ids = c.ids(res.data);
      for (const id of c.aIds(A)) expect(ids).not.toContain(id);
      // totalCount counts exactly what B can page through (everything fits in one page here).
      if (c.total) expect(c.total(res.data)).toBe(edgeIds(res.data[c.field]).length);
      // The same query for B's own objects finds them, so the list above was not merely empty.
      const own = await api.gql(c.query, c.variables?.(B) ?? {}, token());
      const ownIds = c.ids(own.data);
      for (const id of c.aIds(B)) expect(ownIds).toContain(id);
    });
  });

  describe('getters return null for A\'s ids', () => {
    it.each(GETTERS.map((c) => [c.field, c] as const))('%s(id)', async (field, c) => {
      const res = await api.gql(`query($id: ID!) { ${field}(id: $id) { id } }`, { id: c.target(A) }, token());
      expect(res.errors).toBeUndefined();
      expect(res.data[field]).toBeNull();
    });
  });

  describe('node(id:) returns null for every A object', () => {
    it.each(NODES.map((c) => [c.type, c] as const))('node(%s)', async (_type, c) => {
      const res = await api.gql('query($id: ID!) { node(id: $id) { __typename id } }', { id: c.target(A) }, token());
      expect(res.errors).toBeUndefined();
      expect(res.data.node).toBeNull();
    });
  });

  describe('mutations on A\'s ids fail and change nothing of A', () => {
    it.each(MUTATIONS.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
      const before = { api: await stateOfA(), rowsA: await rowsOf(A), rowsB: await rowsOf(B) };
      const result = await mutate(token(), c.query, c.variables(A, B), c.field);
      expect(result).toMatchObject(c.expected(A));
      // The error names no A object beyond the id B itself sent.
      expect(result.message).not.toMatch(/detector|shapes|gpus|aws/);
      expect(await stateOfA()).toEqual(before.api);
      expect(await rowsOf(A)).toEqual(before.rowsA);
      // A refused mutation writes nothing on B's side either (no half-made profile, no session).
      expect(await rowsOf(B)).toEqual(before.rowsB);
    });
  });
});

describe('after B tried everything', () => {
  it("A's key still works and A's session is still PENDING", async () => {
    const viewer = await api.gql('{ viewer { organization { id } apiKey { id revokedAt } } }', {}, A.apiKeySecret);
    expect(viewer.data.viewer).toEqual({ organization: { id: A.owner.orgId }, apiKey: { id: A.apiKey, revokedAt: null } });
    const s = await api.gql('query($id: ID!) { trainingSession(id: $id) { status } }', { id: A.session }, A.owner.token);
    expect(s.data.trainingSession.status).toBe('PENDING');
  });

  it("B can do the same things to its own objects (the failures above were about the organization)", async () => {
    const train = await mutate(
      B.owner.token,
      TRAIN,
      { modelId: B.model, input: { datasetVersionId: B.datasetVersion, computeProfileId: B.sagemakerProfile, config: { epochs: 1 } } },
      'trainModel',
    );
    expect(train.__typename).toBe('TrainModelSuccess');
    const cancel = await mutate(B.owner.token, `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`, { id: train.trainingSession.id }, 'cancelTrainingSession');
    expect(cancel.__typename).toBe('CancelTrainingSessionSuccess');
    const rename = await mutate(B.owner.token, `mutation($id: ID!) { updateModel(id: $id, input: { description: "mine" }) { ${RESULT_ID} } }`, { id: B.model }, 'updateModel');
    expect(rename.__typename).toBe('UpdateModelSuccess');
  });

  it("making a B profile the default leaves A's default alone", async () => {
    const res = await mutate(B.owner.token, UPDATE_PROFILE, { id: B.sagemakerProfile, input: { isDefault: true } }, 'updateComputeProfile');
    expect(res.computeProfile.isDefault).toBe(true);
    const aProfile = await api.gql('query($id: ID!) { computeProfile(id: $id) { isDefault } }', { id: A.platformProfile }, A.owner.token);
    expect(aProfile.data.computeProfile.isDefault).toBe(true);
    const created = await mutate(bKey, CREATE_PROFILE, { input: { name: 'b default 2', provider: 'PLATFORM', strategy: 'QUEUE', isDefault: true } }, 'createComputeProfile');
    expect(created.computeProfile.isDefault).toBe(true);
    const again = await api.gql('query($id: ID!) { computeProfile(id: $id) { isDefault } }', { id: A.platformProfile }, A.owner.token);
    expect(again.data.computeProfile.isDefault).toBe(true);
  });

  it('a session started without a profile uses B\'s default, never A\'s', async () => {
    const res = await mutate(
      bKey,
      `mutation($modelId: ID!, $dv: ID!) { trainModel(modelId: $modelId, input: { datasetVersionId: $dv, config: { epochs: 1 } }) {
        ${RESULT_ID} ... on TrainModelSuccess { trainingSession { computeProfile { id } } } } }`,
      { modelId: B.model, dv: B.datasetVersion },
      'trainModel',
    );
    expect(res.__typename).toBe('TrainModelSuccess');
    expect(res.trainingSession.computeProfile).not.toBeNull();
    expect([A.platformProfile, A.sagemakerProfile]).not.toContain(res.trainingSession.computeProfile.id);
  });
});

describe('fields without an id of another organization', () => {
  it.each(OTHERS.map((c) => [`${c.kind} ${c.field}: ${c.why}`, c] as const))('%s', async (_name, c) => {
    await c.check();
  });
});

describe('coverage', () => {
  it('every Query and Mutation field of the schema is listed in a cross-org table of this file', async () => {
    const res = await api.gql(
      `{ __schema { queryType { fields { name } } mutationType { fields { name } } subscriptionType { fields { name } } } }`,
    );
    const schemaFields = (type: { fields: { name: string }[] } | null) => (type?.fields ?? []).map((f) => f.name).sort();
    const listed = (kind: 'query' | 'mutation') =>
      [
        ...new Set([
          ...(kind === 'query'
            ? [...LISTS.map((c) => c.field), ...GETTERS.map((c) => c.field), 'node']
            : MUTATIONS.map((c) => c.field)),
          ...OTHERS.filter((c) => c.kind === kind).map((c) => c.field),
        ]),
      ].sort();
    // A field added to the schema must be added to LISTS, GETTERS, MUTATIONS or OTHERS above,
    // with an assertion that organization B cannot reach organization A through it.
    expect(listed('query')).toEqual(schemaFields(res.data.__schema.queryType));
    expect(listed('mutation')).toEqual(schemaFields(res.data.__schema.mutationType));
    // Subscriptions (trainingSessionUpdated, trainingEpochs, ...) need the same check over
    // websockets; none is listed yet, so a new one fails here until it gets a cross-org test.
    expect(schemaFields(res.data.__schema.subscriptionType)).toEqual([]);
  });

  it('every type implementing Node is in the node(id:) table', async () => {
    const res = await api.gql(`{ __type(name: "Node") { possibleTypes { name } } }`);
    const types = res.data.__type.possibleTypes.map((t: { name: string }) => t.name).sort();
    expect([...new Set(NODES.map((n) => n.type))].sort()).toEqual(types);
  });
});
