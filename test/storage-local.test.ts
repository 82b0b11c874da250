// The local backend: the shared Storage contract, then what only it does itself: HMAC-signed
// links served by the API (tampering with each signed field, expiry, upload limits, ranges), its
// on-disk layout, and the mount in the real API server.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config.js';
import { localId } from '../src/graphql/ids.js';
import { orgScoped, type OrgStorage } from '../src/storage/keys.js';
import { LocalStorage } from '../src/storage/local.js';
import { signUp, startTestApi, testSecrets, type TestApi } from './helpers/api.js';
import { generatedStream, startLocal, type LocalTarget } from './helpers/storage-servers.js';
import { collect, readAll, storageSuite } from './helpers/storage-suite.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

storageSuite('local', startLocal);

/** Every file under `dir`, relative to it. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

/** An HTTP request whose path is sent exactly as given (fetch would normalise "." and ".."). */
function rawRequest(method: string, origin: string, rawPath: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const req = http.request({ method, hostname, port, path: rawPath }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function withParam(url: string, name: string, value: string | null): string {
  const u = new URL(url);
  if (value === null) u.searchParams.delete(name);
  else u.searchParams.set(name, value);
  return u.toString();
}

describe('local: signed links', () => {
  let t: LocalTarget;
  let s: OrgStorage;
  let clock = Math.floor(Date.now() / 1000);

  beforeAll(async () => {
    t = await startLocal({ maxUploadBytes: 1024 * 1024, now: () => clock });
    s = orgScoped(t.storage, randomUUID());
  });
  afterAll(() => t.close());

  it('refuses a link with any signed field changed (403), and a PUT so refused stores nothing', async () => {
    const key = s.key('signed', 'model.onnx');
    await s.put(key, Buffer.from('weights'));
    const get = await s.presignGet(key, { expiresInSeconds: 600, downloadName: 'model.onnx' });
    const put = await s.presignPut(s.key('signed', 'upload.zip'), { expiresInSeconds: 600, contentType: 'application/zip' });
    expect((await fetch(get.url)).status).toBe(200);

    const sig = new URL(get.url).searchParams.get('sig')!;
    const flipped = (sig[0] === 'a' ? 'b' : 'a') + sig.slice(1);
    const tampered: [string, string][] = [
      ['key (another object of the same organization)', get.url.replace('/model.onnx?', '/upload.zip?')],
      ['expires (extended)', withParam(get.url, 'expires', String(clock + 999_999))],
      ['filename (changed)', withParam(get.url, 'filename', 'evil.html')],
      ['filename (removed)', withParam(get.url, 'filename', null)],
      ['type (added)', withParam(get.url, 'type', 'text/html')],
      ['signature (one character)', withParam(get.url, 'sig', flipped)],
      ['signature (truncated)', withParam(get.url, 'sig', sig.slice(0, 63))],
      ['signature (missing)', withParam(get.url, 'sig', null)],
      ['expires (missing)', withParam(get.url, 'expires', null)],
    ];
    for (const [what, url] of tampered) {
      const res = await fetch(url);
      expect(res.status, what).toBe(403);
      expect(await res.text(), what).not.toContain('weights');
    }
    // Paths that climb ("x/../model.onnx" names the same file on a filesystem): sent raw, since
    // fetch would resolve them first. The signature covers the key as written, so they fail.
    const { pathname, search } = new URL(get.url);
    for (const climb of ['/signed/x/../model.onnx', '/signed/x/%2e%2e/model.onnx', '/signed/./model.onnx']) {
      const res = await rawRequest('GET', t.url, pathname.replace('/signed/model.onnx', climb) + search);
      expect(res.status, climb).toBe(403);
      expect(res.body, climb).not.toContain('weights');
    }
    // method: a GET link cannot upload, a PUT link cannot download.
    expect((await fetch(get.url, { method: 'PUT', body: 'overwrite' })).status).toBe(403);
    expect((await readAll(await s.get(key))).toString()).toBe('weights');
    expect((await fetch(put.url)).status).toBe(403);
    // type on an upload link: changed, removed, or the request's Content-Type not the signed one.
    for (const url of [withParam(put.url, 'type', 'text/html'), withParam(put.url, 'type', null)]) {
      expect((await fetch(url, { method: 'PUT', headers: { 'content-type': 'text/html' }, body: 'x' })).status).toBe(403);
    }
    expect((await fetch(put.url, { method: 'PUT', headers: { 'content-type': 'text/html' }, body: '<script>' })).status).toBe(403);
    expect((await fetch(put.url, { method: 'PUT', body: Buffer.from('no type') })).status).toBe(403);
    expect(await s.head(s.key('signed', 'upload.zip'))).toBeNull();
    // A link signed with another server's secret.
    const foreign = new LocalStorage({ root: t.root, secret: randomBytes(32), publicUrl: t.url });
    expect((await fetch((await foreign.presignGet(key, { expiresInSeconds: 600 })).url)).status).toBe(403);
    // The untampered upload link still works.
    const ok = await fetch(put.url, { method: 'PUT', headers: put.headers, body: 'PK\u0003\u0004' });
    expect(ok.status).toBe(200);
  });

  it('refuses a link once its expiry passes, and says so', async () => {
    const key = s.key('expiry.bin');
    await s.put(key, Buffer.from('x'));
    const link = await s.presignGet(key, { expiresInSeconds: 60 });
    clock += 60;
    expect((await fetch(link.url)).status).toBe(200);
    clock += 1;
    const res = await fetch(link.url);
    expect(res.status).toBe(403);
    expect(await res.json()).toEqual({ error: 'Forbidden: link expired' });
  });

  it('serves downloads as attachments that a browser will not render or sniff', async () => {
    const key = s.key('page.html');
    await s.put(key, Buffer.from('<script>alert(1)</script>'), { contentType: 'text/html' });
    const res = await fetch((await s.presignGet(key, { expiresInSeconds: 60 })).url);
    expect(res.headers.get('content-disposition')).toBe('attachment');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toContain('sandbox');
    expect(res.headers.get('etag')).toBe(`"${sha('<script>alert(1)</script>')}"`);
  });

  it('serves byte ranges (206), suffix ranges, HEAD, and 416 past the end', async () => {
    const key = s.key('ranges.txt');
    await s.put(key, Buffer.from('0123456789'), { contentType: 'text/plain' });
    const { url } = await s.presignGet(key, { expiresInSeconds: 60 });
    let res = await fetch(url, { headers: { range: 'bytes=2-4' } });
    expect(res.status).toBe(206);
    expect(res.headers.get('content-range')).toBe('bytes 2-4/10');
    expect(await res.text()).toBe('234');
    res = await fetch(url, { headers: { range: 'bytes=-3' } });
    expect([res.status, await res.text()]).toEqual([206, '789']);
    res = await fetch(url, { headers: { range: 'bytes=7-' } });
    expect([res.status, await res.text()]).toEqual([206, '789']);
    res = await fetch(url, { headers: { range: 'bytes=10-' } });
    expect(res.status).toBe(416);
    expect(res.headers.get('content-range')).toBe('bytes */10');
    res = await fetch(url, { method: 'HEAD' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-length')).toBe('10');
    expect(res.headers.get('content-type')).toBe('text/plain');
    expect(await res.text()).toBe('');
  });

  it('answers 404 for a signed link to a missing object, 405 for other methods, and leaves other paths alone', async () => {
    const link = await s.presignGet(s.key('never-written'), { expiresInSeconds: 60 });
    expect((await fetch(link.url)).status).toBe(404);
    expect((await fetch(link.url, { method: 'DELETE' })).status).toBe(405);
    const preflight = await fetch(link.url, { method: 'OPTIONS' });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-methods')).toContain('PUT');
    const other = await fetch(`${t.url}/graphql`);
    expect([other.status, await other.text()]).toEqual([404, 'not a storage path']);
  });

  it('refuses an upload over the limit with 413, announced or discovered while streaming, storing nothing', async () => {
    const key = s.key('big', 'upload.bin');
    const link = await s.presignPut(key, { expiresInSeconds: 60 });
    const announced = await fetch(link.url, { method: 'PUT', body: randomBytes(1024 * 1024 + 1) });
    expect(announced.status).toBe(413);
    // Chunked, so no Content-Length: the limit trips mid-stream.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(link.url, { method: 'PUT', headers: { 'transfer-encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      let sent = 0;
      const pump = () => {
        while (sent < 3 * 1024 * 1024) {
          sent += 64 * 1024;
          if (!req.write(randomBytes(64 * 1024))) return void req.once('drain', pump);
        }
        req.end();
      };
      pump();
    });
    expect(status).toBe(413);
    expect(await s.head(key)).toBeNull();
    expect(filesUnder(t.root).filter((f) => f.includes('upload.bin'))).toEqual([]);
    // At the limit exactly, it goes through.
    expect((await fetch(link.url, { method: 'PUT', body: randomBytes(1024 * 1024) })).status).toBe(200);
  });

  it('a client that disconnects mid-upload leaves no object and no temp file', async () => {
    const key = s.key('aborted', 'upload.bin');
    const link = await s.presignPut(key, { expiresInSeconds: 60 });
    await new Promise<void>((resolve) => {
      const req = http.request(link.url, { method: 'PUT', headers: { 'content-length': String(512 * 1024) } });
      req.on('error', () => resolve());
      req.write(randomBytes(100 * 1024), () => setTimeout(() => req.destroy(), 50));
      req.on('close', () => resolve());
    });
    // The handler notices the reset asynchronously.
    for (let i = 0; i < 50 && filesUnder(t.root).some((f) => f.includes('aborted')); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await s.head(key)).toBeNull();
    expect(filesUnder(t.root).filter((f) => f.includes('aborted'))).toEqual([]);
  });
});

describe('local: on disk', () => {
  let t: LocalTarget;
  let s: OrgStorage;
  beforeAll(async () => {
    t = await startLocal();
    s = orgScoped(t.storage, randomUUID());
  });
  afterAll(() => t.close());

  it('keeps every file under the root; "%" in keys cannot collide with the layout\'s suffixes', async () => {
    const names = ['100%', 'a%m', 'a%d1', 'a', 'a%25m', '%'];
    for (const n of names) await s.put(s.key('pct', n), Buffer.from(n));
    for (const n of names) expect((await readAll(await s.get(s.key('pct', n)))).toString()).toBe(n);
    expect((await collect(s.list(s.key('pct') + '/'))).map((e) => e.key.split('/').pop()).sort()).toEqual([...names].sort());
    // One meta and one data file per object, nothing left over.
    const files = filesUnder(t.root).filter((f) => f.includes(`${path.sep}pct${path.sep}`));
    expect(files.length).toBe(names.length * 2);
  });

  it('concurrent puts of one key leave exactly one whole version and no orphaned data', async () => {
    const key = s.key('race', 'obj.bin');
    const bodies = Array.from({ length: 8 }, () => randomBytes(300_000));
    await Promise.all(bodies.map((b) => s.put(key, Readable.from([b.subarray(0, 150_000), b.subarray(150_000)]))));
    const digest = await s.sha256(key);
    expect(bodies.map((b) => sha(b))).toContain(digest);
    expect((await s.head(key))?.etag).toBe(digest);
    const files = filesUnder(t.root).filter((f) => f.includes(`${path.sep}race${path.sep}`));
    // Rarely a superseded version survives a three-way race; it is never the one served.
    expect(files.filter((f) => f.endsWith('%m')).length).toBe(1);
    expect(files.some((f) => f.includes('%t'))).toBe(false);
  });

  it('a reader keeps its version while a put replaces the object', async () => {
    const key = s.key('swap.bin');
    const first = randomBytes(2 * 1024 * 1024);
    await s.put(key, first);
    const reading = await s.get(key);
    await s.put(key, Buffer.from('replacement'));
    expect(sha(await readAll(reading))).toBe(sha(first));
    expect((await readAll(await s.get(key))).toString()).toBe('replacement');
  });

  it('delete prunes empty directories but never the root', async () => {
    const key = s.key('deep', 'er', 'still', 'file');
    await s.put(key, Buffer.from('x'));
    await s.delete(key);
    expect(filesUnder(t.root).some((f) => f.includes('deep'))).toBe(false);
    expect(readdirSync(t.root, { recursive: true }).some((f) => String(f).includes('deep'))).toBe(false);
    await s.put(s.key('after'), Buffer.from('root still usable'));
    expect((await readAll(await s.get(s.key('after')))).toString()).toBe('root still usable');
  });
});

describe('local: mounted in the API server', () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await startTestApi();
  });
  afterAll(() => api?.close());

  it('serves the platform storage\'s links on the port it listens on, next to GraphQL', async () => {
    const me = await signUp(api);
    const orgId = localId(me.orgId, 'Organization', 'orgId');
    const storage = orgScoped(api.app.storage.platform, orgId);
    expect(storage.kind).toBe('local');
    const key = storage.key('datasets', 'v1.zip');
    const up = await storage.presignPut(key, { expiresInSeconds: 120, contentType: 'application/zip' });
    expect(up.url.startsWith(new URL(api.url).origin + '/storage/')).toBe(true);
    const body = generatedStream(5 * 1024 * 1024 + 3);
    const res = await fetch(up.url, { method: 'PUT', headers: up.headers, body: Readable.toWeb(body) as ReadableStream, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ size: 5 * 1024 * 1024 + 3, sha256: body.sha256() });
    expect(await storage.sha256(key)).toBe(body.sha256());
    // Stored where the configuration says.
    expect(filesUnder(path.join(api.dataDir, 'storage')).some((f) => f.startsWith(path.join('orgs', orgId, 'datasets', 'v1.zip%d')))).toBe(true);
    const down = await fetch((await storage.presignGet(key, { expiresInSeconds: 120 })).url);
    expect(sha(Buffer.from(await down.arrayBuffer()))).toBe(body.sha256());
    // GraphQL still answers on the same server.
    const gql = await api.gql('{ __typename }');
    expect(gql.data).toEqual({ __typename: 'Query' });
  });
});

describe('storage configuration', () => {
  const base = { NODE_ENV: 'test', CVTRAIN_DATA_DIR: '/tmp/cvtrain-config-test', ...testSecrets(), CVTRAIN_STORAGE_SECRET: 'x'.repeat(32) };

  it('defaults to local storage under the data dir, a 1 hour presign TTL and the listening URL', () => {
    const c = loadConfig(base).storage;
    expect(c.backend).toEqual({ kind: 'local', root: '/tmp/cvtrain-config-test/storage' });
    expect(c.presignTtlSeconds).toBe(3600);
    expect(c.publicUrl).toBeNull();
    expect(c.secret.toString()).toBe('x'.repeat(32));
  });

  it('reads the S3 and Azure settings', () => {
    const s3 = loadConfig({
      ...base,
      CVTRAIN_STORAGE: 's3',
      CVTRAIN_S3_BUCKET: 'my-bucket',
      CVTRAIN_S3_ENDPOINT: 'https://minio.internal:9000/',
      CVTRAIN_S3_FORCE_PATH_STYLE: 'true',
      AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'secret-example-key',
      CVTRAIN_PUBLIC_URL: 'https://api.example.com/',
    }).storage;
    expect(s3.backend).toEqual({
      kind: 's3',
      bucket: 'my-bucket',
      region: 'us-east-1',
      endpoint: 'https://minio.internal:9000',
      forcePathStyle: true,
      credentials: { accessKeyId: 'AKIAEXAMPLE', secretAccessKey: 'secret-example-key', sessionToken: undefined },
      partSizeBytes: 8 * 1024 * 1024,
    });
    expect(s3.publicUrl).toBe('https://api.example.com');
    const az = loadConfig({ ...base, CVTRAIN_STORAGE: 'azure', CVTRAIN_AZURE_ACCOUNT: 'acct', CVTRAIN_AZURE_ACCOUNT_KEY: 'a2V5', CVTRAIN_AZURE_CONTAINER: 'data' }).storage;
    expect(az.backend).toEqual({ kind: 'azure', accountName: 'acct', accountKey: 'a2V5', container: 'data', endpoint: undefined });
  });

  it('names each missing or bad storage variable', () => {
    const problems = (env: Record<string, string>) => {
      try {
        loadConfig({ ...base, ...env });
      } catch (err) {
        return (err as ConfigError).problems;
      }
      return [];
    };
    expect(problems({ CVTRAIN_STORAGE: 's3' })).toEqual(['CVTRAIN_S3_BUCKET: required when CVTRAIN_STORAGE=s3']);
    expect(problems({ CVTRAIN_STORAGE: 's3', CVTRAIN_S3_BUCKET: 'b-1', AWS_ACCESS_KEY_ID: 'AKIA' })).toEqual([
      'AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: set both or neither',
    ]);
    expect(problems({ CVTRAIN_STORAGE: 'azure' })).toHaveLength(3);
    expect(problems({ CVTRAIN_STORAGE: 'gcs' })[0]).toMatch(/^CVTRAIN_STORAGE:/);
    expect(problems({ CVTRAIN_PUBLIC_URL: 'ftp://x' })[0]).toMatch(/^CVTRAIN_PUBLIC_URL:/);
    expect(problems({ CVTRAIN_STORAGE_SECRET: 'short' })[0]).toMatch(/^CVTRAIN_STORAGE_SECRET:/);
    const { CVTRAIN_STORAGE_SECRET: _omit, ...withoutSecret } = base;
    const production = { ...withoutSecret, NODE_ENV: 'production', CVTRAIN_NODE_TOKEN: 'n'.repeat(32) };
    expect(() => loadConfig(production)).toThrow('CVTRAIN_STORAGE_SECRET: required when NODE_ENV=production and CVTRAIN_STORAGE=local');
    // Off local storage nothing signs links, so nothing needs the secret.
    expect(loadConfig({ ...production, CVTRAIN_STORAGE: 's3', CVTRAIN_S3_BUCKET: 'b-1' }).storage.backend.kind).toBe('s3');
  });
});
