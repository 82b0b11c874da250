// Hostile-client suite, issue 12 finding 2: a dataset archive must not be replaceable after it was
// validated. Upload links write once (refused while one PUT is in flight and after one finished),
// finalize seals exactly the bytes it validated, and a node that downloads an archive whose bytes
// are not the recorded ones fails with an error naming the version and both hashes.
// Real parts throughout: the API server with its local storage, s3rver and Azurite on loopback,
// and the gpu-node's dataset cache.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DatasetCache } from '../../gpu-node/dataset-cache.js';
import { IntegrityError } from '../../gpu-node/transfers.js';
import type { LocalStorage } from '../../src/storage/local.js';
import { orgScoped } from '../../src/storage/keys.js';
import { ok, signUp, startTestApi, type SignedUp, type TestApi } from '../helpers/api.js';
import { createDatasetVersion, datasetArchive, finalizeDatasetVersion, type DatasetVersionUpload } from '../helpers/seed.js';
import { startAzurite, startLocal, startS3rver, type AzureTarget, type LocalTarget, type S3Target } from '../helpers/storage-servers.js';
import { readAll } from '../helpers/storage-suite.js';
import { recordingLogger, tempDir } from '../gpu-node-helpers.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  status: number;
  body: string;
}

/**
 * A PUT that sends its headers and the first part of its body, then waits: `finish()` sends the
 * rest. An answer that comes before the body is all sent (a refusal) resolves `answer` too.
 */
function slowPut(url: string, headers: Record<string, string>, bytes: Buffer) {
  const req = http.request(new URL(url), { method: 'PUT', headers: { ...headers, 'content-length': String(bytes.length) } });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    // A refusal closes the connection; writing the rest then fails, which is not the answer.
    req.on('error', (err) => setTimeout(() => reject(err), 500));
  });
  // Awaited through finish(); a test that fails before then must not leave it unhandled.
  answer.catch(() => {});
  const half = Math.floor(bytes.length / 2);
  req.write(bytes.subarray(0, half));
  return {
    answer,
    finish: () => {
      if (!req.destroyed) req.end(bytes.subarray(half));
      return answer;
    },
  };
}

/** A whole PUT with exactly the given headers. */
function put(url: string, headers: Record<string, string>, bytes: Buffer): Promise<Answer> {
  const p = slowPut(url, headers, bytes);
  return p.finish();
}

describe('write-once dataset uploads through the API (local storage)', () => {
  let api: TestApi;
  let user: SignedUp;
  let dataset: string;

  beforeAll(async () => {
    api = await startTestApi();
    user = await signUp(api, 'Uploads');
    dataset = ok(
      await api.gql(
        `mutation { createDataset(input: { name: "swap", task: OBJECT_DETECTION }) { __typename ... on Error { message } ... on CreateDatasetSuccess { dataset { id } } } }`,
        {},
        user.token,
      ),
      'createDataset',
      'dataset',
    ).id;
  }, 60_000);
  afterAll(() => api?.close());

  const row = async (upload: DatasetVersionUpload) => {
    const [r] = await api.app.sql.query<{ archive_key: string; sha256: string | null; status: string }>(
      'select archive_key, sha256, status from dataset_versions where id = ?',
      [decodeGlobalID(upload.version.id).id],
    );
    return r;
  };

  /** Waits until the server is receiving a PUT for `key` (its temp file exists). */
  const receiving = async (key: string) => {
    const root = (api.app.storage.platform as LocalStorage).root;
    const dir = path.join(root, ...key.split('/').slice(0, -1));
    const base = key.split('/').pop()!;
    for (let i = 0; i < 200; i++) {
      const names = (() => {
        try {
          return readdirSync(dir);
        } catch {
          return [];
        }
      })();
      if (names.some((n) => n.startsWith(`${base}%t`))) return;
      await sleep(10);
    }
    throw new Error(`the server never started receiving ${key}`);
  };

  it('two PUTs at once to one link: exactly one is stored, the other is refused', async () => {
    const archive = datasetArchive('YOLO');
    const other = datasetArchive('YOLO', { seed: 2 });
    const upload = await createDatasetVersion(api, user.token, dataset, 'YOLO', archive.filename);
    const answers = await Promise.all([put(upload.uploadUrl, upload.uploadHeaders, archive.bytes), put(upload.uploadUrl, upload.uploadHeaders, other.bytes)]);
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 200), JSON.stringify(answers)).toHaveLength(1);
    const refused = answers.find((a) => a.status !== 200)!;
    expect([409, 412]).toContain(refused.status);
    expect(refused.body).toMatch(/writes once|in progress/);
    // What is stored is the one that got 200, whole.
    const stored = await api.app.storage.platform.sha256((await row(upload)).archive_key);
    const winner = answers[statuses.indexOf(200)];
    expect(JSON.parse(winner.body).sha256).toBe(stored);
    expect([archive.sha256, other.sha256]).toContain(stored);
  });

  it('a PUT while another is in flight is refused at once with 409; after it finished, with 412', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, user.token, dataset, 'YOLO', archive.filename);
    const { archive_key: key } = await row(upload);
    const first = slowPut(upload.uploadUrl, upload.uploadHeaders, archive.bytes);
    await receiving(key);
    const second = await put(upload.uploadUrl, upload.uploadHeaders, Buffer.from('not the archive'));
    expect(second.status).toBe(409);
    expect(second.body).toMatch(/upload to this link is in progress/);
    expect((await first.finish()).status).toBe(200);
    const third = await put(upload.uploadUrl, upload.uploadHeaders, Buffer.from('not the archive either'));
    expect(third.status).toBe(412);
    expect(third.body).toMatch(/writes once/);
    expect(await api.app.storage.platform.sha256(key)).toBe(archive.sha256);
  });

  it('finalize refuses while the upload is still in flight, and succeeds once it is done', async () => {
    const archive = datasetArchive('COCO');
    const upload = await createDatasetVersion(api, user.token, dataset, 'COCO', archive.filename);
    const { archive_key: key } = await row(upload);
    const inflight = slowPut(upload.uploadUrl, upload.uploadHeaders, archive.bytes);
    await receiving(key);
    const early = await finalizeDatasetVersion(api, user.token, upload.version.id);
    expect(early.__typename).toBe('ConflictError');
    expect(early.message).toMatch(/upload .* still in progress/);
    expect((await row(upload)).status).toBe('UPLOADING');
    expect((await inflight.finish()).status).toBe(200);
    const done = await finalizeDatasetVersion(api, user.token, upload.version.id);
    expect(done.datasetVersion?.status, JSON.stringify(done)).toBe('READY');
    expect(done.datasetVersion.sha256).toBe(archive.sha256);
  });

  it('a PUT that started before the first finished cannot land after finalize: the stored object is the validated one', async () => {
    const archive = datasetArchive('YOLO');
    const swap = datasetArchive('YOLO', { seed: 3 });
    const upload = await createDatasetVersion(api, user.token, dataset, 'YOLO', archive.filename);
    const { archive_key: key } = await row(upload);
    const first = slowPut(upload.uploadUrl, upload.uploadHeaders, archive.bytes);
    await receiving(key);
    const late = slowPut(upload.uploadUrl, upload.uploadHeaders, swap.bytes);
    await sleep(100);
    expect((await first.finish()).status).toBe(200);
    const result = await finalizeDatasetVersion(api, user.token, upload.version.id);
    expect(result.datasetVersion?.status, JSON.stringify(result)).toBe('READY');
    const lateAnswer = await late.finish().catch((err: Error) => ({ status: 0, body: err.message }));
    expect([409, 412]).toContain(lateAnswer.status);
    const r = await row(upload);
    expect(r.sha256).toBe(archive.sha256);
    expect(await api.app.storage.platform.sha256(key)).toBe(r.sha256);
  });

  it('an archive that changes while it is validated is not sealed: finalize refuses and the version stays UPLOADING', async () => {
    const archive = datasetArchive('YOLO', { container: 'zip' });
    const swap = datasetArchive('YOLO', { container: 'zip', seed: 4 });
    const upload = await createDatasetVersion(api, user.token, dataset, 'YOLO', archive.filename);
    const { archive_key: key } = await row(upload);
    expect((await put(upload.uploadUrl, upload.uploadHeaders, archive.bytes)).status).toBe(200);
    // The object is replaced behind the link's back (an operator, a backend that cannot refuse
    // an overwrite) between finalize's first ranged read (the zip's end record) and the rest.
    const storage = api.app.storage.platform as LocalStorage;
    const original = storage.get.bind(storage);
    let reads = 0;
    storage.get = async (k, opts) => {
      if (k === key && ++reads === 2) await storage.put(key, swap.bytes);
      return original(k, opts);
    };
    try {
      const result = await finalizeDatasetVersion(api, user.token, upload.version.id);
      expect(result.__typename, JSON.stringify(result)).toBe('ConflictError');
      expect(result.message).toMatch(/changed while it was being validated/);
    } finally {
      storage.get = original;
    }
    expect(reads).toBeGreaterThanOrEqual(2);
    const r = await row(upload);
    expect(r.status).toBe('UPLOADING');
    expect(r.sha256).toBeNull();
    // Finalized again, it validates (and records) what is there now, in one consistent read.
    const again = await finalizeDatasetVersion(api, user.token, upload.version.id);
    expect(again.datasetVersion?.sha256, JSON.stringify(again)).toBe(swap.sha256);
    expect(await storage.sha256(key)).toBe(swap.sha256);
  });

  it('a node downloading an archive that is not the recorded one fails, naming the version and both hashes; nothing is cached', async () => {
    const archive = datasetArchive('YOLO');
    const upload = await createDatasetVersion(api, user.token, dataset, 'YOLO', archive.filename);
    expect((await put(upload.uploadUrl, upload.uploadHeaders, archive.bytes)).status).toBe(200);
    const done = await finalizeDatasetVersion(api, user.token, upload.version.id);
    expect(done.datasetVersion.status).toBe('READY');
    const { archive_key: key, sha256: recorded } = await row(upload);
    // Replaced server-side, bypassing the link (what a backend without conditional writes allows).
    const swapped = datasetArchive('YOLO', { seed: 5 });
    await api.app.storage.platform.put(key, swapped.bytes);
    const versionId = decodeGlobalID(upload.version.id).id;
    const link = await api.app.storage.platform.presignGet(key, { expiresInSeconds: 60 });
    const cache = new DatasetCache({ dir: tempDir('uploads-cache'), keep: 3, logger: recordingLogger() });
    const err = await cache
      .acquire({ versionId, sha256: recorded!, url: link.url, headers: link.headers, format: 'yolo', filename: archive.filename })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    const message = (err as Error).message;
    expect(message).toContain(`dataset version ${versionId}`);
    expect(message).toContain(recorded!);
    expect(message).toContain(swapped.sha256);
    expect(cache.list()).toEqual([]);
  });

  it('a cached copy is used only when it is the recorded archive', async () => {
    const archive = datasetArchive('YOLO');
    const dir = tempDir('uploads-cache-record');
    const recorded = archive.sha256;
    // A folder named for the recorded sha256 whose record says it came from other bytes (a
    // half-written or tampered cache entry) is not trained on.
    mkdirSync(path.join(dir, recorded, 'data'), { recursive: true });
    writeFileSync(
      path.join(dir, recorded, 'meta.json'),
      JSON.stringify({ sha256: 'e'.repeat(64), root: 'data', format: 'yolo', filename: null, lastUsed: Date.now(), bytes: 0 }),
    );
    const served = http.createServer((_req, res) => res.writeHead(200, { 'content-length': archive.bytes.length }).end(archive.bytes));
    await new Promise<void>((r) => served.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(served.address() as { port: number }).port}/a`;
      const cache = new DatasetCache({ dir, keep: 3, logger: recordingLogger() });
      const lease = await cache.acquire({ versionId: randomUUID(), sha256: recorded, url, format: 'yolo' });
      expect(cache.downloads).toBe(1);
      expect(readdirSync(lease.root)).toContain('data.yaml');
      lease.release();
    } finally {
      served.close();
    }
  });
});

describe('write-once on the local backend itself', () => {
  let t: LocalTarget;
  beforeAll(async () => {
    t = await startLocal();
  });
  afterAll(() => t?.close());

  it('puts with onlyIfAbsent: one of two concurrent ones stores, the other is refused; a later one too', async () => {
    const s = t.storage;
    const key = `orgs/${randomUUID()}/once.bin`;
    const bodies = [randomBytes(400_000), randomBytes(400_000)];
    const results = await Promise.allSettled(bodies.map((b) => s.put(key, b, { onlyIfAbsent: true })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const refused = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
    expect(refused.reason.name).toMatch(/StorageUploadInProgressError|StorageExistsError/);
    const stored = await s.sha256(key);
    expect(bodies.map((b) => sha(b))).toContain(stored);
    await expect(s.put(key, Buffer.from('again'), { onlyIfAbsent: true })).rejects.toThrow(/exists/);
    expect(await s.sha256(key)).toBe(stored);
    expect(await s.uploadInProgress(key)).toBe(false);
  });

  it('a claim left by a process that died mid-upload goes stale and does not block the link forever', async () => {
    const s = t.storage;
    const key = `orgs/${randomUUID()}/crashed.bin`;
    const dir = path.join(s.root, ...key.split('/').slice(0, -1));
    mkdirSync(dir, { recursive: true });
    // The claim file of an upload whose process is gone: never refreshed, so old.
    const claim = path.join(dir, 'crashed.bin%u');
    writeFileSync(claim, 'dead');
    const { utimesSync } = await import('node:fs');
    const old = new Date(Date.now() - 10 * 60_000);
    utimesSync(claim, old, old);
    expect(await s.uploadInProgress(key)).toBe(false);
    await s.put(key, Buffer.from('retried'), { onlyIfAbsent: true });
    expect((await readAll(await s.get(key))).toString()).toBe('retried');
  });

  it('a read pinned to an etag fails once the object changed, rather than mixing two versions', async () => {
    const s = t.storage;
    const key = `orgs/${randomUUID()}/pinned.bin`;
    const first = await s.put(key, Buffer.from('first version'));
    expect((await readAll(await s.get(key, { start: 0, end: 4, ifMatch: first.etag! }))).toString()).toBe('first');
    await s.put(key, Buffer.from('second version'));
    await expect(s.get(key, { start: 0, end: 4, ifMatch: first.etag! })).rejects.toThrow(/changed/);
  });
});

describe('write-once presigned PUTs on S3 (s3rver)', () => {
  let t: S3Target;
  beforeAll(async () => {
    t = await startS3rver();
  }, 60_000);
  afterAll(() => t?.close());

  it('the link signs If-None-Match: * and names it among the headers to send', async () => {
    // s3rver neither verifies signatures nor evaluates conditional PUTs, so what can be checked
    // here is that the condition is bound into the signature; AWS S3 (and MinIO, R2) then answer
    // 412 to a PUT onto an existing key, and 403 to one that drops the signed header.
    const s = orgScoped(t.storage, randomUUID());
    const link = await s.presignPut(s.key('once.zip'), { expiresInSeconds: 60, onlyIfAbsent: true });
    expect(link.headers).toMatchObject({ 'if-none-match': '*' });
    const signed = new URL(link.url).searchParams.get('X-Amz-SignedHeaders')?.split(';');
    expect(signed).toContain('if-none-match');
    const plain = await s.presignPut(s.key('many.zip'), { expiresInSeconds: 60 });
    expect(plain.headers['if-none-match']).toBeUndefined();
  });
});

describe('write-once SAS uploads on Azure (Azurite)', () => {
  let t: AzureTarget;
  beforeAll(async () => {
    t = await startAzurite();
  }, 60_000);
  afterAll(() => t?.close());

  it('the SAS is create-only and the upload carries If-None-Match: *; a second PUT is refused, the first kept', async () => {
    const s = orgScoped(t.storage, randomUUID());
    const key = s.key('once.zip');
    const link = await s.presignPut(key, { expiresInSeconds: 60, onlyIfAbsent: true });
    // Create, not write: once the blob exists the service refuses this SAS any upload (403),
    // with or without the header, so a client cannot opt out of write-once by dropping it.
    expect(new URL(link.url).searchParams.get('sp')).toBe('c');
    expect(link.headers).toMatchObject({ 'x-ms-blob-type': 'BlockBlob', 'if-none-match': '*' });
    expect((await put(link.url, link.headers, Buffer.from('first'))).status).toBe(201);
    expect((await put(link.url, link.headers, Buffer.from('second'))).status).toBe(403);
    const { 'if-none-match': _dropped, ...withoutCondition } = link.headers;
    expect((await put(link.url, withoutCondition, Buffer.from('third'))).status).toBe(403);
    expect((await readAll(await s.get(key))).toString()).toBe('first');
  });

  it('two PUTs at once through one write-once SAS: one stored, the other refused', async () => {
    const s = orgScoped(t.storage, randomUUID());
    const key = s.key('race.zip');
    const link = await s.presignPut(key, { expiresInSeconds: 60, onlyIfAbsent: true });
    const bodies = [randomBytes(300_000), randomBytes(300_000)];
    const slow = bodies.map((b) => slowPut(link.url, link.headers, b));
    await sleep(100);
    const answers = await Promise.all(slow.map((p) => p.finish()));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
    expect(bodies.map((b) => sha(b))).toContain(await s.sha256(key));
  });

  it('a read pinned to an etag fails once the blob changed', async () => {
    const s = orgScoped(t.storage, randomUUID());
    const key = s.key('pinned.bin');
    const first = await s.put(key, Buffer.from('first version'));
    await s.put(key, Buffer.from('second version'));
    await expect(s.get(key, { start: 0, end: 4, ifMatch: first.etag! })).rejects.toThrow(/changed/);
  });
});
