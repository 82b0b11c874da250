// Dataset versions through the GraphQL API, as a client makes them: createDatasetVersion hands out
// a presigned PUT, the client uploads a real archive (the trainers' shapes dataset) with the headers
// it was told to send, and finalizeDatasetVersion validates it from storage: READY with what the
// archive holds, or INVALID with every problem. Also the refusals: wrong input, finalizing too early
// or twice, tampered links, roles, and other organizations.
import { createHash, randomUUID } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from './helpers/api.js';
import {
  CREATE_VERSION,
  createDatasetVersion,
  datasetArchive,
  finalizeDatasetVersion,
  putArchive,
  VERSION_FIELDS,
  type DatasetArchive,
  type DatasetFormat,
} from './helpers/seed.js';

let api: TestApi;
let a: SignedUp;
let b: SignedUp;
let viewerToken: string;
let viewerKey: string;
let memberToken: string;
/** A's datasets by task, and one of B's. */
let detection: string;
let classification: string;
let bDataset: string;

const RB = `__typename ... on Error { message } ... on ValidationError { field }`;
const R = `${RB} ... on NotFoundError { resource id }`;
const sha256 = (buf: Buffer) => createHash('sha256').update(buf).digest('hex');
const local = (globalId: string) => decodeGlobalID(globalId).id;

async function createDataset(token: string, name: string, task: 'OBJECT_DETECTION' | 'CLASSIFICATION') {
  return ok(
    await api.gql(
      `mutation($input: CreateDatasetInput!) { createDataset(input: $input) { ${RB} ... on CreateDatasetSuccess { dataset { id } } } }`,
      { input: { name, task } },
      token,
    ),
    'createDataset',
    'dataset',
  ).id as string;
}

/** createDatasetVersion as is: the whole result union. */
async function tryCreate(token: string, input: { datasetId: string; format: DatasetFormat; filename: string }) {
  const res = await api.gql(CREATE_VERSION, { input }, token);
  expect(res.errors, JSON.stringify(res.errors)).toBeUndefined();
  return res.data.createDatasetVersion;
}

async function versionAs(token: string, id: string) {
  const res = await api.gql(`query($id: ID!) { node(id: $id) { ... on DatasetVersion { ${VERSION_FIELDS} } } }`, { id }, token);
  expect(res.errors).toBeUndefined();
  return res.data.node;
}

async function versionRows(datasetId?: string) {
  return api.app.sql.query<Record<string, unknown>>(
    `select * from dataset_versions ${datasetId ? 'where dataset_id = ?' : ''} order by id`,
    datasetId ? [local(datasetId)] : [],
  );
}

/** What READY must say about an archive: everything counted from the generated files. */
function expectReadyFor(version: any, archive: DatasetArchive) {
  expect(version.status).toBe('READY');
  expect(version.problems).toEqual([]);
  expect(version.format).toBe(archive.format);
  expect(version.filename).toBe(archive.filename);
  expect(version.sha256).toBe(sha256(archive.bytes));
  expect(version.sizeBytes).toBe(archive.bytes.length);
  expect(version.classNames).toEqual(archive.classNames);
  const splits = Object.fromEntries(version.splits.map((s: any) => [s.name, { images: s.images, boxes: s.boxes }]));
  expect(splits).toEqual(archive.splits);
  expect(Date.parse(version.finalizedAt)).toBeGreaterThanOrEqual(Date.parse(version.createdAt));
}

/** A YOLO archive with three kinds of problem in three files. */
const brokenYolo = () =>
  datasetArchive('YOLO', {
    variant: 'three-problems',
    mutate: (root) => {
      const first = path.join(root, 'labels', 'train', 'img_00000.txt');
      writeFileSync(first, readFileSync(first, 'utf8').replace(/^\d+ /, '7 '));
      appendFileSync(path.join(root, 'labels', 'val', 'img_00000.txt'), '1 0.5 0.5 1.5 0.2\n');
      writeFileSync(path.join(root, 'labels', 'train', 'orphan.txt'), '0 0.5 0.5 0.1 0.1\n');
    },
  });

beforeAll(async () => {
  api = await startTestApi();
  a = await signUp(api, 'Versions A');
  b = await signUp(api, 'Versions B');
  const join = async (role: string) => {
    const user = await signUp(api, `home ${role}`);
    ok(await api.gql(`mutation($input: AddMemberInput!) { addMember(input: $input) { ${RB} ... on AddMemberSuccess { membership { role } } } }`, { input: { email: user.email, role } }, a.token), 'addMember', 'membership');
    const signedIn = await api.gql(`mutation($input: SignInInput!) { signIn(input: $input) { ${RB} ... on SignInSuccess { authPayload { token } } } }`, {
      input: { email: user.email, password: user.password, organizationId: a.orgId },
    });
    return ok(signedIn, 'signIn', 'authPayload').token as string;
  };
  viewerToken = await join('VIEWER');
  memberToken = await join('MEMBER');
  viewerKey = ok(
    await api.gql(`mutation { createApiKey(input: { name: "reader", role: VIEWER }) { ${RB} ... on CreateApiKeySuccess { createdApiKey { secret } } } }`, {}, a.token),
    'createApiKey',
    'createdApiKey',
  ).secret;
  detection = await createDataset(a.token, 'boxes', 'OBJECT_DETECTION');
  classification = await createDataset(a.token, 'labels', 'CLASSIFICATION');
  bDataset = await createDataset(b.token, 'boxes', 'OBJECT_DETECTION');
}, 60_000);
afterAll(() => api?.close());

describe('createDatasetVersion', () => {
  it('refuses an unknown dataset, a format the task cannot use and a name that is not an archive, writing nothing', async () => {
    const before = await versionRows();
    const missing = encodeGlobalID('Dataset', randomUUID());
    expect(await tryCreate(a.token, { datasetId: missing, format: 'YOLO', filename: 'shapes.zip' })).toMatchObject({
      __typename: 'NotFoundError',
      resource: 'Dataset',
      id: missing,
    });
    const cases: [{ datasetId: string; format: DatasetFormat; filename: string }, string][] = [
      [{ datasetId: classification, format: 'YOLO', filename: 'shapes.zip' }, 'input.format'],
      [{ datasetId: classification, format: 'COCO', filename: 'shapes.zip' }, 'input.format'],
      [{ datasetId: detection, format: 'IMAGE_FOLDER', filename: 'shapes.zip' }, 'input.format'],
      [{ datasetId: detection, format: 'YOLO', filename: 'shapes.rar' }, 'input.filename'],
      [{ datasetId: detection, format: 'YOLO', filename: 'shapes.zip.txt' }, 'input.filename'],
      [{ datasetId: detection, format: 'YOLO', filename: 'shapes' }, 'input.filename'],
      [{ datasetId: detection, format: 'YOLO', filename: 'a/../shapes.zip' }, 'input.filename'],
      [{ datasetId: 'garbage', format: 'YOLO', filename: 'shapes.zip' }, 'input.datasetId'],
    ];
    for (const [input, field] of cases) {
      const result = await tryCreate(a.token, input);
      expect(result, JSON.stringify(input)).toMatchObject({ __typename: 'ValidationError', field });
    }
    expect(await versionRows()).toEqual(before);
  });

  it('hands out a presigned PUT for a new UPLOADING version', async () => {
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', 'fresh.tar.gz');
    expect(upload.version).toMatchObject({ status: 'UPLOADING', format: 'YOLO', filename: 'fresh.tar.gz', sha256: null, sizeBytes: null, classNames: null, splits: [], problems: [], finalizedAt: null, dataset: { id: detection } });
    // A link to this API's storage path for this organization, dataset and version.
    const url = new URL(upload.uploadUrl);
    expect(url.origin).toBe(new URL(api.url).origin);
    expect(url.pathname).toBe(`/storage/orgs/${local(a.orgId)}/datasets/${local(detection)}/versions/${local(upload.version.id)}/fresh.tar.gz`);
    expect(url.searchParams.get('sig')).toMatch(/^[0-9a-f]{64}$/);
    expect(typeof upload.uploadHeaders).toBe('object');
    // Valid for the configured time (CVTRAIN_PRESIGN_TTL_S, an hour by default).
    const ttl = (Date.parse(upload.expiresAt) - Date.now()) / 1000;
    expect(ttl).toBeGreaterThan(3590);
    expect(ttl).toBeLessThanOrEqual(3600);
    const listed = await api.gql('query($id: ID!) { dataset(id: $id) { versions { id status } } }', { id: detection }, viewerToken);
    expect(listed.data.dataset.versions).toContainEqual({ id: upload.version.id, status: 'UPLOADING' });
  });
});

describe('upload and finalize', () => {
  it.each([
    ['YOLO', 'tar.gz', 'detection'],
    ['YOLO', 'zip', 'detection'],
    ['COCO', 'tar.gz', 'detection'],
    ['IMAGE_FOLDER', 'zip', 'classification'],
  ] as const)('%s as .%s: READY with the class names, splits, sha256 and size of the archive', async (format, container, task) => {
    const archive = datasetArchive(format, { container });
    const upload = await createDatasetVersion(api, memberToken, task === 'detection' ? detection : classification, format, archive.filename);
    const put = await putArchive(upload, archive.bytes);
    expect(put.status).toBe(200);
    const result = await finalizeDatasetVersion(api, memberToken, upload.version.id);
    expect(result.__typename, JSON.stringify(result)).toBe('FinalizeDatasetVersionSuccess');
    expectReadyFor(result.datasetVersion, archive);
    // Read back later (by anyone in the organization) it says the same.
    expect(await versionAs(viewerToken, upload.version.id)).toEqual(result.datasetVersion);
    // The archive stays in storage exactly as uploaded, at the version's own key.
    const [row] = await api.app.sql.query<{ archive_key: string; storage_profile_id: string | null }>(
      'select archive_key, storage_profile_id from dataset_versions where id = ?',
      [local(upload.version.id)],
    );
    expect(row.storage_profile_id).toBeNull();
    expect(await api.app.storage.platform.sha256(row.archive_key)).toBe(sha256(archive.bytes));
  });

  it('INVALID with every problem: path, line and what is wrong', async () => {
    const archive = brokenYolo();
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', 'broken.tar.gz');
    await putArchive(upload, archive.bytes);
    const result = await finalizeDatasetVersion(api, a.token, upload.version.id);
    expect(result.__typename, JSON.stringify(result)).toBe('FinalizeDatasetVersionSuccess');
    const version = result.datasetVersion;
    expect(version.status).toBe('INVALID');
    expect(version.sha256).toBe(sha256(archive.bytes));
    expect(version.sizeBytes).toBe(archive.bytes.length);
    expect(version.problems).toEqual(
      expect.arrayContaining([
        { path: 'labels/train/img_00000.txt', line: 1, message: 'class id 7 out of range 0..2' },
        { path: 'labels/train/orphan.txt', line: null, message: 'label file without image' },
        expect.objectContaining({ path: 'labels/val/img_00000.txt', message: expect.stringMatching(/^coordinates outside 0\.\.1/) }),
      ]),
    );
    expect(version.problems).toHaveLength(3);
    // An INVALID version cannot be trained on.
    const model = ok(
      await api.gql(`mutation { createModel(input: { name: "m", task: OBJECT_DETECTION, framework: TORCHVISION, architecture: "ssdlite320_mobilenet_v3_large" }) { ${RB} ... on CreateModelSuccess { model { id } } } }`, {}, a.token),
      'createModel',
      'model',
    );
    const train = await api.gql(
      `mutation($m: ID!, $dv: ID!) { trainModel(modelId: $m, input: { datasetVersionId: $dv, config: { epochs: 1 } }) { ${R} } }`,
      { m: model.id, dv: upload.version.id },
      a.token,
    );
    expect(train.data.trainModel).toMatchObject({ __typename: 'ValidationError', field: 'input.datasetVersionId' });
  });

  it('INVALID for bytes that are not the archive the name promises', async () => {
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', 'garbage.tar.gz');
    const bytes = Buffer.from('this is not a gzip stream at all\n'.repeat(40));
    await putArchive(upload, bytes);
    const result = await finalizeDatasetVersion(api, a.token, upload.version.id);
    expect(result.datasetVersion.status).toBe('INVALID');
    expect(result.datasetVersion.problems.length).toBeGreaterThan(0);
    expect(result.datasetVersion.sha256).toBe(sha256(bytes));
  });

  it('finalize before the upload is a ValidationError that changes nothing; after the upload it works', async () => {
    const archive = datasetArchive('COCO');
    const upload = await createDatasetVersion(api, a.token, detection, 'COCO', archive.filename);
    const before = await versionRows(detection);
    const early = await finalizeDatasetVersion(api, a.token, upload.version.id);
    expect(early).toMatchObject({ __typename: 'ValidationError', field: 'id' });
    expect(early.message).toMatch(/nothing has been uploaded/);
    expect(await versionRows(detection)).toEqual(before);
    await putArchive(upload, archive.bytes);
    const result = await finalizeDatasetVersion(api, a.token, upload.version.id);
    expectReadyFor(result.datasetVersion, archive);
  });

  it('finalize twice is a ConflictError and leaves the version as it was', async () => {
    for (const archive of [datasetArchive('YOLO'), brokenYolo()]) {
      const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
      await putArchive(upload, archive.bytes);
      const first = await finalizeDatasetVersion(api, a.token, upload.version.id);
      const [row] = await api.app.sql.query('select * from dataset_versions where id = ?', [local(upload.version.id)]);
      const again = await finalizeDatasetVersion(api, a.token, upload.version.id);
      expect(again.__typename).toBe('ConflictError');
      expect(again.message).toContain(first.datasetVersion.status);
      expect(await api.app.sql.query('select * from dataset_versions where id = ?', [local(upload.version.id)])).toEqual([row]);
    }
  });

  it('an upload link writes once: a second PUT cannot swap the archive of a finalized version', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
    expect((await putArchive(upload, archive.bytes)).status).toBe(200);
    const result = await finalizeDatasetVersion(api, a.token, upload.version.id);
    expectReadyFor(result.datasetVersion, archive);
    const [row] = await api.app.sql.query<{ archive_key: string; sha256: string }>(
      'select archive_key, sha256 from dataset_versions where id = ?',
      [local(upload.version.id)],
    );
    const res = await fetch(upload.uploadUrl, {
      method: 'PUT',
      headers: { ...upload.uploadHeaders, 'content-length': '5' },
      body: 'other',
    });
    expect(res.status).toBe(412);
    expect(await api.app.storage.platform.sha256(row.archive_key)).toBe(row.sha256);
  });

  it('two finalizes at once: one validates, the other is a ConflictError', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
    await putArchive(upload, archive.bytes);
    const results = await Promise.all([0, 1].map(() => finalizeDatasetVersion(api, a.token, upload.version.id)));
    expect(results.map((r) => r.__typename).sort()).toEqual(['ConflictError', 'FinalizeDatasetVersionSuccess']);
    expectReadyFor(results.find((r) => r.__typename === 'FinalizeDatasetVersionSuccess').datasetVersion, archive);
  });

  it('version numbers increase per dataset and earlier versions are never touched', async () => {
    const dataset = await createDataset(a.token, 'history', 'OBJECT_DETECTION');
    const other = await createDataset(a.token, 'other history', 'OBJECT_DETECTION');
    const finalized: { id: string; version: number; archive: DatasetArchive; row: Record<string, unknown>; node: any }[] = [];
    for (const archive of [datasetArchive('YOLO'), brokenYolo(), datasetArchive('COCO'), datasetArchive('YOLO', { seed: 2 })]) {
      const upload = await createDatasetVersion(api, a.token, dataset, archive.format, archive.filename);
      await putArchive(upload, archive.bytes);
      await finalizeDatasetVersion(api, a.token, upload.version.id);
      // Every earlier version, row and object, is as it was when it was finalized.
      for (const earlier of finalized) {
        expect(await api.app.sql.query('select * from dataset_versions where id = ?', [local(earlier.id)])).toEqual([earlier.row]);
        expect(await versionAs(a.token, earlier.id)).toEqual(earlier.node);
        expect(await api.app.storage.platform.sha256(String(earlier.row.archive_key))).toBe(sha256(earlier.archive.bytes));
      }
      const [row] = await api.app.sql.query<Record<string, unknown>>('select * from dataset_versions where id = ?', [local(upload.version.id)]);
      finalized.push({ id: upload.version.id, version: upload.version.version, archive, row, node: await versionAs(a.token, upload.version.id) });
    }
    expect(finalized.map((f) => f.version)).toEqual([1, 2, 3, 4]);
    expect(finalized.map((f) => f.node.status)).toEqual(['READY', 'INVALID', 'READY', 'READY']);
    expect(new Set(finalized.map((f) => f.row.archive_key)).size).toBe(4);
    // Newest first on the dataset; another dataset numbers its own from 1.
    const listed = await api.gql('query($id: ID!) { dataset(id: $id) { versions { id version } } }', { id: dataset }, a.token);
    expect(listed.data.dataset.versions.map((v: any) => v.version)).toEqual([4, 3, 2, 1]);
    expect((await createDatasetVersion(api, a.token, other, 'YOLO')).version.version).toBe(1);
  });
});

describe('presigned upload links', () => {
  it("a link of organization A cannot write organization B's keys, or another key of A", async () => {
    const archive = datasetArchive('YOLO');
    const mine = await createDatasetVersion(api, a.token, detection, 'YOLO', 'mine.tar.gz');
    const theirs = await createDatasetVersion(api, b.token, bDataset, 'YOLO', 'mine.tar.gz');
    const sibling = await createDatasetVersion(api, a.token, detection, 'YOLO', 'mine.tar.gz');
    const myUrl = new URL(mine.uploadUrl);
    const theirPath = new URL(theirs.uploadUrl).pathname;
    const orgA = local(a.orgId);
    const orgB = local(b.orgId);
    const tampered = [
      // B's version key, with A's signature.
      theirPath,
      // Only the organization swapped.
      myUrl.pathname.replace(`/orgs/${orgA}/`, `/orgs/${orgB}/`),
      // Climbing from A's prefix into B's (fetch itself resolves a literal "..", as browsers do).
      myUrl.pathname.replace(`/orgs/${orgA}/`, `/orgs/${orgA}/../${orgB}/`),
      myUrl.pathname.replace(`/orgs/${orgA}/`, `/orgs/${orgA}/%2e%2e/${orgB}/`),
      // Another version of A's own.
      new URL(sibling.uploadUrl).pathname,
    ];
    for (const pathname of tampered) {
      const res = await fetch(`${myUrl.origin}${pathname}${myUrl.search}`, { method: 'PUT', headers: mine.uploadHeaders, body: new Uint8Array(archive.bytes) });
      expect(res.status, pathname).toBe(403);
      expect(await res.text()).toMatch(/signature does not match/);
    }
    // A different expiry or method with the same signature is refused too.
    const later = new URL(mine.uploadUrl);
    later.searchParams.set('expires', String(Number(later.searchParams.get('expires')) + 3600));
    expect((await fetch(later, { method: 'PUT', body: new Uint8Array(archive.bytes) })).status).toBe(403);
    expect((await fetch(mine.uploadUrl)).status).toBe(403);
    // Nothing was written: B's and the sibling's versions still have no archive; both link owners can still upload.
    const [theirsRow] = await api.app.sql.query<{ archive_key: string }>('select archive_key from dataset_versions where id = ?', [local(theirs.version.id)]);
    expect(await api.app.storage.platform.head(theirsRow.archive_key)).toBeNull();
    expect(await finalizeDatasetVersion(api, b.token, theirs.version.id)).toMatchObject({ __typename: 'ValidationError', field: 'id' });
    expect(await finalizeDatasetVersion(api, a.token, sibling.version.id)).toMatchObject({ __typename: 'ValidationError', field: 'id' });
    await putArchive(theirs, archive.bytes);
    expectReadyFor((await finalizeDatasetVersion(api, b.token, theirs.version.id)).datasetVersion, { ...archive, filename: 'mine.tar.gz' });
  });
});

describe('who may', () => {
  it('a VIEWER (user or key) cannot create or finalize versions, but sees them', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
    await putArchive(upload, archive.bytes);
    const before = await versionRows();
    for (const token of [viewerToken, viewerKey]) {
      const created = await tryCreate(token, { datasetId: detection, format: 'YOLO', filename: 'viewer.zip' });
      expect(created.__typename).toBe('ForbiddenError');
      expect(created.message).toMatch(/needs role MEMBER/);
      const finalized = await finalizeDatasetVersion(api, token, upload.version.id);
      expect(finalized.__typename).toBe('ForbiddenError');
      expect((await versionAs(token, upload.version.id)).status).toBe('UPLOADING');
    }
    expect(await versionRows()).toEqual(before);
    const anonymous = await api.gql(CREATE_VERSION, { input: { datasetId: detection, format: 'YOLO', filename: 'anon.zip' } });
    expect(anonymous.data.createDatasetVersion.__typename).toBe('AuthenticationError');
    expect(await versionRows()).toEqual(before);
  });

  it('another organization can neither finalize nor see them', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
    await putArchive(upload, archive.bytes);
    const ready = await createDatasetVersion(api, a.token, detection, 'YOLO', archive.filename);
    await putArchive(ready, archive.bytes);
    await finalizeDatasetVersion(api, a.token, ready.version.id);
    const before = await versionRows(detection);
    for (const id of [upload.version.id, ready.version.id]) {
      expect(await finalizeDatasetVersion(api, b.token, id)).toMatchObject({ __typename: 'NotFoundError', resource: 'DatasetVersion', id });
      expect(await versionAs(b.token, id)).toBeNull();
    }
    const lists = await api.gql('query($id: ID!) { dataset(id: $id) { id } datasets(first: 100) { edges { node { id versions { id } } } } }', { id: detection }, b.token);
    expect(lists.data.dataset).toBeNull();
    expect(JSON.stringify(lists.data.datasets)).not.toContain(upload.version.id);
    expect(JSON.stringify(lists.data.datasets)).not.toContain(ready.version.id);
    // B cannot add a version to A's dataset either.
    expect(await tryCreate(b.token, { datasetId: detection, format: 'YOLO', filename: 'x.zip' })).toMatchObject({ __typename: 'NotFoundError', resource: 'Dataset' });
    expect(await versionRows(detection)).toEqual(before);
    // A still finalizes its version.
    expectReadyFor((await finalizeDatasetVersion(api, a.token, upload.version.id)).datasetVersion, archive);
  });
});
