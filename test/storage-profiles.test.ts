// Organizations' own storage (storage profiles): credentials encrypted at rest, and "the storage
// for organization X" resolving to its default profile or else the platform's, never to another
// organization's. Profiles point at s3rver on loopback.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRequestContext } from '../src/graphql/context.js';
import { localId } from '../src/graphql/ids.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../src/lib/errors.js';
import { endpointProblem } from '../src/modules/storage/profile-config.js';
import { resolveOrgStorage, StorageProfileService } from '../src/modules/storage/service.js';
import { orgScoped } from '../src/storage/keys.js';
import { signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import { startS3rver, type S3Target } from './helpers/storage-servers.js';
import { readAll } from './helpers/storage-suite.js';

const SECRET = 'a-secret-access-key-never-shown';

describe('storage profiles', () => {
  let api: TestApi;
  let s3: S3Target;
  let a: SignedUp & { org: string };
  let b: SignedUp & { org: string };
  const service = (user: SignedUp) => new StorageProfileService(createRequestContext(api.app, { authorization: `Bearer ${user.token}` }));
  const s3Input = (name: string, extra: Record<string, unknown> = {}) => ({
    name,
    kind: 'S3',
    config: { bucket: s3.bucket, region: 'us-east-1', endpoint: s3.endpoint, forcePathStyle: true },
    credentials: { accessKeyId: 'S3RVER', secretAccessKey: SECRET },
    ...extra,
  });

  beforeAll(async () => {
    // One after the other: with Promise.all, a failing start would leave the other unreferenced
    // and never closed (an orphaned s3rver process).
    s3 = await startS3rver();
    api = await startTestApi();
    const ua = await signUp(api, 'Org A');
    const ub = await signUp(api, 'Org B');
    a = { ...ua, org: localId(ua.orgId, 'Organization', 'orgId') };
    b = { ...ub, org: localId(ub.orgId, 'Organization', 'orgId') };
  });
  afterAll(async () => {
    await api?.close();
    await s3?.close();
  });

  it('without a profile, an organization gets the platform storage, scoped to its prefix', async () => {
    const { profileId, storage } = await service(a).storage();
    expect(profileId).toBeNull();
    expect(storage.kind).toBe('local');
    expect(storage.prefix).toBe(`orgs/${a.org}/`);
  });

  it('a default profile receives the organization\'s objects; credentials are encrypted and never returned', async () => {
    const created = await service(a).create(s3Input('own bucket', { isDefault: true }));
    expect(created).toMatchObject({ kind: 'S3', isDefault: true, organizationId: a.org, credentialsHint: 'access key …' });
    expect(JSON.stringify(created)).not.toContain(SECRET);
    const [row] = await api.app.sql.query<{ credentials_ciphertext: string }>(
      'select credentials_ciphertext from storage_profiles where id = $1',
      [created.id],
    );
    expect(row.credentials_ciphertext).toMatch(/^v1\./);
    expect(row.credentials_ciphertext).not.toContain(SECRET);

    const { profileId, storage } = await service(a).storage();
    expect(profileId).toBe(created.id);
    expect(storage.kind).toBe('s3');
    const key = storage.key('datasets', 'v1.zip');
    await storage.put(key, Buffer.from('in their bucket'));
    // It landed in the bucket, under the organization's prefix.
    expect((await readAll(await s3.storage.get(key))).toString()).toBe('in their bucket');
    expect(key.startsWith(`orgs/${a.org}/`)).toBe(true);
    // The same through the system path (no request, no org filter), as workers resolve it.
    const em = api.app.orm.em.fork({ clear: true, useContext: false });
    const system = await resolveOrgStorage(api.app, em as never, a.org);
    expect(system.profileId).toBe(created.id);
    expect((await readAll(await system.storage.get(key))).toString()).toBe('in their bucket');
    // Objects recorded as platform-stored stay reachable there.
    expect((await service(a).storageAt(null)).storage.kind).toBe('local');
  });

  it('another organization neither resolves nor reaches it', async () => {
    const [profile] = await service(a).list();
    expect((await service(b).storage()).profileId).toBeNull();
    await expect(service(b).storageAt(profile.id)).rejects.toBeInstanceOf(NotFoundError);
    expect(await service(b).get(profile.id)).toBeNull();
    expect(await service(b).list()).toEqual([]);
    await expect(service(b).update(profile.id, { name: 'mine now' })).rejects.toBeInstanceOf(NotFoundError);
    await expect(service(b).delete(profile.id)).rejects.toBeInstanceOf(NotFoundError);
    await expect(resolveOrgStorage(api.app, api.app.orm.em.fork() as never, b.org, profile.id)).rejects.toBeInstanceOf(NotFoundError);
    // And B's storage, even on the same backend, refuses A's keys.
    const bStorage = orgScoped(s3.storage, b.org);
    await expect(bStorage.get(`orgs/${a.org}/datasets/v1.zip`)).rejects.toThrow('outside the prefix');
  });

  it('check() writes, reads back and deletes a probe, and reports bad credentials instead of throwing', async () => {
    const [profile] = await service(a).list();
    expect(await service(a).check(profile.id)).toEqual({ ok: true, reason: null });
    const broken = await service(a).create(s3Input('wrong key', { credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: SECRET } }));
    const result = await service(a).check(broken.id);
    expect(result.ok).toBe(false);
    expect(result.reason).toContain('HTTP 403');
    await service(a).delete(broken.id);
  });

  it('edited credentials take effect on the next resolution', async () => {
    const [profile] = await service(a).list();
    await service(a).update(profile.id, { credentials: { accessKeyId: 'NOT-A-KEY', secretAccessKey: SECRET } });
    const { storage } = await service(a).storage();
    await expect(storage.head(storage.key('datasets', 'v1.zip'))).rejects.toThrow('HTTP 403');
    await service(a).update(profile.id, { credentials: { accessKeyId: 'S3RVER', secretAccessKey: SECRET } });
    const again = await service(a).storage();
    expect((await again.storage.head(again.storage.key('datasets', 'v1.zip')))?.size).toBe(15);
  });

  it('one default at a time; clearing it falls back to the platform storage', async () => {
    const first = (await service(a).list()).find((p) => p.isDefault)!;
    const second = await service(a).create(s3Input('second', { isDefault: true }));
    const all = await service(a).list();
    expect(all.filter((p) => p.isDefault).map((p) => p.id)).toEqual([second.id]);
    expect((await service(a).storage()).profileId).toBe(second.id);
    await service(a).update(second.id, { isDefault: false });
    expect((await service(a).storage()).profileId).toBeNull();
    await service(a).delete(second.id);
    await service(a).update(first.id, { isDefault: true });
  });

  it('validates kind, config and credentials, and names the field', async () => {
    const bad = async (input: unknown) => {
      const err = await service(a).create(input).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(ValidationError);
      return (err as ValidationError).field;
    };
    expect(await bad(s3Input('x', { kind: 'GCS' }))).toBe('input.kind');
    expect(await bad(s3Input('x', { config: { bucket: 'Bad_Bucket' } }))).toBe('input.config.bucket');
    expect(await bad(s3Input('x', { config: { bucket: 'ok-bucket', acl: 'public' } }))).toBe('input.config');
    expect(await bad(s3Input('x', { credentials: { accessKeyId: 'S3RVER' } }))).toBe('input.credentials.secretAccessKey');
    expect(await bad({ ...s3Input('x'), kind: 'AZURE' })).toBe('input.config.accountName');
    expect(await service(a).list().then((l) => l.map((p) => p.name))).not.toContain('x');
  });

  it('in production, endpoints must be https and not loopback, private or link-local', () => {
    expect(endpointProblem('http://127.0.0.1:9000', false)).toBeNull();
    expect(endpointProblem('https://s3.eu-central-1.amazonaws.com', true)).toBeNull();
    expect(endpointProblem('http://minio.example.com', true)).toBe('must use https');
    for (const host of ['localhost', '127.0.0.1', '10.0.0.5', '172.20.1.1', '192.168.1.10', '169.254.169.254', '[::1]', '0.0.0.0', '100.100.1.1']) {
      expect(endpointProblem(`https://${host}:9000`, true), host).toBe('must not point at a loopback, private or link-local address');
    }
  });

  it('only ADMIN and OWNER manage profiles', async () => {
    const res = await api.gql(
      `mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { ... on CreateApiKeySuccess { createdApiKey { secret } } } }`,
      { input: { name: 'member key', role: 'MEMBER' } },
      a.token,
    );
    const member = { ...a, token: res.data.createApiKey.createdApiKey.secret as string };
    await expect(service(member).create(s3Input(`m-${randomUUID()}`))).rejects.toBeInstanceOf(ForbiddenError);
    await expect(service(member).check((await service(a).list())[0].id)).rejects.toBeInstanceOf(ForbiddenError);
    // Members still write through the resolved storage: they create datasets.
    expect((await service(member).storage()).storage.kind).toBe('s3');
  });
});
