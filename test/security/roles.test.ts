// Hostile client, roles: a VIEWER only reads. Every mutation of the schema is tried by a VIEWER
// member (signed in for the organization), a VIEWER API key and a member whose token was issued
// while they were ADMIN and who is now a VIEWER, over HTTP and over graphql-ws, with inputs an
// OWNER's call succeeds with (checked last): each gets ForbiddenError and writes nothing. A
// mutation added to the schema fails the coverage test until it has a case here (signUp and
// signIn, which anyone may call, are listed as exempt with the reason, and checked not to raise
// the caller's role). (test/roles.test.ts keeps the full role matrix; this file is the VIEWER's.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { schema } from '../../src/graphql/schema.js';
import { ok, signUp, startTestApi, type TestApi } from '../helpers/api.js';
import {
  RESULT,
  SUITE_ENV,
  RESULT_ID,
  bearer,
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
  type OrgFixture,
} from '../helpers/hostile.js';

let api: TestApi;
let F: OrgFixture;

const m = (field: string, signature: string, args: string, withId = true) =>
  `mutation${signature ? `(${signature})` : ''} { ${field}${args ? `(${args})` : ''} { ${withId ? RESULT_ID : RESULT} } }`;

interface Case {
  doc: string;
  /** Makes what the call acts on, as the OWNER, and returns valid variables. */
  prepare: () => Promise<Record<string, unknown>>;
}

const MUTATIONS: Record<string, Case> = {
  createModel: {
    doc: m('createModel', '$input: CreateModelInput!', 'input: $input', false),
    prepare: async () => ({ input: { name: unique('model'), task: 'OBJECT_DETECTION', framework: 'TORCHVISION', architecture: 'fasterrcnn_mobilenet_v3_large_320_fpn' } }),
  },
  updateModel: {
    doc: m('updateModel', '$id: ID!, $input: UpdateModelInput!', 'id: $id, input: $input'),
    prepare: async () => ({ id: F.model, input: { name: unique('renamed'), description: 'by a viewer' } }),
  },
  archiveModel: {
    doc: m('archiveModel', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: await newModel(api, F.owner.token, unique('to archive')) }),
  },
  unarchiveModel: {
    doc: m('unarchiveModel', '$id: ID!', 'id: $id'),
    prepare: async () => {
      const id = await newModel(api, F.owner.token, unique('to unarchive'));
      ok(await api.gql(q.archiveModel, { id }, F.owner.token), 'archiveModel', 'model');
      return { id };
    },
  },
  createDataset: {
    doc: m('createDataset', '$input: CreateDatasetInput!', 'input: $input', false),
    prepare: async () => ({ input: { name: unique('dataset'), task: 'OBJECT_DETECTION' } }),
  },
  createDatasetVersion: {
    doc: m('createDatasetVersion', '$input: CreateDatasetVersionInput!', 'input: $input'),
    prepare: async () => ({ input: { datasetId: F.dataset, format: 'YOLO', filename: 'shapes.tar.gz' } }),
  },
  finalizeDatasetVersion: {
    doc: m('finalizeDatasetVersion', '$id: ID!', 'id: $id'),
    // Uploaded in the seed (new uploads would go to the default storage, a dead endpoint).
    prepare: async () => ({ id: F.uploadedVersion }),
  },
  createComputeProfile: {
    doc: m('createComputeProfile', '$input: CreateComputeProfileInput!', 'input: $input', false),
    prepare: async () => ({ input: { name: unique('profile'), provider: 'PLATFORM', strategy: 'QUEUE', isDefault: true } }),
  },
  updateComputeProfile: {
    doc: m('updateComputeProfile', '$id: ID!, $input: UpdateComputeProfileInput!', 'id: $id, input: $input'),
    prepare: async () => ({ id: F.sagemakerProfile, input: { maxConcurrentJobs: 7, fallbackProfileIds: [] } }),
  },
  deleteComputeProfile: {
    doc: m('deleteComputeProfile', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: await newProfile(api, F.owner.token, unique('to delete')) }),
  },
  createStorageProfile: {
    doc: m('createStorageProfile', '$input: CreateStorageProfileInput!', 'input: $input', false),
    prepare: async () => ({
      input: {
        name: unique('storage'),
        kind: 'S3',
        config: { bucket: 'viewer-bucket', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9', forcePathStyle: true },
        credentials: { accessKeyId: 'AKIAVIEWERVIEWERVIEW', secretAccessKey: 'viewer-secret-access-key-0123' },
      },
    }),
  },
  updateStorageProfile: {
    doc: m('updateStorageProfile', '$id: ID!, $input: UpdateStorageProfileInput!', 'id: $id, input: $input'),
    prepare: async () => ({ id: F.storageProfile, input: { name: unique('renamed storage') } }),
  },
  deleteStorageProfile: {
    doc: m('deleteStorageProfile', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: await newStorageProfile(api, F.owner.token, unique('to delete'), F.marker) }),
  },
  checkStorageProfile: {
    doc: m('checkStorageProfile', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: F.storageProfile }),
  },
  createApiKey: {
    doc: m('createApiKey', '$input: CreateApiKeyInput!', 'input: $input', false),
    // VIEWER, the lowest role: only the caller's own role can be what refuses it.
    prepare: async () => ({ input: { name: unique('key'), role: 'VIEWER' } }),
  },
  revokeApiKey: {
    doc: m('revokeApiKey', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: (await newKey(api, F.owner.token, 'VIEWER')).id }),
  },
  addMember: {
    doc: m('addMember', '$input: AddMemberInput!', 'input: $input', false),
    prepare: async () => ({ input: { email: (await spareUser(api)).email, role: 'VIEWER' } }),
  },
  removeMember: {
    doc: m('removeMember', '$userId: ID!', 'userId: $userId'),
    prepare: async () => {
      const user = await spareUser(api);
      ok(await api.gql(q.addMember, { input: { email: user.email, role: 'VIEWER' } }, F.owner.token), 'addMember', 'membership');
      return { userId: user.userId };
    },
  },
  trainModel: {
    doc: m('trainModel', '$modelId: ID!, $input: TrainModelInput!', 'modelId: $modelId, input: $input'),
    prepare: async () => ({ modelId: F.model, input: { datasetVersionId: F.datasetVersion, computeProfileId: F.platformProfile, config: { epochs: 1 } } }),
  },
  cancelTrainingSession: {
    doc: m('cancelTrainingSession', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: await newSession(api, F) }),
  },
  resumeTrainingSession: {
    doc: m('resumeTrainingSession', '$id: ID!', 'id: $id'),
    prepare: async () => ({ id: await newPausedSession(api, F) }),
  },
};

/** Mutations anyone may call; each is checked below not to raise a VIEWER's role. */
const EXEMPT: Record<string, string> = {
  signUp: 'creates a new account and organization (its creator is its OWNER); acts on nothing that exists',
  signIn: "exchanges the caller's own password for a token carrying the role they already hold",
};

interface Caller {
  label: string;
  token: string;
}
let callers: Caller[];
/** Variables per mutation, made once: a refused call changes nothing, so every caller can use them. */
const prepared = new Map<string, Record<string, unknown>>();

async function signInFor(email: string, password: string) {
  return ok(await api.gql(q.signIn, { input: { email, password, organizationId: F.owner.orgId } }), 'signIn', 'authPayload');
}

beforeAll(async () => {
  api = await startTestApi({ env: SUITE_ENV });
  F = await seedOrg(api, 'Roles');
  const viewer = await signUp(api, unique('viewer home'));
  ok(await api.gql(q.addMember, { input: { email: viewer.email, role: 'VIEWER' } }, F.owner.token), 'addMember', 'membership');
  const viewerToken = (await signInFor(viewer.email, viewer.password)).token;
  // Signed in while ADMIN; then removed and added back as a VIEWER. The role is read per request,
  // so the old token must act as a VIEWER now.
  const demoted = await signUp(api, unique('demoted home'));
  ok(await api.gql(q.addMember, { input: { email: demoted.email, role: 'ADMIN' } }, F.owner.token), 'addMember', 'membership');
  const adminToken = (await signInFor(demoted.email, demoted.password)).token;
  ok(await api.gql(`mutation($id: ID!) { removeMember(userId: $id) { ${RESULT_ID} ... on RemoveMemberSuccess { membership { role } } } }`, { id: demoted.userId }, F.owner.token), 'removeMember', 'membership');
  ok(await api.gql(q.addMember, { input: { email: demoted.email, role: 'VIEWER' } }, F.owner.token), 'addMember', 'membership');
  callers = [
    { label: 'VIEWER member', token: viewerToken },
    { label: 'VIEWER API key', token: (await newKey(api, F.owner.token, 'VIEWER')).secret },
    { label: 'former ADMIN, now VIEWER, with the token issued as ADMIN', token: adminToken },
  ];
  for (const c of callers) expect((await api.gql('{ viewer { role } }', {}, c.token)).data.viewer, c.label).toEqual({ role: 'VIEWER' });
  for (const [field, c] of Object.entries(MUTATIONS)) prepared.set(field, await c.prepare());
}, 120_000);
afterAll(() => api?.close());

function expectForbidden(field: string, value: any, label: string) {
  expect(value?.__typename, `${label}: ${JSON.stringify(value)}`).toBe('ForbiddenError');
  expect(value.message).toMatch(/needs role (MEMBER|ADMIN|OWNER) or higher; you are VIEWER/);
}

describe('coverage', () => {
  it('every mutation of the schema is tried here, or exempt with a reason', () => {
    const fields = Object.keys(schema.getMutationType()!.getFields()).sort();
    expect([...Object.keys(MUTATIONS), ...Object.keys(EXEMPT)].sort()).toEqual(fields);
  });
});

describe('a VIEWER cannot mutate', () => {
  it.each(Object.keys(MUTATIONS))('%s over HTTP', async (field) => {
    for (const c of callers) {
      const before = await orgRows(api, F);
      const res = await api.gql(MUTATIONS[field].doc, prepared.get(field), c.token);
      expect(res.errors, c.label).toBeUndefined();
      expectForbidden(field, res.data[field], c.label);
      expect(await orgRows(api, F), c.label).toEqual(before);
    }
  });

  it.each([0, 1, 2])('every mutation over graphql-ws (caller %i)', async (i) => {
    const c = callers[i];
    const ws = wsClient(api, bearer(c.token));
    try {
      for (const [field, mc] of Object.entries(MUTATIONS)) {
        const before = await orgRows(api, F);
        const events = await wsRun(ws, mc.doc, prepared.get(field)!, { waitMs: 5_000 });
        const result = events.find((e): e is { next: { data?: any } } => typeof e === 'object' && 'next' in e);
        expect(result, `${c.label} ${field}: ${JSON.stringify(events)}`).toBeDefined();
        expectForbidden(field, result!.next.data?.[field], `${c.label} over ws`);
        expect(await orgRows(api, F), `${c.label} ${field}`).toEqual(before);
      }
    } finally {
      await ws.dispose();
    }
  });

  it('a mutation sent as GET (a link a VIEWER is tricked into, or sends) runs nothing', async () => {
    const [field, mc] = ['createModel', MUTATIONS.createModel];
    const url = new URL(api.url);
    url.searchParams.set('query', mc.doc);
    url.searchParams.set('variables', JSON.stringify(prepared.get(field)));
    for (const c of callers) {
      const before = await orgRows(api, F);
      const res = await fetch(url, { headers: { authorization: `Bearer ${c.token}`, accept: 'application/graphql-response+json' } });
      expect(res.status, c.label).toBeGreaterThanOrEqual(400);
      const body = (await res.json()) as { data?: unknown };
      expect(body.data ?? null).toBeNull();
      expect(await orgRows(api, F)).toEqual(before);
    }
  });
});

describe('exempt mutations do not raise a VIEWER', () => {
  it('signIn for the organization gives a VIEWER token, whatever the caller already holds', async () => {
    const user = await signUp(api, unique('signin home'));
    ok(await api.gql(q.addMember, { input: { email: user.email, role: 'VIEWER' } }, F.owner.token), 'addMember', 'membership');
    for (const token of [null, ...callers.map((c) => c.token), F.owner.token]) {
      const res = await api.gql(q.signIn, { input: { email: user.email, password: user.password, organizationId: F.owner.orgId } }, token);
      const payload = ok(res, 'signIn', 'authPayload');
      expect(payload.role).toBe('VIEWER');
      expect((await api.gql('{ viewer { role organization { id } } }', {}, payload.token)).data.viewer).toEqual({ role: 'VIEWER', organization: { id: F.owner.orgId } });
    }
  });

  it("signUp by a VIEWER makes them OWNER of a new, empty organization, never of this one", async () => {
    const before = await orgRows(api, F);
    for (const c of callers) {
      const res = await api.gql(
        `mutation($input: SignUpInput!) { signUp(input: $input) { ${RESULT} ... on SignUpSuccess { authPayload { token role organization { id } } } } }`,
        { input: { email: `${unique('fresh').replace(' ', '-')}@example.com`, password: 'correct horse battery', organizationName: 'Mine' } },
        c.token,
      );
      const payload = ok(res, 'signUp', 'authPayload');
      expect(payload.role).toBe('OWNER');
      expect(payload.organization.id).not.toBe(F.owner.orgId);
      const models = await api.gql('{ models(includeArchived: true) { totalCount } }', {}, payload.token);
      expect(models.data.models.totalCount).toBe(0);
    }
    expect(await orgRows(api, F)).toEqual(before);
  });
});

describe('positive control', () => {
  // Last: these change the organization. Fresh variables, so each proves its inputs are valid.
  it.each(Object.keys(MUTATIONS))('the OWNER succeeds at %s with the same kind of input', async (field) => {
    const vars = field === 'finalizeDatasetVersion' || field === 'createDatasetVersion' ? prepared.get(field)! : await MUTATIONS[field].prepare();
    const res = await api.gql(MUTATIONS[field].doc, vars, F.owner.token);
    expect(res.errors).toBeUndefined();
    expect(res.data[field].__typename, JSON.stringify(res.data[field])).toBe(`${field[0].toUpperCase()}${field.slice(1)}Success`);
  });
});
