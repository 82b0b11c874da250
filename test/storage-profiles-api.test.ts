// Storage profiles through GraphQL (an organization's own S3 or Azure storage): who may manage them,
// credentials that are never returned and are stored encrypted, field paths of refused input, one
// default per organization, no deleting a profile that still holds dataset archives, and
// checkStorageProfile against a real S3 service (s3rver on loopback, a child process). A dataset
// uploaded into an organization's own bucket round-trips: the presigned PUT goes to that bucket and
// finalizeDatasetVersion reads it from there. Endpoints on loopback are allowed outside production only.
import { createHash, randomBytes } from 'node:crypto';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { createDatasetVersion, datasetArchive, finalizeDatasetVersion, putArchive } from './helpers/seed.js';
import { S3RVER_KEY, startS3rver, type S3Target } from './helpers/storage-servers.js';

let api: TestApi;
let s3: S3Target;
let owner: SignedUp;
let other: SignedUp;
let adminToken: string;
let memberToken: string;
let viewerKey: string;

// s3rver checks the access key id (it must be S3RVER) but not signatures, so any secret works;
// this one carries a marker to search for. (Not S3RVER_KEY spread: the AWS SDK adds a "$source"
// property to the credentials object the helper's own client was given.)
const ACCESS_KEY_ID = S3RVER_KEY.accessKeyId;
const SECRET = `s3-secret-${randomBytes(6).toString('hex')}-wJalrXUtnFEMI`;
const SESSION_TOKEN = `s3-session-${randomBytes(6).toString('hex')}-FwoGZXIvYXdz`;

const RB = `__typename ... on Error { message } ... on ValidationError { field }`;
const R = `${RB} ... on NotFoundError { resource id }`;
const PROFILE_FIELDS = 'id name kind config credentialsHint isDefault createdAt updatedAt';
const CREATE = `mutation($input: CreateStorageProfileInput!) { createStorageProfile(input: $input) { ${RB}
  ... on CreateStorageProfileSuccess { storageProfile { ${PROFILE_FIELDS} } } } }`;
const UPDATE = `mutation($id: ID!, $input: UpdateStorageProfileInput!) { updateStorageProfile(id: $id, input: $input) { ${R}
  ... on UpdateStorageProfileSuccess { storageProfile { ${PROFILE_FIELDS} } } } }`;
const DELETE = `mutation($id: ID!) { deleteStorageProfile(id: $id) { ${R} ... on DeleteStorageProfileSuccess { storageProfile { id } } } }`;
const CHECK = `mutation($id: ID!) { checkStorageProfile(id: $id) { ${R} ... on CheckStorageProfileSuccess { check { ok reason } } } }`;
const LIST = `{ storageProfiles { ${PROFILE_FIELDS} } }`;

const local = (globalId: string) => decodeGlobalID(globalId).id;
const sha256 = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
let counter = 0;
const s3Input = (extra: Record<string, unknown> = {}) => ({
  name: `bucket ${++counter}`,
  kind: 'S3',
  config: { bucket: s3.bucket, region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true },
  credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET, sessionToken: SESSION_TOKEN },
  ...extra,
});

/** Every response text this file receives, for the search for secrets at the end. */
const texts: string[] = [];
async function send(query: string, variables: Record<string, unknown>, token: string | null, field: string) {
  const res = await api.gql(query, variables, token);
  texts.push(JSON.stringify(res));
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data[field];
}
const create = (input: Record<string, unknown>, token = owner.token) => send(CREATE, { input }, token, 'createStorageProfile');
const update = (id: string, input: Record<string, unknown>, token = owner.token) => send(UPDATE, { id, input }, token, 'updateStorageProfile');
const remove = (id: string, token = owner.token) => send(DELETE, { id }, token, 'deleteStorageProfile');
const check = (id: string, token = owner.token) => send(CHECK, { id }, token, 'checkStorageProfile');
const list = async (token = owner.token) => send(LIST, {}, token, 'storageProfiles');
const profileRows = () => api.app.sql.query<Record<string, unknown>>('select * from storage_profiles order by id');

async function createDataset(token: string, name: string) {
  return ok(
    await api.gql(`mutation($n: String!) { createDataset(input: { name: $n, task: OBJECT_DETECTION }) { ${RB} ... on CreateDatasetSuccess { dataset { id } } } }`, { n: name }, token),
    'createDataset',
    'dataset',
  ).id as string;
}

/** Keys under a prefix in the s3rver bucket, read with s3rver's own client (not through the API). */
async function bucketKeys(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const entry of s3.storage.list(prefix)) keys.push(entry.key);
  return keys;
}

beforeAll(async () => {
  // One after the other, so a failed start leaves nothing running unreferenced.
  s3 = await startS3rver();
  api = await startTestApi();
  owner = await signUp(api, 'Own Storage Inc');
  other = await signUp(api, 'Other Inc');
  const join = async (role: string) => {
    const user = await signUp(api, `home ${role}`);
    ok(await api.gql(`mutation($input: AddMemberInput!) { addMember(input: $input) { ${RB} ... on AddMemberSuccess { membership { role } } } }`, { input: { email: user.email, role } }, owner.token), 'addMember', 'membership');
    const res = await api.gql(`mutation($input: SignInInput!) { signIn(input: $input) { ${RB} ... on SignInSuccess { authPayload { token } } } }`, {
      input: { email: user.email, password: user.password, organizationId: owner.orgId },
    });
    return ok(res, 'signIn', 'authPayload').token as string;
  };
  adminToken = await join('ADMIN');
  memberToken = await join('MEMBER');
  viewerKey = ok(
    await api.gql(`mutation { createApiKey(input: { name: "reader", role: VIEWER }) { ${RB} ... on CreateApiKeySuccess { createdApiKey { secret } } } }`, {}, owner.token),
    'createApiKey',
    'createdApiKey',
  ).secret;
}, 60_000);
afterAll(async () => {
  await api?.close();
  await s3?.close();
});

describe('managing profiles', () => {
  it('OWNER and ADMIN create, update, check and delete; MEMBER and VIEWER are refused and change nothing, but may list', async () => {
    const created = await create(s3Input({ name: 'managed' }));
    expect(created.__typename).toBe('CreateStorageProfileSuccess');
    const id = created.storageProfile.id;
    expect(created.storageProfile).toMatchObject({
      name: 'managed',
      kind: 'S3',
      isDefault: false,
      config: { bucket: s3.bucket, region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true },
    });

    const before = await profileRows();
    for (const token of [memberToken, viewerKey]) {
      expect((await create(s3Input(), token)).__typename).toBe('ForbiddenError');
      expect((await update(id, { name: 'taken over' }, token)).__typename).toBe('ForbiddenError');
      expect((await check(id, token)).__typename).toBe('ForbiddenError');
      expect((await remove(id, token)).__typename).toBe('ForbiddenError');
      expect((await list(token)).map((p: { id: string }) => p.id)).toContain(id);
    }
    expect(await profileRows()).toEqual(before);
    const anonymous = await api.gql(CREATE, { input: s3Input() });
    expect(anonymous.data.createStorageProfile.__typename).toBe('AuthenticationError');
    expect((await api.gql(LIST, {})).errors?.[0].extensions?.code).toBe('UNAUTHENTICATED');

    const renamed = await update(id, { name: 'renamed by admin', config: { bucket: s3.bucket, endpoint: s3.endpoint, forcePathStyle: true } }, adminToken);
    expect(renamed.storageProfile).toMatchObject({ id, name: 'renamed by admin', config: { region: 'us-east-1' } });
    expect(Date.parse(renamed.storageProfile.updatedAt)).toBeGreaterThanOrEqual(Date.parse(created.storageProfile.updatedAt));
    expect((await check(id, adminToken)).check).toEqual({ ok: true, reason: null });
    expect(await remove(id, adminToken)).toEqual({ __typename: 'DeleteStorageProfileSuccess', storageProfile: { id } });
    expect((await list()).map((p: { id: string }) => p.id)).not.toContain(id);
    expect(await remove(id, adminToken)).toMatchObject({ __typename: 'NotFoundError', resource: 'StorageProfile', id });
  });

  it('credentials are never returned, and are stored only as an envelope bound to the organization and row', async () => {
    const created = await create(s3Input({ name: 'sealed' }));
    const id = created.storageProfile.id;
    // An identifier-only hint (the access key id is 6 characters: too short to show any of it).
    expect(created.storageProfile.credentialsHint).toBe('access key …');
    const fields = await api.gql('{ __type(name: "StorageProfile") { fields { name } } }');
    expect(fields.data.__type.fields.map((f: { name: string }) => f.name).filter((n: string) => /secret|credential(?!sHint)|key|token/i.test(n))).toEqual([]);
    await update(id, { credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET, sessionToken: SESSION_TOKEN } });
    await send(`query($id: ID!) { node(id: $id) { ... on StorageProfile { ${PROFILE_FIELDS} } } }`, { id }, owner.token, 'node');
    await list();
    await list(viewerKey);
    await check(id);
    const [row] = await api.app.sql.query<Record<string, unknown>>('select * from storage_profiles where id = ?', [local(id)]);
    const envelope = String(row.credentials_ciphertext);
    expect(envelope).toMatch(/^v1\.test1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    expect(JSON.stringify(row)).not.toContain(SECRET);
    expect(JSON.stringify(row)).not.toContain(SESSION_TOKEN);
    const aad = (org: string, profile: string) => `storage_profiles:${local(org)}:${local(profile)}`;
    expect(JSON.parse(api.app.secretBox.decrypt(envelope, aad(owner.orgId, id)))).toEqual({ accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET, sessionToken: SESSION_TOKEN });
    expect(() => api.app.secretBox.decrypt(envelope, aad(other.orgId, id))).toThrow();
    await remove(id);
  });

  it('refused input names the field and writes nothing', async () => {
    const existing = (await create(s3Input({ name: 'to edit' }))).storageProfile.id;
    const before = await profileRows();
    const cases: [string, Promise<any>, string][] = [
      ['empty name', create(s3Input({ name: '  ' })), 'input.name'],
      ['bucket', create(s3Input({ config: { bucket: 'UPPER_case' } })), 'input.config.bucket'],
      ['unknown config key', create(s3Input({ config: { bucket: s3.bucket, sse: 'aws:kms' } })), 'input.config'],
      ['endpoint with a query', create(s3Input({ config: { bucket: s3.bucket, endpoint: `${s3.endpoint}/?token=1` } })), 'input.config.endpoint'],
      ['missing secret', create(s3Input({ credentials: { accessKeyId: 'S3RVER' } })), 'input.credentials.secretAccessKey'],
      ['credentials not an object', create(s3Input({ credentials: [SECRET] })), 'input.credentials'],
      ['azure account key', create({ name: 'az', kind: 'AZURE', config: { accountName: 'acct', container: 'data' }, credentials: { accountKey: `${SECRET}!` } }), 'input.credentials.accountKey'],
      ['update: empty name', update(existing, { name: '' }), 'input.name'],
      ['update: bucket', update(existing, { config: { bucket: '-bad-' } }), 'input.config.bucket'],
      ['update: a rename with a short secret', update(existing, { name: 'renamed', credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'short' } }), 'input.credentials.secretAccessKey'],
      ['update: malformed id', update('garbage', { name: 'x' }), 'id'],
    ];
    for (const [label, pending, field] of cases) {
      const result = await pending;
      expect(result, label).toMatchObject({ __typename: 'ValidationError', field });
      expect(result.message.startsWith(`${field}: `), label).toBe(true);
      expect(result.message, label).not.toContain(SECRET);
    }
    expect(await profileRows()).toEqual(before);
    // An unknown kind is refused by GraphQL itself.
    const kind = await api.gql(CREATE, { input: s3Input({ kind: 'GCS' }) }, owner.token);
    expect(kind.errors?.[0].message).toMatch(/StorageProfileKind/);
    expect(await profileRows()).toEqual(before);
    await remove(existing);
  });

  it('one default per organization: a new default replaces the old one, in that organization only', async () => {
    const theirs = (await create(s3Input({ name: 'their default', isDefault: true }), other.token)).storageProfile.id;
    const defaults = async (token = owner.token) => (await list(token)).filter((p: { isDefault: boolean }) => p.isDefault).map((p: { id: string }) => p.id);
    const first = (await create(s3Input({ name: 'first default', isDefault: true }))).storageProfile;
    expect(first.isDefault).toBe(true);
    const second = (await create(s3Input({ name: 'second default', isDefault: true }))).storageProfile;
    expect(await defaults()).toEqual([second.id]);
    expect((await update(first.id, { isDefault: true })).storageProfile.isDefault).toBe(true);
    expect(await defaults()).toEqual([first.id]);
    // A refused update does not move the default.
    expect((await update(second.id, { isDefault: true, config: { bucket: 'B' } })).__typename).toBe('ValidationError');
    expect(await defaults()).toEqual([first.id]);
    expect((await update(first.id, { isDefault: false })).storageProfile.isDefault).toBe(false);
    expect(await defaults()).toEqual([]);
    // Concurrent defaults still end with exactly one.
    const raced = await Promise.all([1, 2, 3, 4].map((i) => create(s3Input({ name: `race ${i}`, isDefault: true }))));
    expect(raced.map((r) => r.__typename)).toEqual(Array(4).fill('CreateStorageProfileSuccess'));
    expect(await defaults()).toHaveLength(1);
    // The database refuses a second default by itself.
    await expect(
      api.app.sql.query(`update storage_profiles set is_default = true where organization_id = ? and name = 'second default'`, [local(owner.orgId)]),
    ).rejects.toThrow(/storage_profiles_one_default_per_org/);
    // The other organization's default was never touched.
    expect(await defaults(other.token)).toEqual([theirs]);
    for (const p of await list()) await remove(p.id);
    await remove(theirs, other.token);
  });
});

describe('checkStorageProfile against s3rver', () => {
  it('passes for a working bucket and leaves no probe behind; reports a wrong bucket or key instead of failing', async () => {
    const good = (await create(s3Input({ name: 'good' }))).storageProfile.id;
    expect((await check(good)).check).toEqual({ ok: true, reason: null });
    expect(await bucketKeys(`orgs/${local(owner.orgId)}/.cvtrain-check/`)).toEqual([]);

    const noBucket = (await create(s3Input({ name: 'no bucket', config: { bucket: 'no-such-bucket', endpoint: s3.endpoint, forcePathStyle: true } }))).storageProfile.id;
    const missing = (await check(noBucket)).check;
    expect(missing.ok).toBe(false);
    expect(missing.reason).toMatch(/bucket/i);

    const wrongKey = (await create(s3Input({ name: 'wrong key', credentials: { accessKeyId: 'NOT-S3RVER', secretAccessKey: SECRET } }))).storageProfile.id;
    const refused = (await check(wrongKey)).check;
    expect(refused.ok).toBe(false);
    expect(refused.reason).toContain('403');

    // Fixing the key through the API takes effect on the next check.
    await update(wrongKey, { credentials: { accessKeyId: ACCESS_KEY_ID, secretAccessKey: SECRET } });
    expect((await check(wrongKey)).check).toEqual({ ok: true, reason: null });
    for (const id of [good, noBucket, wrongKey]) await remove(id);
  });
});

describe("datasets in an organization's own bucket", () => {
  it('the presigned PUT goes to the bucket, finalize reads it from there, and the profile cannot be deleted while it holds the archive', async () => {
    const profile = (await create(s3Input({ name: 'datasets bucket', isDefault: true }))).storageProfile.id;
    const dataset = await createDataset(memberToken, 'kept in own bucket');
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, memberToken, dataset, 'YOLO', archive.filename);
    const key = `orgs/${local(owner.orgId)}/datasets/${local(dataset)}/versions/${local(upload.version.id)}/${archive.filename}`;
    const url = new URL(upload.uploadUrl);
    expect(`${url.origin}${decodeURIComponent(url.pathname)}`).toBe(`${s3.endpoint}/${s3.bucket}/${key}`);
    expect(url.searchParams.get('X-Amz-Signature')).toMatch(/^[0-9a-f]{64}$/);
    await putArchive(upload, archive.bytes);
    // In the organization's bucket, and not in the platform's storage.
    expect((await s3.storage.head(key))?.size).toBe(archive.bytes.length);
    expect(await api.app.storage.platform.head(key)).toBeNull();

    const result = await finalizeDatasetVersion(api, memberToken, upload.version.id);
    expect(result.datasetVersion).toMatchObject({ status: 'READY', sha256: sha256(archive.bytes), sizeBytes: archive.bytes.length, classNames: archive.classNames });
    const [row] = await api.app.sql.query<{ storage_profile_id: string; archive_key: string }>(
      'select storage_profile_id, archive_key from dataset_versions where id = ?',
      [local(upload.version.id)],
    );
    expect(row).toEqual({ storage_profile_id: local(profile), archive_key: key });

    // Deleting the profile would strand the archive: refused, and nothing changes.
    const before = await profileRows();
    const refused = await remove(profile);
    expect(refused.__typename).toBe('ConflictError');
    expect(refused.message).toMatch(/dataset version/);
    expect(await profileRows()).toEqual(before);
    // Not even by making another profile the default first.
    const replacement = (await create(s3Input({ name: 'replacement', isDefault: true }))).storageProfile.id;
    expect((await remove(profile)).__typename).toBe('ConflictError');
    await remove(replacement);
    await update(profile, { isDefault: true });
  });

  it('a version keeps reading from the storage it was uploaded to after the default changes', async () => {
    const [profile] = (await list()).filter((p: { isDefault: boolean }) => p.isDefault);
    const dataset = await createDataset(owner.token, 'moved default');
    const archive = datasetArchive('COCO');
    const inBucket = await createDatasetVersion(api, owner.token, dataset, 'COCO', archive.filename);
    await putArchive(inBucket, archive.bytes);
    // The organization goes back to the platform's storage before finalizing.
    expect((await update(profile.id, { isDefault: false })).storageProfile.isDefault).toBe(false);
    const onPlatform = await createDatasetVersion(api, owner.token, dataset, 'COCO', archive.filename);
    expect(new URL(onPlatform.uploadUrl).origin).toBe(new URL(api.url).origin);
    await putArchive(onPlatform, archive.bytes);
    for (const version of [inBucket, onPlatform]) {
      const result = await finalizeDatasetVersion(api, owner.token, version.version.id);
      expect(result.datasetVersion).toMatchObject({ status: 'READY', sha256: sha256(archive.bytes) });
    }
    // And the organization's sessions can train on the one in its bucket.
    const model = ok(
      await api.gql(`mutation { createModel(input: { name: "bucket model", task: OBJECT_DETECTION, framework: TORCHVISION, architecture: "ssdlite320_mobilenet_v3_large" }) { ${RB} ... on CreateModelSuccess { model { id } } } }`, {}, owner.token),
      'createModel',
      'model',
    );
    const train = await api.gql(
      `mutation($m: ID!, $dv: ID!) { trainModel(modelId: $m, input: { datasetVersionId: $dv, config: { epochs: 1 } }) { ${R} ... on TrainModelSuccess { trainingSession { status } } } }`,
      { m: model.id, dv: inBucket.version.id },
      owner.token,
    );
    expect(train.data.trainModel).toEqual({ __typename: 'TrainModelSuccess', trainingSession: { status: 'QUEUED' } });
  });

  it('another organization neither sees nor reaches the profile, and its own uploads stay on the platform', async () => {
    const [profile] = await list();
    for (const [query, field] of [
      [UPDATE, 'updateStorageProfile'],
      [DELETE, 'deleteStorageProfile'],
      [CHECK, 'checkStorageProfile'],
    ] as const) {
      // (Delete and check ignore the input variable they do not declare.)
      const result = await send(query, { id: profile.id, input: { name: 'mine now', isDefault: true } }, other.token, field);
      expect(result).toMatchObject({ __typename: 'NotFoundError', resource: 'StorageProfile', id: profile.id });
    }
    expect(await list(other.token)).toEqual([]);
    const node = await api.gql('query($id: ID!) { node(id: $id) { id } }', { id: profile.id }, other.token);
    expect(node.data.node).toBeNull();
    const dataset = await createDataset(other.token, 'theirs');
    const upload = await createDatasetVersion(api, other.token, dataset, 'YOLO');
    expect(new URL(upload.uploadUrl).origin).toBe(new URL(api.url).origin);
  });
});

describe('endpoints', () => {
  it('a loopback endpoint is allowed outside production (the s3rver profiles above) and refused in production', async () => {
    const prod = await startTestApi({ env: { NODE_ENV: 'production' } });
    try {
      const admin = await signUp(prod, 'Production Inc');
      const attempt = async (input: Record<string, unknown>) => {
        const res = await prod.gql(CREATE, { input }, admin.token);
        expect(res.errors).toBeUndefined();
        return res.data.createStorageProfile;
      };
      const base = { name: 'prod bucket', kind: 'S3', credentials: { accessKeyId: 'AKIAPRODUCTION000001', secretAccessKey: SECRET } };
      for (const [endpoint, message] of [
        [s3.endpoint, 'must use https'],
        ['https://127.0.0.1:9000', 'must not point at a loopback, private or link-local address'],
        ['https://localhost:9000', 'must not point at a loopback, private or link-local address'],
        ['https://10.1.2.3', 'must not point at a loopback, private or link-local address'],
        ['https://169.254.169.254', 'must not point at a loopback, private or link-local address'],
        ['https://[::1]:9000', 'must not point at a loopback, private or link-local address'],
      ]) {
        expect(await attempt({ ...base, config: { bucket: 'prod-bucket', endpoint } }), endpoint).toEqual({
          __typename: 'ValidationError',
          field: 'input.config.endpoint',
          message: `input.config.endpoint: ${message}`,
        });
      }
      const azure = await attempt({ name: 'prod azure', kind: 'AZURE', config: { accountName: 'prodacct', container: 'data', endpoint: 'http://127.0.0.1:10000/prodacct' }, credentials: { accountKey: 'cHJvZHVjdGlvbi1rZXktMDEyMzQ1Njc4OQ==' } });
      expect(azure).toMatchObject({ __typename: 'ValidationError', field: 'input.config.endpoint' });
      expect(await prod.app.sql.query('select id from storage_profiles')).toEqual([]);
      // A public https endpoint (or none: the provider's own) is fine, and cannot be moved onto loopback later.
      const created = await attempt({ ...base, config: { bucket: 'prod-bucket', endpoint: 'https://s3.eu-central-1.amazonaws.com' } });
      expect(created.__typename).toBe('CreateStorageProfileSuccess');
      expect((await attempt({ ...base, name: 'aws default', config: { bucket: 'prod-bucket' } })).__typename).toBe('CreateStorageProfileSuccess');
      const moved = await prod.gql(UPDATE, { id: created.storageProfile.id, input: { config: { bucket: 'prod-bucket', endpoint: 'https://192.168.0.10' } } }, admin.token);
      expect(moved.data.updateStorageProfile).toMatchObject({ __typename: 'ValidationError', field: 'input.config.endpoint' });
    } finally {
      await prod.close();
    }
    // Outside production the same loopback endpoint is accepted (and works: see the checks above).
    const devProfile = await create(s3Input({ name: 'loopback in test' }));
    expect(devProfile.storageProfile.config.endpoint).toBe(s3.endpoint);
    await remove(devProfile.storageProfile.id);
  });
});

describe('nothing leaks', () => {
  it('no response of this file carries the secret key or session token', () => {
    expect(texts.length).toBeGreaterThan(40);
    for (const text of texts) {
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain(SESSION_TOKEN);
    }
  });
});
