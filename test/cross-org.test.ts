// Cross-organization isolation: organization B (signed in as a user, and as an API key) must not
// see, find, change or reference anything of organization A, through any query, mutation or
// node(id:), nor subscribe to it over websockets. Every Query, Mutation and Subscription field of
// the schema is listed in one of the tables below, and a test fails when the schema gains a field
// that no table lists.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { createClient } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { createDatasetVersion, datasetArchive, putArchive, seedReadyDatasetVersion } from './helpers/seed.js';

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
const CREATE_STORAGE = `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) {
  ${RESULT} ... on CreateStorageProfileSuccess { storageProfile { id name isDefault } } } }`;

const SAGEMAKER_CONFIG = {
  region: 'eu-west-1',
  roleArn: 'arn:aws:iam::123456789012:role/cvtrain',
  instanceType: 'ml.g5.xlarge',
  image: 'cvtrain/trainer:latest',
};
const SAGEMAKER_CREDENTIALS = { accessKeyId: 'AKIAABCDEFGHIJKLMNOP', secretAccessKey: 'cross-org-secret-access-key-0123' };
// An organization's own bucket. Nothing listens at the endpoint: no test here moves data through
// it (test/storage-profiles-api.test.ts does, against s3rver).
const S3_CONFIG = { bucket: 'lake-bucket', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true };
const S3_CREDENTIALS = { accessKeyId: 'AKIALAKEACCESSKEY000', secretAccessKey: 'cross-org-lake-secret-0123456789' };

/** Everything one organization owns, as global IDs. */
interface OrgFixture {
  owner: SignedUp;
  orgName: string;
  model: string;
  archivedModel: string;
  dataset: string;
  /** READY, made through createDatasetVersion + upload + finalizeDatasetVersion. */
  datasetVersion: string;
  /** Created and uploaded, not finalized yet: still UPLOADING. */
  uploadedVersion: string;
  platformProfile: string;
  sagemakerProfile: string;
  /** The organization's default storage profile (its own S3 bucket). */
  storageProfile: string;
  /** QUEUED (placed by the orchestrator; no GPU node runs it). */
  session: string;
  /** PAUSED_BUDGET, the state resumeTrainingSession acts on. */
  pausedSession: string;
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

/**
 * Seeds one of every object through the public API. Model versions, epochs and a session's
 * PAUSED_BUDGET status have no public writer (the ingester and a budget monitor write them) and are
 * set by SQL, as marked below.
 */
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
  const datasetVersion = await seedReadyDatasetVersion(api, dataset, 'YOLO', t);
  const upload = await createDatasetVersion(api, t, dataset, 'YOLO');
  await putArchive(upload, datasetArchive('YOLO').bytes);
  const uploadedVersion = upload.version.id;
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
  const pausedSession = ok(
    await api.gql(TRAIN, { modelId: model, input: { datasetVersionId: datasetVersion, computeProfileId: platformProfile, config: { epochs: 2 } } }, t),
    'trainModel',
    'trainingSession',
  ).id as string;
  // Created after the dataset versions above, which stay in the platform's storage.
  const storageProfile = ok(
    await api.gql(CREATE_STORAGE, { input: { name: 'lake', kind: 'S3', config: S3_CONFIG, credentials: S3_CREDENTIALS, isDefault: true } }, t),
    'createStorageProfile',
    'storageProfile',
  ).id as string;
  const created = ok(await api.gql(CREATE_KEY, { input: { name: `${label} ci`, role: 'OWNER' } }, t), 'createApiKey', 'createdApiKey');
  const member = await signUp(api, `${label} member home`);
  ok(await api.gql(ADD_MEMBER, { input: { email: member.email, role: 'MEMBER' } }, t), 'addMember', 'membership');

  // No public API writes these (the event ingester does, from a trainer's events; a budget monitor
  // pauses sessions): insert them so node(id:) covers their types and resume has a session to act on.
  const conn = api.orm.em.getConnection();
  const orgId = localOf(owner.orgId);
  await conn.execute(`update training_sessions set status = 'PAUSED_BUDGET', updated_at = now() where id = ?`, [localOf(pausedSession)]);
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
    uploadedVersion,
    platformProfile,
    sagemakerProfile,
    storageProfile,
    session,
    pausedSession,
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
    aIds: (a) => [a.dataset, a.datasetVersion, a.uploadedVersion],
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
    aIds: (a) => [a.session, a.pausedSession, a.epochMetric, a.model, a.datasetVersion, a.platformProfile],
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
    field: 'storageProfiles',
    query: '{ storageProfiles { id } }',
    ids: (d) => d.storageProfiles.map((p: any) => p.id),
    aIds: (a) => [a.storageProfile],
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
  { field: 'trainingSession', target: (a) => a.pausedSession },
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
  { type: 'DatasetVersion', target: (a) => a.uploadedVersion },
  { type: 'ComputeProfile', target: (a) => a.platformProfile },
  { type: 'ComputeProfile', target: (a) => a.sagemakerProfile },
  { type: 'TrainingSession', target: (a) => a.session },
  { type: 'TrainingSession', target: (a) => a.pausedSession },
  { type: 'StorageProfile', target: (a) => a.storageProfile },
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
    name: "cancelTrainingSession(A's QUEUED session)",
    query: `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.session }),
    expected: notFound('TrainingSession', (a) => a.session),
  },
  {
    field: 'cancelTrainingSession',
    name: "cancelTrainingSession(A's PAUSED_BUDGET session)",
    query: `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.pausedSession }),
    expected: notFound('TrainingSession', (a) => a.pausedSession),
  },
  {
    field: 'resumeTrainingSession',
    name: "resumeTrainingSession(A's PAUSED_BUDGET session)",
    query: `mutation($id: ID!) { resumeTrainingSession(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.pausedSession }),
    expected: notFound('TrainingSession', (a) => a.pausedSession),
  },
  {
    field: 'createDatasetVersion',
    name: "createDatasetVersion(A's dataset)",
    query: `mutation($id: ID!) { createDatasetVersion(input: { datasetId: $id, format: YOLO, filename: "mine.zip" }) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.dataset }),
    expected: notFound('Dataset', (a) => a.dataset),
  },
  {
    field: 'finalizeDatasetVersion',
    name: "finalizeDatasetVersion(A's uploaded, unfinalized version)",
    query: `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.uploadedVersion }),
    expected: notFound('DatasetVersion', (a) => a.uploadedVersion),
  },
  {
    field: 'finalizeDatasetVersion',
    name: "finalizeDatasetVersion(A's READY version): not found rather than already final",
    query: `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.datasetVersion }),
    expected: notFound('DatasetVersion', (a) => a.datasetVersion),
  },
  {
    field: 'updateStorageProfile',
    name: "updateStorageProfile(A's storage profile, pointing it at B's bucket)",
    query: `mutation($id: ID!, $config: JSON, $creds: JSON) { updateStorageProfile(id: $id, input: { name: "taken over", config: $config, credentials: $creds }) { ${RESULT_ID} } }`,
    variables: (a) => ({
      id: a.storageProfile,
      config: { ...S3_CONFIG, bucket: 'attacker-bucket' },
      creds: { accessKeyId: 'AKIAATTACKERATTACKER', secretAccessKey: 'attacker-secret-0123456789' },
    }),
    expected: notFound('StorageProfile', (a) => a.storageProfile),
  },
  {
    field: 'updateStorageProfile',
    name: "updateStorageProfile(A's default storage profile, unsetting the default)",
    query: `mutation($id: ID!) { updateStorageProfile(id: $id, input: { isDefault: false }) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.storageProfile }),
    expected: notFound('StorageProfile', (a) => a.storageProfile),
  },
  {
    field: 'deleteStorageProfile',
    name: "deleteStorageProfile(A's storage profile)",
    query: `mutation($id: ID!) { deleteStorageProfile(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.storageProfile }),
    expected: notFound('StorageProfile', (a) => a.storageProfile),
  },
  {
    field: 'checkStorageProfile',
    name: "checkStorageProfile(A's storage profile)",
    query: `mutation($id: ID!) { checkStorageProfile(id: $id) { ${RESULT_ID} } }`,
    variables: (a) => ({ id: a.storageProfile }),
    expected: notFound('StorageProfile', (a) => a.storageProfile),
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
    field: 'createStorageProfile',
    kind: 'mutation',
    // (Both organizations already hold a profile named "lake": names are unique per organization.)
    why: "B's new default leaves A's default alone, and A neither lists nor finds B's profile",
    check: async () => {
      for (const [label, token] of CALLERS) {
        const created = await mutate(
          token(),
          CREATE_STORAGE,
          { input: { name: `lake ${label}`, kind: 'S3', config: S3_CONFIG, credentials: S3_CREDENTIALS, isDefault: true } },
          'createStorageProfile',
        );
        expect(created.__typename, JSON.stringify(created)).toBe('CreateStorageProfileSuccess');
        expect(created.storageProfile.isDefault).toBe(true);
        const asA = await api.gql('query($id: ID!) { storageProfiles { id isDefault } node(id: $id) { id } }', { id: created.storageProfile.id }, A.owner.token);
        expect(asA.data.node).toBeNull();
        expect(asA.data.storageProfiles).toEqual([{ id: A.storageProfile, isDefault: true }]);
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

// --- Subscriptions (graphql-ws on the same /graphql path) ------------------------------------------

type WsEvent = { next: { data?: any; errors?: any[] } } | { error: { message: string; extensions?: { code?: string } }[] } | { close: number } | 'complete';

/**
 * Subscribes with a real graphql-ws client, authenticated in connection_init like any client, and
 * collects what arrives until the server errors or completes the operation, `until` says enough,
 * or `waitMs` passes.
 */
async function subscribe(
  token: string | null,
  query: string,
  variables: Record<string, unknown>,
  opts: { until?: (events: WsEvent[]) => boolean; waitMs?: number; onOpen?: () => Promise<void>; onNext?: (events: WsEvent[]) => void } = {},
): Promise<WsEvent[]> {
  const client = createClient({
    url: api.url.replace(/^http/, 'ws'),
    webSocketImpl: WebSocket,
    connectionParams: token ? { authorization: `Bearer ${token}` } : {},
    retryAttempts: 0,
    lazy: true,
  });
  const events: WsEvent[] = [];
  try {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, opts.waitMs ?? 3_000);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      client.subscribe(
        { query, variables },
        {
          next: (value) => {
            events.push({ next: value as any });
            opts.onNext?.(events);
            if (opts.until?.(events)) done();
          },
          error: (err) => {
            // The server closing the socket (4401 for bad credentials at connection_init) arrives as a CloseEvent.
            const code = (err as { code?: unknown } | null)?.code;
            if (!Array.isArray(err) && typeof code === 'number') events.push({ close: code });
            else events.push({ error: Array.isArray(err) ? err : [{ message: String((err as Error)?.message ?? JSON.stringify(err)) }] });
            done();
          },
          complete: () => {
            events.push('complete');
            done();
          },
        },
      );
      if (opts.onOpen) void opts.onOpen();
    });
  } finally {
    await client.dispose();
  }
  return events;
}

const SESSION_UPDATED = 'subscription($id: ID!) { trainingSessionUpdated(id: $id) { id status model { id } datasetVersion { id } } }';
const EPOCHS = 'subscription($id: ID!) { trainingEpochs(sessionId: $id) { id epoch metrics } }';
const NODES_UPDATED = 'subscription { gpuNodeUpdated { id host status slots } }';

/** What another organization must get: one GraphQL error, NOT_FOUND, and no data at all. */
function expectNotFoundOnly(events: WsEvent[]) {
  expect(events).toHaveLength(1);
  const [only] = events;
  expect(only).toHaveProperty('error');
  const errors = (only as { error: { message: string; extensions?: { code?: string } }[] }).error;
  expect(errors.map((e) => e.extensions?.code)).toEqual(['NOT_FOUND']);
  expect(JSON.stringify(errors)).not.toMatch(/detector|shapes|gpus|QUEUED/);
}

interface SubscriptionCase {
  field: string;
  why: string;
  check: () => Promise<void>;
}

const SUBSCRIPTIONS: SubscriptionCase[] = [
  {
    field: 'trainingSessionUpdated',
    why: "B subscribing to A's session gets NOT_FOUND and no data, exactly as for an id that does not exist",
    check: async () => {
      // Positive control: A gets its own session at once.
      const own = await subscribe(A.owner.token, SESSION_UPDATED, { id: A.session }, { until: (e) => e.length >= 1 });
      expect(own[0]).toEqual({ next: { data: { trainingSessionUpdated: { id: A.session, status: 'QUEUED', model: { id: A.model }, datasetVersion: { id: A.datasetVersion } } } } });
      const missing = encodeGlobalID('TrainingSession', randomUUID());
      for (const [, token] of CALLERS) {
        for (const id of [A.session, A.pausedSession]) expectNotFoundOnly(await subscribe(token(), SESSION_UPDATED, { id }));
        // Indistinguishable from a session that does not exist anywhere.
        const other = await subscribe(token(), SESSION_UPDATED, { id: A.session });
        const none = await subscribe(token(), SESSION_UPDATED, { id: missing });
        expect(JSON.stringify(other)).toBe(JSON.stringify(none));
      }
    },
  },
  {
    field: 'trainingSessionUpdated',
    why: "a change to A's session published while B's subscription attempt is open reaches only A",
    check: async () => {
      // A cancels its own (spare) session while A and B both subscribe to it.
      const spare = ok(
        await api.gql(TRAIN, { modelId: A.model, input: { datasetVersionId: A.datasetVersion, config: { epochs: 1 } } }, A.owner.token),
        'trainModel',
        'trainingSession',
      ).id as string;
      // Cancelled once A's subscription is live (its first value arrived).
      const cancel = (events: WsEvent[]) => {
        if (events.length === 1) void mutate(A.owner.token, `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`, { id: spare }, 'cancelTrainingSession');
      };
      const [asA, asB] = await Promise.all([
        subscribe(A.owner.token, SESSION_UPDATED, { id: spare }, { onNext: cancel, waitMs: 10_000 }),
        subscribe(bKey, SESSION_UPDATED, { id: spare }, { waitMs: 1_500 }),
      ]);
      expect(asA.map((e) => (e === 'complete' ? e : 'next' in e ? e.next.data?.trainingSessionUpdated.status : 'error'))).toEqual(['QUEUED', 'CANCELLED', 'complete']);
      expectNotFoundOnly(asB);
    },
  },
  {
    field: 'trainingEpochs',
    why: "B subscribing to A's epochs gets NOT_FOUND and no data (no replay of A's stored epoch)",
    check: async () => {
      // Positive control: A's replay starts with its stored epoch.
      const own = await subscribe(A.owner.token, EPOCHS, { id: A.session }, { until: (e) => e.length >= 1 });
      expect(own[0]).toEqual({ next: { data: { trainingEpochs: { id: A.epochMetric, epoch: 1, metrics: { loss: 1.5 } } } } });
      for (const [, token] of CALLERS) {
        for (const id of [A.session, A.pausedSession]) {
          const events = await subscribe(token(), EPOCHS, { id });
          expectNotFoundOnly(events);
          expect(JSON.stringify(events)).not.toContain('1.5');
        }
        const sinceZero = await subscribe(token(), 'subscription($id: ID!) { trainingEpochs(sessionId: $id, sinceEpoch: 0) { epoch } }', { id: A.session });
        expectNotFoundOnly(sinceZero);
      }
    },
  },
  {
    field: 'trainingLogs',
    why: "B subscribing to A's trainer output gets NOT_FOUND and no data, while A receives the lines",
    check: async () => {
      const LOGS = 'subscription($id: ID!) { trainingLogs(sessionId: $id) { stream line attempt } }';
      // A gpu-node publishes each trainer line on the session's Redis channel; do the same here
      // until A's subscription (open by then) has received one.
      const line = { sessionId: localOf(A.session), attempt: 1, stream: 'stdout', line: 'epoch 1/3 loss 1.5 (secret A output)', ts: new Date().toISOString() };
      let publishing = true;
      const publish = async () => {
        while (publishing) {
          api.app.topics.publish(api.app.redisNames.logsChannel(localOf(A.session)), line);
          await new Promise((r) => setTimeout(r, 100));
        }
      };
      const received = (events: WsEvent[]) => events.some((e) => e !== 'complete' && 'next' in e);
      try {
        const [asA, asBUser, asBKey] = await Promise.all([
          subscribe(A.owner.token, LOGS, { id: A.session }, { until: received, waitMs: 5_000, onOpen: publish }),
          subscribe(B.owner.token, LOGS, { id: A.session }),
          subscribe(bKey, LOGS, { id: A.session }),
        ]);
        expect(asA[0]).toEqual({ next: { data: { trainingLogs: { stream: 'stdout', line: line.line, attempt: 1 } } } });
        for (const events of [asBUser, asBKey]) {
          expectNotFoundOnly(events);
          expect(JSON.stringify(events)).not.toContain('secret A output');
        }
      } finally {
        publishing = false;
      }
    },
  },
  {
    field: 'gpuNodeUpdated',
    why: 'platform GPU nodes are shared by every organization by design: it needs authentication, and A and B see the same update',
    check: async () => {
      // Missing or bad credentials never get a connection: the socket is closed with 4401 at connection_init.
      const anonymous = await subscribe(null, NODES_UPDATED, {});
      expect(anonymous).toEqual([{ close: 4401 }]);
      const bad = await subscribe('cvt_00000000000000000000000000000000_not-a-real-key-at-all-not-a-real-key-0123', NODES_UPDATED, {});
      expect(bad).toEqual([{ close: 4401 }]);

      // A node registers through the node API (again every 200 ms, as each registration is
      // published, until every subscription, live by then, has seen it) while A and B listen.
      const nodeId = `xorg-${randomUUID().slice(0, 8)}`;
      let registering = true;
      const register = async () => {
        while (registering) {
          const res = await fetch(`${new URL(api.url).origin}/node/v1/register`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', authorization: `Bearer ${api.app.config.nodeToken}` },
            body: JSON.stringify({ nodeId, host: 'shared-gpu-host', version: '1', slots: 1, gpus: [] }),
          });
          expect(res.status).toBe(200);
          await new Promise((r) => setTimeout(r, 200));
        }
      };
      const seen = (events: WsEvent[]) =>
        events.filter((e) => e !== 'complete' && 'next' in e && e.next.data?.gpuNodeUpdated.id === nodeId).map((e) => (e as { next: any }).next);
      const untilNode = (events: WsEvent[]) => seen(events).length > 0;
      let results: WsEvent[][];
      try {
        results = await Promise.all([
          subscribe(A.owner.token, NODES_UPDATED, {}, { until: untilNode, waitMs: 10_000, onOpen: register }),
          subscribe(B.owner.token, NODES_UPDATED, {}, { until: untilNode, waitMs: 10_000 }),
          subscribe(bKey, NODES_UPDATED, {}, { until: untilNode, waitMs: 10_000 }),
        ]);
      } finally {
        registering = false;
      }
      const expected = { data: { gpuNodeUpdated: { id: nodeId, host: 'shared-gpu-host', status: 'ONLINE', slots: 1 } } };
      for (const events of results) expect(seen(events)[0]).toEqual(expected);
    },
  },
];

// --- A's state, read back as A, to prove nothing changed --------------------------------------------

const A_STATE = `{
  viewer { organization { id name } }
  models(first: 100, includeArchived: true) { totalCount edges { node { id name description architecture archivedAt updatedAt versions { id } } } }
  datasets(first: 100) { totalCount edges { node { id name description updatedAt versions { id version status sha256 sizeBytes finalizedAt } } } }
  computeProfiles(first: 100) { totalCount edges { node { id name strategy config hasCredentials credentialsHint
    fallbackProfileIds isDefault maxConcurrentJobs maxCostPerSessionUsd updatedAt } } }
  trainingSessions(first: 100) { totalCount edges { node { id status attempt cancelRequested finishedAt computeProfile { id } } } }
  storageProfiles { id name kind config isDefault credentialsHint updatedAt }
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
  const tables = ['models', 'model_versions', 'datasets', 'dataset_versions', 'compute_profiles', 'storage_profiles', 'training_sessions', 'epoch_metrics', 'artifacts', 'api_keys', 'memberships'];
  // One statement for all tables (run for each case, twice per organization).
  const [row] = await api.orm.em.getConnection().execute<Record<string, unknown>[]>(
    `select ${tables
      // last_used_at is bookkeeping written when A's own key is used.
      .map((t) => `(select coalesce(json_agg(to_jsonb(x) - 'last_used_at' order by x.id), '[]') from ${t} x where organization_id = ?) as ${t}`)
      .join(', ')}, (select json_agg(to_jsonb(o)) from organizations o where id = ?) as organizations`,
    [...tables.map(() => localOf(org.owner.orgId)), localOf(org.owner.orgId)],
  );
  return row;
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
      expect(result.message).not.toMatch(/detector|shapes|gpus|aws|lake/);
      expect(await stateOfA()).toEqual(before.api);
      expect(await rowsOf(A)).toEqual(before.rowsA);
      // A refused mutation writes nothing on B's side either (no half-made profile, no session).
      expect(await rowsOf(B)).toEqual(before.rowsB);
    });
  });
});

describe('after B tried everything', () => {
  it("A's key still works and A's sessions and versions are as A left them", async () => {
    const viewer = await api.gql('{ viewer { organization { id } apiKey { id revokedAt } } }', {}, A.apiKeySecret);
    expect(viewer.data.viewer).toEqual({ organization: { id: A.owner.orgId }, apiKey: { id: A.apiKey, revokedAt: null } });
    const s = await api.gql(
      `query($s: ID!, $p: ID!, $u: ID!, $r: ID!) { s: trainingSession(id: $s) { status cancelRequested } p: trainingSession(id: $p) { status }
        u: node(id: $u) { ... on DatasetVersion { status } } r: node(id: $r) { ... on DatasetVersion { status } } }`,
      { s: A.session, p: A.pausedSession, u: A.uploadedVersion, r: A.datasetVersion },
      A.owner.token,
    );
    // trainModel places a session at once: with no GPU node online it waits QUEUED.
    expect(s.data).toEqual({
      s: { status: 'QUEUED', cancelRequested: false },
      p: { status: 'PAUSED_BUDGET' },
      u: { status: 'UPLOADING' },
      r: { status: 'READY' },
    });
  });

  it("B can do the same things to its own objects (the failures above were about the organization)", async () => {
    const train = await mutate(
      B.owner.token,
      TRAIN,
      { modelId: B.model, input: { datasetVersionId: B.datasetVersion, computeProfileId: B.sagemakerProfile, config: { epochs: 1 } } },
      'trainModel',
    );
    expect(train.__typename).toBe('TrainModelSuccess');
    expect(train.trainingSession.status).toBe('QUEUED');
    const cancel = await mutate(B.owner.token, `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} ... on CancelTrainingSessionSuccess { trainingSession { status } } } }`, { id: train.trainingSession.id }, 'cancelTrainingSession');
    expect(cancel).toEqual({ __typename: 'CancelTrainingSessionSuccess', trainingSession: { status: 'CANCELLED' } });
    const resume = await mutate(B.owner.token, `mutation($id: ID!) { resumeTrainingSession(id: $id) { ${RESULT_ID} ... on ResumeTrainingSessionSuccess { trainingSession { status } } } }`, { id: B.pausedSession }, 'resumeTrainingSession');
    expect(resume).toEqual({ __typename: 'ResumeTrainingSessionSuccess', trainingSession: { status: 'QUEUED' } });
    const finalize = await mutate(B.owner.token, `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${RESULT_ID} ... on FinalizeDatasetVersionSuccess { datasetVersion { status } } } }`, { id: B.uploadedVersion }, 'finalizeDatasetVersion');
    expect(finalize).toEqual({ __typename: 'FinalizeDatasetVersionSuccess', datasetVersion: { status: 'READY' } });
    const check = await mutate(B.owner.token, `mutation($id: ID!) { checkStorageProfile(id: $id) { ${RESULT_ID} ... on CheckStorageProfileSuccess { check { ok } } } }`, { id: B.storageProfile }, 'checkStorageProfile');
    // Nothing listens at the profile's endpoint: the check runs and reports the failure.
    expect(check).toEqual({ __typename: 'CheckStorageProfileSuccess', check: { ok: false } });
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

describe('subscriptions over websockets', () => {
  it.each(SUBSCRIPTIONS.map((c) => [`${c.field}: ${c.why}`, c] as const))('%s', async (_name, c) => {
    await c.check();
  });
});

describe('fields without an id of another organization', () => {
  it.each(OTHERS.map((c) => [`${c.kind} ${c.field}: ${c.why}`, c] as const))('%s', async (_name, c) => {
    await c.check();
  });
});

describe('coverage', () => {
  it('every Query, Mutation and Subscription field of the schema is listed in a cross-org table of this file', async () => {
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
    // Subscriptions are checked over websockets (SUBSCRIPTIONS above).
    expect([...new Set(SUBSCRIPTIONS.map((c) => c.field))].sort()).toEqual(schemaFields(res.data.__schema.subscriptionType));
  });

  it('every type implementing Node is in the node(id:) table', async () => {
    const res = await api.gql(`{ __type(name: "Node") { possibleTypes { name } } }`);
    const types = res.data.__type.possibleTypes.map((t: { name: string }) => t.name).sort();
    expect([...new Set(NODES.map((n) => n.type))].sort()).toEqual(types);
  });
});
