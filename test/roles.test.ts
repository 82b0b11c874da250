// Roles: OWNER > ADMIN > MEMBER > VIEWER. VIEWER only reads; MEMBER works with models, datasets
// (and their versions) and training; OWNER and ADMIN also manage compute and storage profiles, API
// keys and members. Every mutation is tried by every role, as a signed-in user and as an API key of
// that role; a refused one writes nothing.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { createDatasetVersion, datasetArchive, putArchive, seedReadyDatasetVersion } from './helpers/seed.js';

type Role = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER';
const ROLES: Role[] = ['OWNER', 'ADMIN', 'MEMBER', 'VIEWER'];
const rank: Record<Role, number> = { VIEWER: 1, MEMBER: 2, ADMIN: 3, OWNER: 4 };

let api: TestApi;
let owner: SignedUp;
let orgId: string;
let model: string;
let datasetVersion: string;
let dataset: string;
let profile: string;
let session: string;

const RESULT = `__typename ... on Error { message } ... on ValidationError { field }`;
const RESULT_ID = `${RESULT} ... on NotFoundError { resource }`;
const SIGN_IN = `mutation($input: SignInInput!) { signIn(input: $input) {
  ${RESULT} ... on SignInSuccess { authPayload { token role } } } }`;
const ADD_MEMBER = `mutation($input: AddMemberInput!) { addMember(input: $input) { ${RESULT} ... on AddMemberSuccess { membership { role } } } }`;
const REMOVE_MEMBER = `mutation($id: ID!) { removeMember(userId: $id) { ${RESULT_ID} } }`;
const CREATE_KEY = `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) {
  ${RESULT} ... on CreateApiKeySuccess { createdApiKey { secret apiKey { id role } } } } }`;
const CREATE_MODEL = `mutation($input: CreateModelInput!) { createModel(input: $input) { ${RESULT} ... on CreateModelSuccess { model { id } } } }`;
const CREATE_PROFILE = `mutation($input: CreateComputeProfileInput!) { createComputeProfile(input: $input) {
  ${RESULT} ... on CreateComputeProfileSuccess { computeProfile { id } } } }`;
const TRAIN = `mutation($modelId: ID!, $input: TrainModelInput!) { trainModel(modelId: $modelId, input: $input) {
  ${RESULT_ID} ... on TrainModelSuccess { trainingSession { id } } } }`;
const CREATE_STORAGE = `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) {
  ${RESULT} ... on CreateStorageProfileSuccess { storageProfile { id } } } }`;
// Nothing listens there: checkStorageProfile runs and reports the failure (a success of the mutation).
const S3_PROFILE = {
  kind: 'S3',
  config: { bucket: 'roles-bucket', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
  credentials: { accessKeyId: 'AKIAROLESROLESROLES0', secretAccessKey: 'roles-secret-access-key-0123' },
};

const unique = (prefix: string) => `${prefix} ${randomUUID().slice(0, 8)}`;

async function run(query: string, variables: Record<string, unknown>, token: string | null) {
  const res = await api.gql(query, variables, token);
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data;
}

/** A new account that joins the organization with `role`, signed in for it. */
async function joinAs(role: Role): Promise<SignedUp & { orgToken: string }> {
  const user = await signUp(api, unique('home'));
  ok(await api.gql(ADD_MEMBER, { input: { email: user.email, role } }, owner.token), 'addMember', 'membership');
  const signedIn = await api.gql(SIGN_IN, { input: { email: user.email, password: user.password, organizationId: orgId } });
  const payload = ok(signedIn, 'signIn', 'authPayload');
  expect(payload.role).toBe(role);
  return { ...user, orgToken: payload.token };
}

async function newKey(role: Role, token = owner.token): Promise<{ id: string; secret: string }> {
  const created = ok(await api.gql(CREATE_KEY, { input: { name: unique('key'), role } }, token), 'createApiKey', 'createdApiKey');
  return { id: created.apiKey.id, secret: created.secret };
}

/** Every row of the organization (and every user), to prove a refused mutation wrote nothing. One statement. */
async function orgRows() {
  const tables = ['models', 'datasets', 'dataset_versions', 'compute_profiles', 'storage_profiles', 'training_sessions', 'api_keys', 'memberships'];
  const [row] = await api.orm.em.getConnection().execute<Record<string, unknown>[]>(
    `select ${tables
      // last_used_at is bookkeeping of the caller's own key.
      .map((t) => `(select coalesce(json_agg(to_jsonb(x) - 'last_used_at' order by x.id), '[]') from ${t} x where organization_id = ?) as ${t}`)
      .join(', ')}, (select json_agg(json_build_object('id', u.id, 'email', u.email, 'updated_at', u.updated_at) order by u.id) from users u) as users`,
    tables.map(() => decodeGlobalID(orgId).id),
  );
  return row;
}

/**
 * Accounts for the cases that add a member. They never sign in, so they are inserted directly:
 * signing up each would spend scrypt time for nothing.
 */
async function spareUser(): Promise<{ userId: string; email: string }> {
  const id = randomUUID();
  const email = `spare-${id.slice(0, 8)}@example.com`;
  await api.orm.em.getConnection().execute(
    `insert into users (id, created_at, updated_at, email, password_hash) values (?, now(), now(), ?, 'scrypt$unusable')`,
    [id, email],
  );
  return { userId: encodeGlobalID('User', id), email };
}

// --- Who may run which mutation ------------------------------------------------------------------

interface MutationCase {
  field: string;
  /** The lowest role allowed. */
  minRole: Role;
  query: string;
  /** Makes what the mutation acts on (as the OWNER) and returns its variables. */
  prepare: () => Promise<Record<string, unknown>>;
}

const MUTATIONS: MutationCase[] = [
  {
    field: 'createModel',
    minRole: 'MEMBER',
    query: CREATE_MODEL,
    prepare: async () => ({
      input: { name: unique('model'), task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' },
    }),
  },
  {
    field: 'updateModel',
    minRole: 'MEMBER',
    query: `mutation($id: ID!, $name: String!) { updateModel(id: $id, input: { name: $name, description: "changed" }) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerModel(), name: unique('renamed') }),
  },
  {
    field: 'archiveModel',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { archiveModel(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerModel() }),
  },
  {
    field: 'unarchiveModel',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { unarchiveModel(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => {
      const id = await ownerModel();
      await run(`mutation($id: ID!) { archiveModel(id: $id) { __typename } }`, { id }, owner.token);
      return { id };
    },
  },
  {
    field: 'createDataset',
    minRole: 'MEMBER',
    query: `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { ${RESULT} } }`,
    prepare: async () => ({ input: { name: unique('dataset'), task: 'OBJECT_DETECTION' } }),
  },
  {
    field: 'trainModel',
    minRole: 'MEMBER',
    query: TRAIN,
    prepare: async () => ({ modelId: model, input: { datasetVersionId: datasetVersion, config: { epochs: 2 } } }),
  },
  {
    field: 'cancelTrainingSession',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { cancelTrainingSession(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => {
      const data = await run(TRAIN, { modelId: model, input: { datasetVersionId: datasetVersion, config: { epochs: 2 } } }, owner.token);
      return { id: data.trainModel.trainingSession.id };
    },
  },
  {
    field: 'resumeTrainingSession',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { resumeTrainingSession(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => {
      const data = await run(TRAIN, { modelId: model, input: { datasetVersionId: datasetVersion, config: { epochs: 2 } } }, owner.token);
      const id = data.trainModel.trainingSession.id;
      // No public writer pauses a session (a budget monitor does): set PAUSED_BUDGET directly.
      await api.orm.em.getConnection().execute(`update training_sessions set status = 'PAUSED_BUDGET' where id = ?`, [decodeGlobalID(id).id]);
      return { id };
    },
  },
  {
    field: 'createDatasetVersion',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { createDatasetVersion(input: { datasetId: $id, format: YOLO, filename: "shapes.tar.gz" }) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: dataset }),
  },
  {
    field: 'finalizeDatasetVersion',
    minRole: 'MEMBER',
    query: `mutation($id: ID!) { finalizeDatasetVersion(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => {
      // Created and uploaded by the OWNER; only the finalize is the caller's.
      const upload = await createDatasetVersion(api, owner.token, dataset, 'YOLO');
      await putArchive(upload, datasetArchive('YOLO').bytes);
      return { id: upload.version.id };
    },
  },
  {
    field: 'createComputeProfile',
    minRole: 'ADMIN',
    query: CREATE_PROFILE,
    prepare: async () => ({ input: { name: unique('profile'), provider: 'PLATFORM', strategy: 'QUEUE' } }),
  },
  {
    field: 'updateComputeProfile',
    minRole: 'ADMIN',
    query: `mutation($id: ID!, $name: String!) { updateComputeProfile(id: $id, input: { name: $name, maxConcurrentJobs: 3 }) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerProfile(), name: unique('renamed profile') }),
  },
  {
    field: 'deleteComputeProfile',
    minRole: 'ADMIN',
    query: `mutation($id: ID!) { deleteComputeProfile(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerProfile() }),
  },
  {
    field: 'createStorageProfile',
    minRole: 'ADMIN',
    query: CREATE_STORAGE,
    prepare: async () => ({ input: { name: unique('storage'), ...S3_PROFILE } }),
  },
  {
    field: 'updateStorageProfile',
    minRole: 'ADMIN',
    // Not isDefault: a default profile at a dead endpoint would take the dataset uploads of the cases above.
    query: `mutation($id: ID!, $name: String!, $creds: JSON) { updateStorageProfile(id: $id, input: { name: $name, credentials: $creds }) { ${RESULT_ID} } }`,
    prepare: async () => ({
      id: await ownerStorage(),
      name: unique('renamed storage'),
      creds: { accessKeyId: 'AKIAROTATEDROTATED00', secretAccessKey: 'rotated-secret-access-key-0123' },
    }),
  },
  {
    field: 'deleteStorageProfile',
    minRole: 'ADMIN',
    query: `mutation($id: ID!) { deleteStorageProfile(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerStorage() }),
  },
  {
    field: 'checkStorageProfile',
    minRole: 'ADMIN',
    query: `mutation($id: ID!) { checkStorageProfile(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: await ownerStorage() }),
  },
  {
    field: 'createApiKey',
    minRole: 'ADMIN',
    query: CREATE_KEY,
    // VIEWER: the lowest role, so only the caller's own role decides.
    prepare: async () => ({ input: { name: unique('key'), role: 'VIEWER' } }),
  },
  {
    field: 'revokeApiKey',
    minRole: 'ADMIN',
    query: `mutation($id: ID!) { revokeApiKey(id: $id) { ${RESULT_ID} } }`,
    prepare: async () => ({ id: (await newKey('VIEWER')).id }),
  },
  {
    field: 'addMember',
    minRole: 'ADMIN',
    query: ADD_MEMBER,
    prepare: async () => ({ input: { email: (await spareUser()).email, role: 'VIEWER' } }),
  },
  {
    field: 'removeMember',
    minRole: 'ADMIN',
    query: REMOVE_MEMBER,
    prepare: async () => {
      const user = await spareUser();
      ok(await api.gql(ADD_MEMBER, { input: { email: user.email, role: 'VIEWER' } }, owner.token), 'addMember', 'membership');
      return { id: user.userId };
    },
  },
];

/** Mutations anyone may call, signed in or not: they act on the caller's own account. */
const PUBLIC_MUTATIONS: { field: string; check: (token: string | null) => Promise<void> }[] = [
  {
    field: 'signUp',
    check: async (token) => {
      const data = await run(
        `mutation($input: SignUpInput!) { signUp(input: $input) { __typename ... on SignUpSuccess { authPayload { role } } } }`,
        { input: { email: `${randomUUID().slice(0, 8)}@example.com`, password: 'correct horse battery', organizationName: 'Own' } },
        token,
      );
      // A VIEWER elsewhere is the OWNER of the organization they create.
      expect(data.signUp).toEqual({ __typename: 'SignUpSuccess', authPayload: { role: 'OWNER' } });
    },
  },
  {
    field: 'signIn',
    check: async (token) => {
      const data = await run(SIGN_IN, { input: { email: owner.email, password: owner.password, organizationId: orgId } }, token);
      expect(data.signIn.authPayload.role).toBe('OWNER');
    },
  },
];

let modelCounter = 0;
async function ownerModel(): Promise<string> {
  const data = await run(CREATE_MODEL, {
    input: { name: `fixture model ${++modelCounter} ${randomUUID().slice(0, 4)}`, task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'ssdlite320_mobilenet_v3_large' },
  }, owner.token);
  return data.createModel.model.id;
}
async function ownerStorage(): Promise<string> {
  const data = await run(CREATE_STORAGE, { input: { name: unique('fixture storage'), ...S3_PROFILE } }, owner.token);
  return data.createStorageProfile.storageProfile.id;
}
async function ownerProfile(): Promise<string> {
  const data = await run(CREATE_PROFILE, { input: { name: unique('fixture profile'), provider: 'PLATFORM', strategy: 'QUEUE' } }, owner.token);
  return data.createComputeProfile.computeProfile.id;
}

// --- Who may read what ---------------------------------------------------------------------------

const QUERIES: { field: string; minRole: Role; query: string; variables?: () => Record<string, unknown> }[] = [
  { field: 'viewer', minRole: 'VIEWER', query: '{ viewer { role organization { id } } }' },
  { field: 'models', minRole: 'VIEWER', query: '{ models(includeArchived: true) { totalCount } }' },
  { field: 'datasets', minRole: 'VIEWER', query: '{ datasets { totalCount } }' },
  { field: 'computeProfiles', minRole: 'VIEWER', query: '{ computeProfiles { totalCount } }' },
  { field: 'trainingSessions', minRole: 'VIEWER', query: '{ trainingSessions { totalCount } }' },
  { field: 'members', minRole: 'VIEWER', query: '{ members { role } }' },
  { field: 'gpuNodes', minRole: 'VIEWER', query: '{ gpuNodes { id } }' },
  { field: 'storageProfiles', minRole: 'VIEWER', query: '{ storageProfiles { id name config credentialsHint } }' },
  { field: 'apiKeys', minRole: 'ADMIN', query: '{ apiKeys { id } }' },
  { field: 'node', minRole: 'VIEWER', query: 'query($id: ID!) { node(id: $id) { id } }', variables: () => ({ id: model }) },
  { field: 'model', minRole: 'VIEWER', query: 'query($id: ID!) { model(id: $id) { id } }', variables: () => ({ id: model }) },
  { field: 'dataset', minRole: 'VIEWER', query: 'query($id: ID!) { dataset(id: $id) { id } }', variables: () => ({ id: dataset }) },
  { field: 'computeProfile', minRole: 'VIEWER', query: 'query($id: ID!) { computeProfile(id: $id) { id } }', variables: () => ({ id: profile }) },
  { field: 'trainingSession', minRole: 'VIEWER', query: 'query($id: ID!) { trainingSession(id: $id) { id } }', variables: () => ({ id: session }) },
];

interface Caller {
  label: string;
  role: Role;
  token: () => string;
}
const callers: Record<string, string> = {};
const CALLERS: Caller[] = ROLES.flatMap((role) => [
  { label: `${role} user`, role, token: () => callers[`${role} user`] },
  { label: `${role} API key`, role, token: () => callers[`${role} key`] },
]);

beforeAll(async () => {
  api = await startTestApi();
  owner = await signUp(api, 'Roles Inc');
  orgId = owner.orgId;
  callers['OWNER user'] = owner.token;
  for (const role of ['ADMIN', 'MEMBER', 'VIEWER'] as Role[]) callers[`${role} user`] = (await joinAs(role)).orgToken;
  for (const role of ROLES) callers[`${role} key`] = (await newKey(role)).secret;
  model = await ownerModel();
  const ds = await run(`mutation { createDataset(input: { name: "roles data", task: OBJECT_DETECTION }) { ... on CreateDatasetSuccess { dataset { id } } } }`, {}, owner.token);
  dataset = ds.createDataset.dataset.id;
  datasetVersion = await seedReadyDatasetVersion(api, dataset, 'YOLO', owner.token);
  profile = await ownerProfile();
  session = (await run(TRAIN, { modelId: model, input: { datasetVersionId: datasetVersion, config: { epochs: 2 } } }, owner.token)).trainModel
    .trainingSession.id;
}, 60_000);
afterAll(() => api?.close());

describe.each(CALLERS.map((c) => [c.label, c] as const))('as %s', (_label, caller) => {
  it.each(MUTATIONS.map((m) => [m.field, m.minRole, m] as const))(
    '%s (needs %s)',
    async (field, minRole, m) => {
      const variables = await m.prepare();
      const before = await orgRows();
      const data = await run(m.query, variables, caller.token());
      if (rank[caller.role] >= rank[minRole]) {
        expect(data[field].__typename, JSON.stringify(data[field])).toBe(`${field[0].toUpperCase()}${field.slice(1)}Success`);
      } else {
        expect(data[field].__typename).toBe('ForbiddenError');
        expect(data[field].message).toContain(`needs role ${minRole}`);
        expect(await orgRows()).toEqual(before);
      }
    },
  );

  it.each(QUERIES.map((q) => [q.field, q.minRole, q] as const))('query %s (needs %s)', async (field, minRole, q) => {
    const res = await api.gql(q.query, q.variables?.() ?? {}, caller.token());
    if (rank[caller.role] >= rank[minRole]) {
      expect(res.errors).toBeUndefined();
      expect(res.data[field]).not.toBeNull();
    } else {
      expect(res.errors?.[0].extensions?.code).toBe('FORBIDDEN');
    }
  });

  it('viewer reports the role', async () => {
    const data = await run('{ viewer { role organization { id } } }', {}, caller.token());
    expect(data.viewer).toEqual({ role: caller.role, organization: { id: orgId } });
  });
});

describe('sign-up and sign-in act on the caller\'s own account', () => {
  it.each(PUBLIC_MUTATIONS.map((m) => [m.field, m] as const))('%s works anonymously and for a VIEWER', async (_f, m) => {
    await m.check(null);
    await m.check(callers['VIEWER user']);
  });
});

describe('granting roles', () => {
  // API keys: a caller may create keys up to their own role, never above it.
  const KEY_GRANTS: [string, Role, Role, boolean][] = CALLERS.flatMap((c) =>
    ROLES.map((keyRole) => [c.label, c.role, keyRole, rank[c.role] >= rank.ADMIN && rank[keyRole] <= rank[c.role]] as [string, Role, Role, boolean]),
  );

  it.each(KEY_GRANTS)('%s (%s) creating a %s key: allowed=%s', async (label, _role, keyRole, allowed) => {
    const token = CALLERS.find((c) => c.label === label)!.token();
    const before = await orgRows();
    const data = await run(CREATE_KEY, { input: { name: unique('grant'), role: keyRole } }, token);
    if (allowed) {
      expect(data.createApiKey.createdApiKey.apiKey.role).toBe(keyRole);
      // The new key really carries that role.
      const viewer = await run('{ viewer { role } }', {}, data.createApiKey.createdApiKey.secret);
      expect(viewer.viewer.role).toBe(keyRole);
    } else {
      expect(data.createApiKey.__typename).toBe('ForbiddenError');
      expect(await orgRows()).toEqual(before);
    }
  });

  // Members: ADMIN may add members up to ADMIN; only an OWNER makes an OWNER.
  const MEMBER_GRANTS: [string, Role, boolean][] = [
    ['OWNER user', 'OWNER', true],
    ['OWNER API key', 'OWNER', true],
    ['OWNER user', 'ADMIN', true],
    ['ADMIN user', 'OWNER', false],
    ['ADMIN API key', 'OWNER', false],
    ['ADMIN user', 'ADMIN', true],
    ['ADMIN API key', 'MEMBER', true],
    ['MEMBER user', 'VIEWER', false],
  ];
  it.each(MEMBER_GRANTS)('%s adding a member as %s: allowed=%s', async (label, role, allowed) => {
    const token = CALLERS.find((c) => c.label === label)!.token();
    const user = await spareUser();
    const before = await orgRows();
    const data = await run(ADD_MEMBER, { input: { email: user.email, role } }, token);
    if (allowed) {
      expect(data.addMember).toEqual({ __typename: 'AddMemberSuccess', membership: { role } });
    } else {
      expect(data.addMember.__typename).toBe('ForbiddenError');
      expect(await orgRows()).toEqual(before);
    }
  });
});

describe('removing members', () => {
  it('an ADMIN cannot remove an OWNER; an OWNER can remove another OWNER', async () => {
    const second = await joinAs('OWNER');
    for (const label of ['ADMIN user', 'ADMIN API key']) {
      const before = await orgRows();
      const data = await run(REMOVE_MEMBER, { id: second.userId }, CALLERS.find((c) => c.label === label)!.token());
      expect(data.removeMember.__typename).toBe('ForbiddenError');
      expect(await orgRows()).toEqual(before);
    }
    const data = await run(REMOVE_MEMBER, { id: second.userId }, owner.token);
    expect(data.removeMember.__typename).toBe('RemoveMemberSuccess');
  });

  it('the last OWNER cannot be removed, not even by themselves', async () => {
    // An organization of its own, so the OWNERs added above do not count.
    const solo = await signUp(api, unique('Solo'));
    const soloKey = await newKey('OWNER', solo.token);
    const admin = await spareUser();
    ok(await api.gql(ADD_MEMBER, { input: { email: admin.email, role: 'ADMIN' } }, solo.token), 'addMember', 'membership');
    const soloRows = async () =>
      JSON.parse(JSON.stringify(await api.orm.em.getConnection().execute('select * from memberships where organization_id = ? order by id', [decodeGlobalID(solo.orgId).id])));
    const before = await soloRows();
    for (const token of [solo.token, soloKey.secret]) {
      const data = await run(REMOVE_MEMBER, { id: solo.userId }, token);
      expect(data.removeMember.__typename).toBe('ConflictError');
      expect(await soloRows()).toEqual(before);
    }
    expect((await run('{ viewer { role } }', {}, solo.token)).viewer).toEqual({ role: 'OWNER' });
  });

  it("a removed member's token stops working at once", async () => {
    const member = await joinAs('MEMBER');
    expect((await run('{ viewer { role } }', {}, member.orgToken)).viewer).toEqual({ role: 'MEMBER' });
    const removed = await run(REMOVE_MEMBER, { id: member.userId }, callers['ADMIN user']);
    expect(removed.removeMember.__typename).toBe('RemoveMemberSuccess');

    expect((await run('{ viewer { role } }', {}, member.orgToken)).viewer).toBeNull();
    const models = await api.gql('{ models { totalCount } }', {}, member.orgToken);
    expect(models.errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');
    const create = await run(CREATE_MODEL, {
      input: { name: unique('after removal'), task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' },
    }, member.orgToken);
    expect(create.createModel.__typename).toBe('AuthenticationError');
    // Signing in again for that organization is refused too; their own organization still works.
    const again = await run(SIGN_IN, { input: { email: member.email, password: member.password, organizationId: orgId } }, null);
    expect(again.signIn.__typename).toBe('ForbiddenError');
    expect((await run('{ viewer { role } }', {}, member.token)).viewer).toEqual({ role: 'OWNER' });
  });
});

describe('coverage', () => {
  it('every mutation of the schema has a role rule in this file', async () => {
    const res = await api.gql('{ __schema { mutationType { fields { name } } queryType { fields { name } } } }');
    const mutations = res.data.__schema.mutationType.fields.map((f: { name: string }) => f.name).sort();
    expect([...MUTATIONS.map((m) => m.field), ...PUBLIC_MUTATIONS.map((m) => m.field)].sort()).toEqual(mutations);
    const queries = res.data.__schema.queryType.fields.map((f: { name: string }) => f.name).sort();
    expect(QUERIES.map((q) => q.field).sort()).toEqual(queries);
  });
});
