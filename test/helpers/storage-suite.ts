// One behavioural suite every storage backend must pass against its real service on loopback:
// the same assertions for local, s3rver and Azurite keep the backends interchangeable.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  StorageAccessError,
  StorageInputError,
  StorageKeyError,
  StorageNotFoundError,
  StorageRangeError,
  StorageTooLargeError,
} from '../../src/storage/errors.js';
import { orgScoped, type OrgStorage } from '../../src/storage/keys.js';
import type { Storage } from '../../src/storage/types.js';
import { generatedStream } from './storage-servers.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk));
  return Buffer.concat(chunks);
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every malformed form a key can take, each paired with the rule it breaks. */
export function badKeys(org: string, other: string): [string, string][] {
  return [
    [`orgs/${org}/../${other}/x`, '".." segment'],
    [`orgs/${org}/a/../../${other}/x`, '".." segment'],
    [`../orgs/${org}/x`, '".." segment'],
    [`orgs/${org}/./x`, '"." segment'],
    [`/orgs/${org}/x`, 'absolute path'],
    [`C:/orgs/${org}/x`, 'absolute path'],
    [`orgs/${org}/a\\..\\..\\x`, 'backslash'],
    [`orgs/${org}//x`, 'empty path segment'],
    [`orgs/${org}/x/`, 'empty path segment'],
    [`orgs/${org}/a\u0000b`, 'NUL byte'],
    [`orgs/${org}/a\nb`, 'control character'],
    [`orgs/${org}/\ud800x`, 'not well-formed Unicode'],
    [`orgs/${org}/e\u0301`, 'NFC'],
    [`orgs/${org}/${'a'.repeat(201)}`, 'segment longer than'],
    [`orgs/${org}/${'abcdefgh/'.repeat(120)}x`, 'longer than 1024 bytes'],
    [`orgs/${org}`, 'must start with'],
    [`tenants/${org}/x`, 'must start with'],
    ['', 'empty'],
  ];
}

export interface SuiteTarget {
  storage: Storage;
  close(): Promise<void>;
}

export interface SuiteOptions {
  /**
   * False where the service does not list in key order (s3rver lists in the order of its own
   * file names): listings are then compared as sets. Real S3, Azure and the local backend sort.
   */
  sortedListing?: boolean;
  /** Objects written for the multi-page listing test: more than one page of the backend's listing. */
  manyObjects?: number;
}

export function storageSuite(name: string, setup: () => Promise<SuiteTarget>, opts: SuiteOptions = {}) {
  const sorted = opts.sortedListing ?? true;
  // S3 lists 1,000 keys a page.
  const many = opts.manyObjects ?? 1005;
  const order = (keys: string[]) => (sorted ? keys : [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b))));
  describe(`${name}: the Storage contract`, () => {
    let target: SuiteTarget;
    let raw: Storage;
    let org: string;
    let other: string;
    let s: OrgStorage;

    beforeAll(async () => {
      target = await setup();
      raw = target.storage;
      org = randomUUID();
      other = randomUUID();
      s = orgScoped(raw, org);
    });
    afterAll(async () => target?.close());

    it('round-trips bytes, reporting size and SHA-256 computed while writing', async () => {
      const body = randomBytes(100_003);
      const key = s.key('round', 'trip.bin');
      const put = await s.put(key, body);
      expect(put).toMatchObject({ key, size: body.length, sha256: sha(body) });
      expect((await readAll(await s.get(key))).equals(body)).toBe(true);
    });

    it('streams a body of unknown length (past the multipart threshold) in and out', async () => {
      const body = generatedStream(12 * 1024 * 1024 + 17, 256 * 1024);
      const key = s.key('stream', 'big.bin');
      const put = await s.put(key, body, { contentType: 'application/octet-stream' });
      expect(put.size).toBe(12 * 1024 * 1024 + 17);
      expect(put.sha256).toBe(body.sha256());
      expect(await s.sha256(key)).toBe(body.sha256());
      expect((await s.head(key))?.size).toBe(put.size);
    });

    it('stores an empty object', async () => {
      const key = s.key('empty');
      const put = await s.put(key, Buffer.alloc(0));
      expect(put).toMatchObject({ size: 0, sha256: sha('') });
      expect((await readAll(await s.get(key))).length).toBe(0);
      expect((await s.head(key))?.size).toBe(0);
    });

    it('head returns size, content type, metadata and an etag; null when missing', async () => {
      const key = s.key('head', 'weights.onnx');
      await s.put(key, Buffer.from('onnx bytes'), {
        contentType: 'application/octet-stream',
        metadata: { session_id: 'abc123', epoch: '7' },
      });
      const info = await s.head(key);
      expect(info).toMatchObject({
        key,
        size: 10,
        contentType: 'application/octet-stream',
        metadata: { session_id: 'abc123', epoch: '7' },
      });
      expect(info?.etag).toBeTruthy();
      expect(info?.lastModified.getTime()).toBeGreaterThan(Date.now() - 5 * 60_000);
      expect(await s.head(s.key('head', 'missing'))).toBeNull();
    });

    it('a second put replaces content, size and metadata together', async () => {
      const key = s.key('replace.txt');
      await s.put(key, Buffer.from('first version, longer'), { metadata: { v: '1' }, contentType: 'text/plain' });
      await s.put(key, Buffer.from('second'), { metadata: { v: '2' }, contentType: 'application/json' });
      expect((await readAll(await s.get(key))).toString()).toBe('second');
      expect(await s.head(key)).toMatchObject({ size: 6, metadata: { v: '2' }, contentType: 'application/json' });
      expect((await collect(s.list(s.key('replace.txt')))).map((e) => e.size)).toEqual([6]);
    });

    it('get of a missing key throws StorageNotFoundError', async () => {
      await expect(s.get(s.key('nope'))).rejects.toBeInstanceOf(StorageNotFoundError);
      await expect(s.sha256(s.key('nope'))).rejects.toBeInstanceOf(StorageNotFoundError);
    });

    it('reads byte ranges (inclusive), clamps the end, and refuses a start past the end', async () => {
      const key = s.key('range.txt');
      await s.put(key, Buffer.from('0123456789'));
      expect((await readAll(await s.get(key, { start: 2, end: 5 }))).toString()).toBe('2345');
      expect((await readAll(await s.get(key, { start: 7 }))).toString()).toBe('789');
      expect((await readAll(await s.get(key, { start: 8, end: 100 }))).toString()).toBe('89');
      await expect(s.get(key, { start: 10 })).rejects.toBeInstanceOf(StorageRangeError);
    });

    it('delete removes the object and is idempotent', async () => {
      const key = s.key('delete', 'me');
      await s.put(key, Buffer.from('x'));
      await s.delete(key);
      expect(await s.head(key)).toBeNull();
      await expect(s.get(key)).rejects.toBeInstanceOf(StorageNotFoundError);
      await s.delete(key);
      expect(await collect(s.list(s.key('delete') + '/'))).toEqual([]);
    });

    it('lists by prefix in key byte order, partial segments included, "a" and "a/b" both objects', async () => {
      const base = s.key('list');
      const names = ['a', 'a/b', 'a-c', 'ab', 'b/c/d', 'é', 'Z'];
      for (const n of names) await s.put(`${base}/${n}`, Buffer.from(n));
      const keysOf = async (p: string) => order((await collect(s.list(p))).map((e) => e.key.slice(base.length + 1)));
      // Byte order: "Z" (0x5a) < "a" < "a-c" ("-" 0x2d) < "a/b" ("/" 0x2f) < "ab" < "b/..." < "é" (0xc3).
      expect(await keysOf(`${base}/`)).toEqual(['Z', 'a', 'a-c', 'a/b', 'ab', 'b/c/d', 'é']);
      expect(await keysOf(`${base}/a`)).toEqual(['a', 'a-c', 'a/b', 'ab']);
      expect(await keysOf(`${base}/a/`)).toEqual(['a/b']);
      expect(await keysOf(`${base}/b/c`)).toEqual(['b/c/d']);
      expect(await keysOf(`${base}/nothing`)).toEqual([]);
      const entry = (await collect(s.list(`${base}/a`))).find((e) => e.key === `${base}/a`);
      expect(entry).toMatchObject({ key: `${base}/a`, size: 1 });
      expect(entry?.lastModified).toBeInstanceOf(Date);
      expect((await readAll(await s.get(`${base}/a/b`))).toString()).toBe('a/b');
      expect((await readAll(await s.get(`${base}/a`))).toString()).toBe('a');
    });

    it('lists more than one page of results', async () => {
      const base = s.key('many');
      await Promise.all(Array.from({ length: many }, (_, i) => s.put(`${base}/${String(i).padStart(4, '0')}`, Buffer.from([i % 256]))));
      const keys = order((await collect(s.list(`${base}/`))).map((e) => e.key));
      expect(keys.length).toBe(many);
      expect(new Set(keys).size).toBe(many);
      expect(keys[0]).toBe(`${base}/0000`);
      expect(keys[many - 1]).toBe(`${base}/${String(many - 1).padStart(4, '0')}`);
      expect([...keys].sort()).toEqual(keys);
    }, 120_000);

    it('sha256 streams the stored bytes back', async () => {
      const body = randomBytes(3 * 1024 * 1024 + 1);
      const key = s.key('digest.bin');
      await s.put(key, Readable.from([body.subarray(0, 1000), body.subarray(1000)]));
      expect(await s.sha256(key)).toBe(sha(body));
    });

    it('maxBytes refuses a body past the limit and stores nothing', async () => {
      const key = s.key('too', 'large.bin');
      await expect(s.put(key, generatedStream(6 * 1024 * 1024, 64 * 1024), { maxBytes: 5 * 1024 * 1024 })).rejects.toBeInstanceOf(
        StorageTooLargeError,
      );
      expect(await s.head(key)).toBeNull();
      expect(await collect(s.list(s.key('too') + '/'))).toEqual([]);
      // Exactly at the limit is fine.
      expect((await s.put(key, randomBytes(1000), { maxBytes: 1000 })).size).toBe(1000);
    });

    it('a failing body stream stores nothing', async () => {
      const key = s.key('broken', 'upload.bin');
      // Fails after 10 MiB: past the first multipart parts, so S3 has to abort a started upload.
      let sent = 0;
      const body = new Readable({
        read() {
          if (sent >= 10 * 1024 * 1024) {
            this.destroy(new Error('client went away'));
            return;
          }
          sent += 64 * 1024;
          this.push(randomBytes(64 * 1024));
        },
      });
      await expect(s.put(key, body)).rejects.toThrow();
      expect(await s.head(key)).toBeNull();
    });

    it('refuses bad metadata, content types and expiries', async () => {
      const key = s.key('meta');
      await expect(s.put(key, Buffer.from('x'), { metadata: { 'Bad-Key': 'v' } })).rejects.toBeInstanceOf(StorageInputError);
      await expect(s.put(key, Buffer.from('x'), { metadata: { ok: 'line\nbreak' } })).rejects.toBeInstanceOf(StorageInputError);
      await expect(s.put(key, Buffer.from('x'), { contentType: 'text/html\r\nx-injected: 1' })).rejects.toBeInstanceOf(
        StorageInputError,
      );
      await expect(s.presignGet(key, { expiresInSeconds: 0 })).rejects.toBeInstanceOf(StorageInputError);
      await expect(s.presignGet(key, { expiresInSeconds: 8 * 24 * 3600 })).rejects.toBeInstanceOf(StorageInputError);
      expect(await s.head(key)).toBeNull();
    });

    it('refuses every malformed key form, scoped or not, before touching the backend', async () => {
      for (const [bad, rule] of badKeys(org, other)) {
        for (const storage of [s, raw]) {
          await expect(storage.put(bad, Buffer.from('x')), bad).rejects.toThrow(rule);
          await expect(storage.put(bad, Buffer.from('x')), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.get(bad), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.head(bad), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.delete(bad), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.presignGet(bad, { expiresInSeconds: 60 }), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.presignPut(bad, { expiresInSeconds: 60 }), bad).rejects.toBeInstanceOf(StorageKeyError);
          await expect(storage.sha256(bad), bad).rejects.toBeInstanceOf(StorageKeyError);
        }
      }
      await expect(collect(s.list(`orgs/${org}/../${other}/`))).rejects.toBeInstanceOf(StorageKeyError);
      // Nothing reached the other organization's prefix.
      expect(await collect(raw.list(`orgs/${other}/`))).toEqual([]);
    });

    it('refuses well-formed keys of another organization, and cannot see its objects', async () => {
      const theirs = orgScoped(raw, other);
      const secret = theirs.key('datasets', 'secret.zip');
      await theirs.put(secret, Buffer.from('their data'));
      const calls: [string, () => Promise<unknown>][] = [
        ['get', () => s.get(secret)],
        ['head', () => s.head(secret)],
        ['put', () => s.put(secret, Buffer.from('overwrite'))],
        ['delete', () => s.delete(secret)],
        ['sha256', () => s.sha256(secret)],
        ['presignGet', () => s.presignGet(secret, { expiresInSeconds: 60 })],
        ['presignPut', () => s.presignPut(secret, { expiresInSeconds: 60 })],
        ['list', () => collect(s.list(`orgs/${other}/`))],
        // A prefix that is a string-prefix of the organization's but not inside it.
        ['list partial org id', () => collect(s.list(`orgs/${org.slice(0, 8)}`))],
      ];
      for (const [what, call] of calls) {
        await expect(call(), what).rejects.toBeInstanceOf(StorageKeyError);
        if (what !== 'list partial org id') await expect(call(), what).rejects.toBeInstanceOf(StorageAccessError);
      }
      // Untouched.
      expect((await readAll(await theirs.get(secret))).toString()).toBe('their data');
      // The caller's own listing never includes the other organization's objects.
      expect((await collect(s.list(s.prefix))).some((e) => e.key.includes(other))).toBe(false);
    });

    it('presigned GET: a plain fetch gets the bytes, as an attachment with the download name', async () => {
      const key = s.key('artifacts', 'best.pt');
      const body = randomBytes(50_000);
      await s.put(key, body, { contentType: 'application/octet-stream' });
      const link = await s.presignGet(key, { expiresInSeconds: 300, downloadName: 'model épique.pt' });
      expect(link.method).toBe('GET');
      expect(link.expiresAt.getTime()).toBeGreaterThan(Date.now() + 290_000);
      expect(link.expiresAt.getTime()).toBeLessThanOrEqual(Date.now() + 301_000);
      const res = await fetch(link.url, { headers: link.headers });
      expect(res.status).toBe(200);
      expect(Buffer.from(await res.arrayBuffer()).equals(body)).toBe(true);
      const disposition = res.headers.get('content-disposition') ?? '';
      expect(disposition).toMatch(/^attachment;/);
      expect(disposition).toContain(`filename*=UTF-8''${encodeURIComponent('model épique.pt')}`);
    });

    it('presigned PUT: a plain fetch uploads with the given headers, and the object reads back', async () => {
      const key = s.key('uploads', 'dataset.zip');
      const body = randomBytes(200_000);
      const link = await s.presignPut(key, { expiresInSeconds: 300, contentType: 'application/zip' });
      expect(link.method).toBe('PUT');
      expect(link.headers['content-type']).toBe('application/zip');
      const res = await fetch(link.url, { method: 'PUT', headers: link.headers, body });
      expect(res.status, await res.clone().text()).toBeLessThan(300);
      expect(await s.sha256(key)).toBe(sha(body));
      expect(await s.head(key)).toMatchObject({ size: body.length, contentType: 'application/zip' });
    });

    it('presigned links expire', async () => {
      const key = s.key('expiring.txt');
      await s.put(key, Buffer.from('soon gone'));
      const get = await s.presignGet(key, { expiresInSeconds: 1 });
      const put = await s.presignPut(s.key('expiring-upload.txt'), { expiresInSeconds: 1 });
      expect((await fetch(get.url)).status).toBe(200);
      await sleep(2_100);
      expect((await fetch(get.url)).status).toBe(403);
      const res = await fetch(put.url, { method: 'PUT', headers: put.headers, body: 'late' });
      expect(res.status).toBe(403);
      expect(await s.head(s.key('expiring-upload.txt'))).toBeNull();
    });
  });
}
