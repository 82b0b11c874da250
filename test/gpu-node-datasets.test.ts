// The dataset cache against archives served by a local HTTP server: verified downloads, safe
// extraction (zip and tar.gz), the single-top-level-folder rule, one download for concurrent
// jobs, and least-recently-used eviction.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArchiveFormatError, DatasetCache, UnsafeArchiveError } from '../gpu-node/dataset-cache.js';
import { IntegrityError } from '../gpu-node/transfers.js';
import { PYTHON, recordingLogger, tempDir } from './gpu-node-helpers.js';

const archives = new Map<string, Buffer>();
const requests = new Map<string, number>();
let server: http.Server;
let base: string;
let work: string;

beforeAll(async () => {
  work = tempDir('datasets');
  server = http.createServer((req, res) => {
    const name = decodeURIComponent(req.url!.slice(1).split('?')[0]);
    requests.set(name, (requests.get(name) ?? 0) + 1);
    const body = archives.get(name);
    if (!body) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    // Slow enough that concurrent requests overlap with the first download.
    setTimeout(() => res.end(body), 200);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

type Entry = { name: string; data?: string; dir?: boolean; symlink?: string; hardlink?: string };

/** Builds an archive with Python's zipfile/tarfile, which write whatever names they are given. */
function archive(name: string, kind: 'zip' | 'tgz', entries: Entry[]): { url: string; sha256: string } {
  const out = path.join(work, name);
  const script = `
import io, json, sys, tarfile, zipfile, time
kind, out, entries = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if kind == 'zip':
    with zipfile.ZipFile(out, 'w') as z:
        for e in entries:
            if e.get('symlink'):
                info = zipfile.ZipInfo(e['name'])
                info.external_attr = (0o120777 << 16)
                z.writestr(info, e['symlink'])
            elif e.get('dir'):
                z.writestr(zipfile.ZipInfo(e['name'].rstrip('/') + '/'), '')
            else:
                z.writestr(e['name'], e.get('data', ''))
else:
    with tarfile.open(out, 'w:gz') as t:
        for e in entries:
            info = tarfile.TarInfo(e['name'])
            info.mtime = int(time.time())
            if e.get('symlink'):
                info.type = tarfile.SYMTYPE; info.linkname = e['symlink']; t.addfile(info)
            elif e.get('hardlink'):
                info.type = tarfile.LNKTYPE; info.linkname = e['hardlink']; t.addfile(info)
            elif e.get('dir'):
                info.type = tarfile.DIRTYPE; info.mode = 0o755; t.addfile(info)
            else:
                data = e.get('data', '').encode()
                info.size = len(data); info.mode = 0o644
                t.addfile(info, io.BytesIO(data))
`;
  execFileSync(PYTHON, ['-c', script, kind, out, JSON.stringify(entries)]);
  const body = readFileSync(out);
  archives.set(name, body);
  return { url: `${base}/${encodeURIComponent(name)}`, sha256: createHash('sha256').update(body).digest('hex') };
}

function cache(keep = 5) {
  return new DatasetCache({ dir: tempDir('cache'), keep, logger: recordingLogger() });
}

const YOLO = [
  { name: 'data.yaml', data: 'names: [a, b]\n' },
  { name: 'images/train/1.jpg', data: 'jpeg' },
  { name: 'labels/train/1.txt', data: '0 0.5 0.5 0.1 0.1\n' },
];

describe('dataset cache', () => {
  it('zip with one top-level folder: the root is that folder (macOS junk ignored)', async () => {
    const a = archive('wrapped.zip', 'zip', [
      ...YOLO.map((e) => ({ ...e, name: `shapes/${e.name}` })),
      { name: '__MACOSX/shapes/._data.yaml', data: 'junk' },
    ]);
    const c = cache();
    const lease = await c.acquire({ ...a, format: 'yolo' });
    expect(path.basename(lease.root)).toBe('shapes');
    expect(readFileSync(path.join(lease.root, 'data.yaml'), 'utf8')).toBe('names: [a, b]\n');
    expect(readFileSync(path.join(lease.root, 'labels', 'train', '1.txt'), 'utf8')).toBe('0 0.5 0.5 0.1 0.1\n');
    expect(existsSync(path.join(path.dirname(lease.root), '__MACOSX'))).toBe(false);
    lease.release();
  });

  it('tar.gz with files at the top: the root is the archive root; a second acquire is a cache hit', async () => {
    const a = archive('flat.tgz', 'tgz', [{ name: 'images', dir: true }, ...YOLO]);
    const c = cache();
    const first = await c.acquire({ ...a, format: 'yolo' });
    expect(readdirSync(first.root).sort()).toEqual(['data.yaml', 'images', 'labels']);
    const before = requests.get('flat.tgz');
    const second = await c.acquire({ ...a, format: 'yolo' });
    expect(second.root).toBe(first.root);
    expect(requests.get('flat.tgz')).toBe(before);
    expect(c.downloads).toBe(1);
    first.release();
    second.release();
  });

  it('a single top-level file is not unwrapped; two top-level folders are not either', async () => {
    const c = cache();
    const one = await c.acquire({ ...archive('onefile.zip', 'zip', [{ name: 'data.yaml', data: 'x' }]), format: 'yolo' });
    expect(readdirSync(one.root)).toEqual(['data.yaml']);
    const two = await c.acquire({ ...archive('twodirs.zip', 'zip', [{ name: 'a/x', data: '1' }, { name: 'b/y', data: '2' }]), format: 'yolo' });
    expect(readdirSync(two.root).sort()).toEqual(['a', 'b']);
  });

  it('sha256 mismatch is refused and nothing stays in the cache', async () => {
    const a = archive('tampered.zip', 'zip', YOLO);
    const c = cache();
    const wrong = 'f'.repeat(64);
    const err = await c.acquire({ url: a.url, sha256: wrong, format: 'yolo' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IntegrityError);
    expect((err as IntegrityError).actual).toBe(a.sha256);
    expect(c.list()).toEqual([]);
    expect(readdirSync((c as unknown as { opts: { dir: string } }).opts.dir).filter((n) => n !== '.partial')).toEqual([]);
  });

  it.each([
    ['zip-slip "../"', 'slip.zip', 'zip', [{ name: 'ok.txt', data: 'ok' }, { name: '../evil.txt', data: 'pwned' }], /climbs out/],
    ['zip-slip nested', 'slip2.zip', 'zip', [{ name: 'a/../../evil.txt', data: 'pwned' }], /climbs out/],
    ['absolute path in zip', 'abs.zip', 'zip', [{ name: '/tmp/evil.txt', data: 'pwned' }], /absolute path/],
    ['symlink in zip', 'link.zip', 'zip', [{ name: 'data.yaml', symlink: '/etc/passwd' }], /symbolic link/],
    ['"../" in tar', 'slip.tgz', 'tgz', [{ name: '../evil.txt', data: 'pwned' }], /climbs out/],
    ['absolute path in tar', 'abs.tgz', 'tgz', [{ name: '/tmp/evil.txt', data: 'pwned' }], /absolute path/],
    ['symlink in tar', 'link.tgz', 'tgz', [{ name: 'images', symlink: '/etc' }], /symbolic link/],
    ['hard link in tar', 'hard.tgz', 'tgz', [{ name: 'a.txt', data: 'a' }, { name: 'b.txt', hardlink: '/etc/passwd' }], /hard link/],
  ] as const)('refuses %s', async (_label, name, kind, entries, reason) => {
    const a = archive(name, kind, entries as unknown as Entry[]);
    const c = cache();
    const err = await c.acquire({ ...a, format: 'yolo' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnsafeArchiveError);
    expect((err as Error).message).toMatch(reason);
    expect(c.list()).toEqual([]);
    expect(existsSync(path.join(work, 'evil.txt'))).toBe(false);
    expect(existsSync('/tmp/evil.txt')).toBe(false);
  });

  it('something that is not an archive is refused', async () => {
    const body = Buffer.from('hello, not an archive');
    archives.set('plain.bin', body);
    const err = await cache()
      .acquire({ url: `${base}/plain.bin`, sha256: createHash('sha256').update(body).digest('hex'), format: 'yolo' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ArchiveFormatError);
  });

  it('concurrent jobs wanting the same dataset share one download', async () => {
    const a = archive('shared.zip', 'zip', YOLO);
    const c = cache();
    const leases = await Promise.all([1, 2, 3, 4].map(() => c.acquire({ ...a, format: 'yolo' })));
    expect(requests.get('shared.zip')).toBe(1);
    expect(c.downloads).toBe(1);
    expect(new Set(leases.map((l) => l.root)).size).toBe(1);
    for (const l of leases) l.release();
  });

  it('one waiter giving up does not stop the download the others wait for', async () => {
    const a = archive('abort.zip', 'zip', YOLO);
    const c = cache();
    const ctl = new AbortController();
    const quitter = c.acquire({ ...a, format: 'yolo' }, ctl.signal);
    const stayer = c.acquire({ ...a, format: 'yolo' });
    ctl.abort(new Error('cancelled'));
    await expect(quitter).rejects.toThrow('cancelled');
    const lease = await stayer;
    expect(readdirSync(lease.root).sort()).toEqual(['data.yaml', 'images', 'labels']);
  });

  it('keeps the N most recently used datasets and never evicts one in use', async () => {
    const c = cache(2);
    const a = archive('lru-a.zip', 'zip', [{ name: 'a', data: 'a' }]);
    const b = archive('lru-b.zip', 'zip', [{ name: 'b', data: 'b' }]);
    const d = archive('lru-d.zip', 'zip', [{ name: 'd', data: 'd' }]);
    const la = await c.acquire({ ...a, format: 'yolo' }); // in use throughout
    (await c.acquire({ ...b, format: 'yolo' })).release();
    await new Promise((r) => setTimeout(r, 5));
    (await c.acquire({ ...d, format: 'yolo' })).release();
    // keep=2: a (in use) and d (newest) stay; b goes.
    expect(c.list().map((m) => m.sha256).sort()).toEqual([a.sha256, d.sha256].sort());
    la.release();
    await new Promise((r) => setTimeout(r, 5));
    (await c.acquire({ ...b, format: 'yolo' })).release();
    // Now a is the least recently used and nothing holds it.
    expect(c.list().map((m) => m.sha256).sort()).toEqual([b.sha256, d.sha256].sort());
  });
});
