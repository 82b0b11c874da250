// The S3 backend against s3rver on loopback, through the real AWS SDK: the shared Storage
// contract, then what goes over the wire (multipart for large bodies, presigned SigV4 URLs) and
// interoperability with objects other S3 clients write. s3rver does not verify SigV4 signatures,
// so signature tampering is tested on the local backend (and on Azurite for SAS).
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageBackendError } from '../src/storage/errors.js';
import { orgScoped, type OrgStorage } from '../src/storage/keys.js';
import { S3Storage } from '../src/storage/s3.js';
import { generatedStream, S3RVER_KEY, startS3rver, type S3Target } from './helpers/storage-servers.js';
import { collect, readAll, storageSuite } from './helpers/storage-suite.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

storageSuite('s3 (s3rver)', startS3rver, { sortedListing: false });

/** A recording pass-through proxy in front of s3rver: what the SDK actually sends. */
async function recordingProxy(target: string) {
  const seen: string[] = [];
  const upstream = new URL(target);
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const out = http.request(
      { hostname: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('s3: through the AWS SDK, on the wire', () => {
  let t: S3Target;
  let proxy: Awaited<ReturnType<typeof recordingProxy>>;
  let storage: S3Storage;
  let s: OrgStorage;
  let sdk: S3Client;

  beforeAll(async () => {
    t = await startS3rver();
    proxy = await recordingProxy(t.endpoint);
    storage = new S3Storage({
      kind: 's3',
      bucket: t.bucket,
      region: 'us-east-1',
      endpoint: proxy.url,
      forcePathStyle: true,
      credentials: S3RVER_KEY,
      partSizeBytes: 5 * 1024 * 1024,
    });
    s = orgScoped(storage, randomUUID());
    sdk = new S3Client({ region: 'us-east-1', endpoint: t.endpoint, forcePathStyle: true, credentials: S3RVER_KEY });
  });
  afterAll(async () => {
    sdk?.destroy();
    await storage?.close();
    await proxy?.close();
    await t?.close();
  });

  it('sends a large body of unknown length as a multipart upload, and a small one as one PutObject', async () => {
    const body = generatedStream(12 * 1024 * 1024 + 5, 128 * 1024);
    const key = s.key('multipart', 'checkpoint.pt');
    proxy.seen.length = 0;
    const put = await s.put(key, body);
    expect(put.sha256).toBe(body.sha256());
    const path = `/${t.bucket}/${key}`;
    expect(proxy.seen.filter((r) => r.startsWith(`POST ${path}?uploads`))).toHaveLength(1);
    expect(proxy.seen.filter((r) => r.startsWith(`PUT ${path}?`) && r.includes('partNumber='))).toHaveLength(3);
    expect(proxy.seen.filter((r) => r.startsWith(`POST ${path}?uploadId=`))).toHaveLength(1);
    // Read back with the SDK directly, not through our backend.
    const raw = await sdk.send(new GetObjectCommand({ Bucket: t.bucket, Key: key }));
    expect(sha(await readAll(raw.Body as NodeJS.ReadableStream as never))).toBe(body.sha256());

    proxy.seen.length = 0;
    await s.put(s.key('multipart', 'small.json'), Buffer.from('{}'), { contentType: 'application/json' });
    expect(proxy.seen).toEqual([`PUT /${t.bucket}/${s.key('multipart', 'small.json')}?x-id=PutObject`]);
  });

  it('sends no CRC32 checksum trailers or aws-chunked bodies (S3-compatible services reject them)', async () => {
    const seenHeaders: http.IncomingHttpHeaders[] = [];
    const server = http.createServer((req, res) => {
      seenHeaders.push(req.headers);
      req.resume();
      req.on('end', () => res.writeHead(200, { etag: '"x"' }).end());
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const probe = new S3Storage({
      kind: 's3',
      bucket: 'probe',
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      forcePathStyle: true,
      credentials: S3RVER_KEY,
      partSizeBytes: 5 * 1024 * 1024,
    });
    try {
      await probe.put('orgs/o/k', Buffer.from('hello'));
      expect(seenHeaders).toHaveLength(1);
      expect(seenHeaders[0]['content-encoding'] ?? '').not.toContain('aws-chunked');
      expect(Object.keys(seenHeaders[0]).filter((h) => h.startsWith('x-amz-checksum') || h === 'x-amz-trailer')).toEqual([]);
      expect(seenHeaders[0]['content-length']).toBe('5');
    } finally {
      await probe.close();
      server.closeAllConnections();
      server.close();
    }
  });

  it('presigns SigV4 URLs with the requested expiry, the content type signed, and no checksum parameters', async () => {
    const key = s.key('presign', 'data set.zip');
    const put = new URL((await s.presignPut(key, { expiresInSeconds: 900, contentType: 'application/zip' })).url);
    expect(put.origin).toBe(proxy.url);
    expect(put.pathname).toBe(`/${t.bucket}/${key.split('/').map(encodeURIComponent).join('/')}`);
    expect(put.searchParams.get('X-Amz-Algorithm')).toBe('AWS4-HMAC-SHA256');
    expect(put.searchParams.get('X-Amz-Expires')).toBe('900');
    expect(put.searchParams.get('X-Amz-SignedHeaders')?.split(';')).toEqual(expect.arrayContaining(['host', 'content-type']));
    expect([...put.searchParams.keys()].filter((k) => /checksum/i.test(k))).toEqual([]);
    expect(put.searchParams.get('X-Amz-Credential')).toMatch(/^S3RVER\/\d{8}\/us-east-1\/s3\/aws4_request$/);

    await s.put(key, Buffer.from('zip'));
    const get = new URL((await s.presignGet(key, { expiresInSeconds: 60, downloadName: 'v1.zip' })).url);
    expect(get.searchParams.get('response-content-disposition')).toBe(`attachment; filename="v1.zip"; filename*=UTF-8''v1.zip`);
    expect(get.searchParams.get('X-Amz-SignedHeaders')).toBe('host');
  });

  it('sees objects other S3 clients wrote, with their metadata', async () => {
    const key = s.key('foreign', 'metrics.json');
    await sdk.send(
      new PutObjectCommand({ Bucket: t.bucket, Key: key, Body: '{"map":0.5}', ContentType: 'application/json', Metadata: { epoch: '3' } }),
    );
    expect(await s.head(key)).toMatchObject({ size: 11, contentType: 'application/json', metadata: { epoch: '3' } });
    expect(await s.sha256(key)).toBe(sha('{"map":0.5}'));
    expect((await collect(s.list(s.key('foreign') + '/'))).map((e) => e.key)).toEqual([key]);
    expect((await readAll(await s.get(key, { start: 1, end: 5 }))).toString()).toBe('"map"');
  });

  it('reports a missing bucket or an unknown access key as a StorageBackendError naming the cause', async () => {
    const make = (over: Partial<ConstructorParameters<typeof S3Storage>[0]>) =>
      new S3Storage({
        kind: 's3',
        bucket: t.bucket,
        region: 'us-east-1',
        endpoint: t.endpoint,
        forcePathStyle: true,
        credentials: S3RVER_KEY,
        partSizeBytes: 5 * 1024 * 1024,
        ...over,
      });
    const noBucket = make({ bucket: 'no-such-bucket' });
    const badKey = make({ credentials: { accessKeyId: 'WRONG', secretAccessKey: 'WRONG' } });
    try {
      const missing = await noBucket.put('orgs/o/k', randomBytes(10)).catch((e: unknown) => e);
      expect(missing).toBeInstanceOf(StorageBackendError);
      expect(String(missing)).toContain('NoSuchBucket');
      const denied = await badKey.head('orgs/o/k').catch((e: unknown) => e);
      expect(denied).toBeInstanceOf(StorageBackendError);
      expect(String(denied)).toContain('HTTP 403');
    } finally {
      await noBucket.close();
      await badKey.close();
    }
  });
});
