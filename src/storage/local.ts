// Local filesystem backend, the default. Presigned URLs are links to the API itself
// (/storage/<key>?expires=...&sig=...), HMAC-SHA256-signed with the server's storage secret and
// served by local-http.ts.
//
// On-disk layout under the root, for key "orgs/o/a/b.zip":
//   orgs/o/a/b.zip%m           JSON: size, sha256, content type, metadata, and the current data version
//   orgs/o/a/b.zip%d<version>  the bytes
//   orgs/o/a/b.zip%t<random>   a write in progress
//   orgs/o/a/b.zip%u           the claim of a write-once upload in progress (see claim())
// Segments are stored with "%" escaped as "%25", so a file name ending in "%m", "%d...", "%t..." or "%u"
// can never be a directory's name: "a" and "a/b" can both be objects, as on S3. The data file is
// versioned so a put switches content, size and metadata together by renaming one meta file, and a
// reader holding the old version's descriptor keeps reading the old bytes.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  StorageChangedError,
  StorageExistsError,
  StorageKeyError,
  StorageNotFoundError,
  StorageRangeError,
  StorageUploadInProgressError,
} from './errors.js';
import { checkContentType, checkDownloadName, checkExpiry, checkKey, checkMetadata, checkPrefix } from './keys.js';
import { HashingCounter, resolveRange, sha256Of, toReadable } from './streams.js';
import type {
  GetOptions,
  ListEntry,
  ObjectInfo,
  PresignedRequest,
  PresignGetOptions,
  PresignPutOptions,
  PutOptions,
  PutResult,
  Storage,
} from './types.js';

export const LOCAL_STORAGE_PATH = '/storage/';

const META = '%m';
const DATA = '%d';
const TEMP = '%t';
const CLAIM = '%u';
const esc = (segment: string) => segment.replaceAll('%', '%25');
const unesc = (name: string) => name.replaceAll('%25', '%');

interface MetaFile {
  v: 1;
  version: string;
  size: number;
  sha256: string;
  contentType: string | null;
  metadata: Record<string, string>;
  modified: string;
}

export interface LocalStorageOptions {
  root: string;
  /** HMAC key of presigned links; at least 32 bytes. */
  secret: Buffer;
  /** Base of presigned links, e.g. https://api.example.com; the handler serves LOCAL_STORAGE_PATH under it. */
  publicUrl: string;
  /** Seconds since the epoch; replaceable so tests can move time. */
  now?: () => number;
  /**
   * A write-once upload touches its claim this often while it runs; a claim untouched for
   * `claimStaleMs` was left by a process that died mid-upload and may be taken over.
   */
  claimRefreshMs?: number;
  claimStaleMs?: number;
}

export interface LocalPutOptions extends PutOptions {
  /**
   * Write-once: StorageUploadInProgressError while another write-once put of the key runs,
   * StorageExistsError when the object exists (checked again at the commit, which cannot
   * replace an object another put committed first). What upload links signed `once` use.
   */
  onlyIfAbsent?: boolean;
}

/** What a presigned link grants, once its signature and expiry check out. */
export interface LinkGrant {
  method: 'GET' | 'PUT';
  key: string;
  contentType: string | null;
  filename: string | null;
  /** PUT only: refuse when the object exists (write-once upload links). */
  once?: boolean;
}

export type LinkCheck = { ok: true; grant: LinkGrant } | { ok: false; reason: string };

export class LocalStorage implements Storage {
  readonly kind = 'local' as const;
  readonly root: string;
  private readonly secret: Buffer;
  private base: string;
  private readonly now: () => number;
  private readonly claimRefreshMs: number;
  private readonly claimStaleMs: number;

  constructor(opts: LocalStorageOptions) {
    if (opts.secret.length < 32) throw new Error('the local storage secret must be at least 32 bytes');
    this.root = path.resolve(opts.root);
    this.secret = opts.secret;
    this.base = opts.publicUrl.replace(/\/+$/, '');
    this.now = opts.now ?? (() => Math.floor(Date.now() / 1000));
    this.claimRefreshMs = opts.claimRefreshMs ?? 5_000;
    this.claimStaleMs = opts.claimStaleMs ?? 30_000;
  }

  get publicUrl(): string {
    return this.base;
  }

  /** The server sets this once it knows its port, unless CVTRAIN_PUBLIC_URL fixed it. */
  setPublicUrl(url: string): void {
    this.base = url.replace(/\/+$/, '');
  }

  async put(key: string, body: Readable | Uint8Array, opts: LocalPutOptions = {}): Promise<PutResult> {
    const { dir, base } = this.locate(key);
    const contentType = checkContentType(opts.contentType) ?? null;
    const metadata = checkMetadata(opts.metadata);
    if (!opts.onlyIfAbsent) return this.write(key, dir, base, body, contentType, metadata, opts.maxBytes, false);
    const claim = await this.claim(key, dir, base);
    try {
      return await this.write(key, dir, base, body, contentType, metadata, opts.maxBytes, true);
    } finally {
      await claim.release();
    }
  }

  /** Whether a write-once put of `key` holds a live claim (the API refuses to finalize meanwhile). */
  async uploadInProgress(key: string): Promise<boolean> {
    const { dir, base } = this.locate(key);
    return this.liveClaim(path.join(dir, base + CLAIM));
  }

  private async write(
    key: string,
    dir: string,
    base: string,
    body: Readable | Uint8Array,
    contentType: string | null,
    metadata: Record<string, string>,
    maxBytes: number | undefined,
    once: boolean,
  ): Promise<PutResult> {
    const version = randomBytes(12).toString('hex');
    const temp = path.join(dir, `${base}${TEMP}${version}`);
    const data = path.join(dir, `${base}${DATA}${version}`);
    const metaPath = path.join(dir, base + META);
    const counter = new HashingCounter(maxBytes);
    let renamed = false;
    try {
      // Refused before a byte is read; the commit below checks again, atomically.
      if (once && (await this.readMeta(metaPath))) throw new StorageExistsError(key);
      const fh = await openCreatingDir(temp, dir);
      // flush: fsync before close, so the object is durable before the rename makes it visible
      // (a crash must not leave a torn object). The stream closes the handle, on error too.
      await pipeline(toReadable(body), counter, fh.createWriteStream({ flush: true }));
      await rename(temp, data);
      renamed = true;
      const meta: MetaFile = {
        v: 1,
        version,
        size: counter.bytes,
        sha256: counter.sha256(),
        contentType,
        metadata,
        modified: new Date().toISOString(),
      };
      if (once) {
        if (!(await writeFileExclusive(metaPath, `${temp}m`, JSON.stringify(meta)))) throw new StorageExistsError(key);
        return { key, size: meta.size, sha256: meta.sha256, etag: meta.sha256 };
      }
      const previous = await this.readMeta(metaPath);
      await writeFileAtomic(metaPath, `${temp}m`, JSON.stringify(meta));
      if (previous && previous.version !== version) {
        // A concurrent put may have replaced `previous` first; its data is then already gone.
        await unlinkQuiet(path.join(dir, `${base}${DATA}${previous.version}`));
      }
      return { key, size: meta.size, sha256: meta.sha256, etag: meta.sha256 };
    } catch (err) {
      await unlinkQuiet(temp);
      if (renamed && (await this.readMeta(metaPath))?.version !== version) await unlinkQuiet(data);
      throw err;
    }
  }

  async get(key: string, opts?: GetOptions): Promise<Readable> {
    return (await this.openRead(key, opts)).stream;
  }

  /** Info and bytes of one version, read consistently (the HTTP handler needs both). */
  async openRead(
    key: string,
    opts?: GetOptions,
  ): Promise<{ info: ObjectInfo; stream: Readable; range: { start: number; end: number } }> {
    const { dir, base } = this.locate(key);
    // A put between reading the meta and opening its data deletes that data; the meta then names
    // a newer version, so read it again.
    for (let attempt = 0; attempt < 5; attempt++) {
      const meta = await this.readMeta(path.join(dir, base + META));
      if (!meta) break;
      if (opts?.ifMatch !== undefined && opts.ifMatch !== meta.sha256) throw new StorageChangedError(key, opts.ifMatch);
      const range = resolveRange(meta.size, opts);
      if (!range) throw new StorageRangeError(key, opts?.start ?? 0, meta.size);
      let fh: FileHandle;
      try {
        fh = await open(path.join(dir, `${base}${DATA}${meta.version}`), 'r');
      } catch (err) {
        if (isCode(err, 'ENOENT')) continue;
        throw err;
      }
      const info = this.info(key, meta);
      if (range.end < range.start) {
        await fh.close();
        return { info, stream: Readable.from([]), range };
      }
      return { info, stream: fh.createReadStream({ start: range.start, end: range.end }), range };
    }
    throw new StorageNotFoundError(key);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const { dir, base } = this.locate(key);
    const meta = await this.readMeta(path.join(dir, base + META));
    return meta ? this.info(key, meta) : null;
  }

  async delete(key: string): Promise<void> {
    const { dir, base } = this.locate(key);
    const metaPath = path.join(dir, base + META);
    const meta = await this.readMeta(metaPath);
    if (!meta) return;
    // The meta goes first: from then on the object is gone for every reader.
    await unlinkQuiet(metaPath);
    await unlinkQuiet(path.join(dir, `${base}${DATA}${meta.version}`));
    await this.pruneEmptyDirs(dir);
  }

  async *list(prefix: string): AsyncIterable<ListEntry> {
    checkPrefix(prefix);
    const segments = prefix.split('/');
    const dirSegments = segments.slice(0, -1);
    const dir = this.inside(path.join(this.root, ...dirSegments.map(esc)));
    yield* this.walk(dir, dirSegments.join('/') + '/', prefix);
  }

  async presignGet(key: string, opts: PresignGetOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expires = this.now() + checkExpiry(opts.expiresInSeconds);
    const filename = checkDownloadName(opts.downloadName) ?? null;
    return this.link({ method: 'GET', key, contentType: null, filename }, expires);
  }

  async presignPut(key: string, opts: PresignPutOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expires = this.now() + checkExpiry(opts.expiresInSeconds);
    const contentType = checkContentType(opts.contentType) ?? null;
    return this.link({ method: 'PUT', key, contentType, filename: null, once: opts.onlyIfAbsent === true }, expires);
  }

  async sha256(key: string): Promise<string> {
    return sha256Of(await this.get(key));
  }

  async close(): Promise<void> {}

  /**
   * Checks a presigned link: `method` is the HTTP method (HEAD is allowed where GET was signed),
   * `key` the decoded path, `query` the link's query string.
   */
  verifyLink(method: string, key: string, query: URLSearchParams): LinkCheck {
    const signedMethod = method === 'HEAD' ? 'GET' : method;
    if (signedMethod !== 'GET' && signedMethod !== 'PUT') return { ok: false, reason: 'method not allowed' };
    const expiresRaw = query.get('expires') ?? '';
    const sig = query.get('sig') ?? '';
    if (!/^\d{1,12}$/.test(expiresRaw) || !/^[0-9a-f]{64}$/.test(sig)) return { ok: false, reason: 'not a signed link' };
    const grant: LinkGrant = {
      method: signedMethod,
      key,
      contentType: query.get('type'),
      filename: query.get('filename'),
      once: query.get('once') === '1',
    };
    const expected = Buffer.from(this.signature(grant, Number(expiresRaw)), 'hex');
    // Constant time, so the signature cannot be guessed byte by byte from response timings.
    if (!timingSafeEqual(expected, Buffer.from(sig, 'hex'))) return { ok: false, reason: 'signature does not match' };
    // Checked after the signature, so a forged expiry is reported as forged, not as expired.
    if (Number(expiresRaw) < this.now()) return { ok: false, reason: 'link expired' };
    return { ok: true, grant };
  }

  private link(grant: LinkGrant, expires: number): PresignedRequest {
    const query = new URLSearchParams({ expires: String(expires) });
    if (grant.contentType !== null) query.set('type', grant.contentType);
    if (grant.filename !== null) query.set('filename', grant.filename);
    if (grant.once) query.set('once', '1');
    query.set('sig', this.signature(grant, expires));
    const headers: Record<string, string> = grant.contentType !== null ? { 'content-type': grant.contentType } : {};
    return {
      method: grant.method,
      url: `${this.base}${LOCAL_STORAGE_PATH}${encodeKeyPath(grant.key)}?${query}`,
      headers,
      expiresAt: new Date(expires * 1000),
    };
  }

  // Every field that changes what the link does is signed; the JSON array leaves no ambiguity
  // about where one field ends and the next begins.
  private signature(grant: LinkGrant, expires: number): string {
    const fields: unknown[] = ['cvtrain-storage-v1', grant.method, grant.key, expires, grant.contentType, grant.filename];
    // Appended only when set, so links signed before write-once existed keep their signatures.
    if (grant.once) fields.push('once');
    const payload = JSON.stringify(fields);
    return createHmac('sha256', this.secret).update(payload).digest('hex');
  }

  private info(key: string, meta: MetaFile): ObjectInfo {
    return {
      key,
      size: meta.size,
      contentType: meta.contentType,
      metadata: { ...meta.metadata },
      lastModified: new Date(meta.modified),
      etag: meta.sha256,
    };
  }

  private locate(key: string): { dir: string; base: string } {
    const segments = checkKey(key).split('/');
    const dir = this.inside(path.join(this.root, ...segments.slice(0, -1).map(esc)));
    return { dir, base: esc(segments[segments.length - 1]) };
  }

  // checkKey already refuses every escape; this is the backstop should those rules ever loosen.
  private inside(dir: string): string {
    const resolved = path.resolve(dir);
    if (resolved !== this.root && !resolved.startsWith(this.root + path.sep)) {
      throw new StorageKeyError(dir, 'resolves outside the storage root');
    }
    return resolved;
  }

  /**
   * Claims the key for one write-once put: exclusive creation of the claim file, so a second
   * put (in this process or another sharing the root) sees it and is refused while the first
   * runs. The claim is touched while the put runs; one left by a process that died is taken
   * over once stale. Two takers of one stale claim may both proceed; the exclusive commit in
   * write() still lets only one of them store an object.
   */
  private async claim(key: string, dir: string, base: string): Promise<{ release(): Promise<void> }> {
    const file = path.join(dir, base + CLAIM);
    const token = randomBytes(12).toString('hex');
    for (let attempt = 0; ; attempt++) {
      let fh: FileHandle;
      try {
        fh = await openCreatingDir(file, dir);
      } catch (err) {
        if (!isCode(err, 'EEXIST')) throw err;
        if (attempt >= 2 || (await this.liveClaim(file))) throw new StorageUploadInProgressError(key);
        await unlinkQuiet(file);
        continue;
      }
      const held = fh;
      try {
        await held.writeFile(token);
      } catch (err) {
        await held.close();
        await unlinkQuiet(file);
        throw err;
      }
      const timer = setInterval(() => {
        const now = new Date();
        held.utimes(now, now).catch(() => {});
      }, this.claimRefreshMs);
      timer.unref();
      return {
        release: async () => {
          clearInterval(timer);
          await held.close().catch(() => {});
          // Only our own: after a stale takeover the file may be another put's claim.
          if ((await readFile(file, 'utf8').catch(() => null)) === token) await unlinkQuiet(file);
        },
      };
    }
  }

  private async liveClaim(file: string): Promise<boolean> {
    try {
      return Date.now() - (await stat(file)).mtimeMs < this.claimStaleMs;
    } catch (err) {
      if (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR')) return false;
      throw err;
    }
  }

  private async readMeta(metaPath: string): Promise<MetaFile | null> {
    try {
      return JSON.parse(await readFile(metaPath, 'utf8')) as MetaFile;
    } catch (err) {
      if (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR')) return null;
      throw err;
    }
  }

  // Depth-first in byte order of "name" (objects) and "name/" (directories): that is exactly the
  // ascending order of the full keys, which S3 and Azure listings also use.
  private async *walk(dir: string, keyPrefix: string, prefix: string): AsyncGenerator<ListEntry> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if (isCode(err, 'ENOENT') || isCode(err, 'ENOTDIR')) return;
      throw err;
    }
    const items: { sortKey: Buffer; key: string; dir: boolean; file: string }[] = [];
    for (const entry of entries) {
      // Symbolic links are never followed: nothing here creates one, so one is foreign.
      if (entry.isDirectory()) {
        const key = keyPrefix + unesc(entry.name) + '/';
        if (key.startsWith(prefix) || prefix.startsWith(key)) {
          items.push({ sortKey: Buffer.from(key), key, dir: true, file: entry.name });
        }
      } else if (entry.isFile() && entry.name.endsWith(META)) {
        const key = keyPrefix + unesc(entry.name.slice(0, -META.length));
        if (key.startsWith(prefix)) items.push({ sortKey: Buffer.from(key), key, dir: false, file: entry.name });
      }
    }
    items.sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));
    for (const item of items) {
      if (item.dir) {
        yield* this.walk(path.join(dir, item.file), item.key, prefix);
      } else {
        const meta = await this.readMeta(path.join(dir, item.file));
        // Deleted between readdir and now.
        if (meta) yield { key: item.key, size: meta.size, lastModified: new Date(meta.modified), etag: meta.sha256 };
      }
    }
  }

  private async pruneEmptyDirs(dir: string): Promise<void> {
    let current = dir;
    while (current.startsWith(this.root + path.sep)) {
      try {
        await rmdir(current);
      } catch {
        return; // not empty (or already gone): stop climbing
      }
      current = path.dirname(current);
    }
  }
}

export function encodeKeyPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

async function openCreatingDir(file: string, dir: string): Promise<FileHandle> {
  // A delete pruning empty directories can remove `dir` between mkdir and open; try again then.
  for (let attempt = 0; ; attempt++) {
    await mkdir(dir, { recursive: true });
    try {
      return await open(file, 'wx', 0o600);
    } catch (err) {
      if (!isCode(err, 'ENOENT') || attempt >= 4) throw err;
    }
  }
}

/** A new file with `content`, fsynced before it is closed (so a rename or link of it is durable). */
async function writeSynced(temp: string, content: string): Promise<void> {
  const fh = await open(temp, 'wx', 0o600);
  try {
    await writeFile(fh, content);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeFileAtomic(target: string, temp: string, content: string): Promise<void> {
  await writeSynced(temp, content);
  try {
    await rename(temp, target);
  } catch (err) {
    await unlinkQuiet(temp);
    throw err;
  }
}

/**
 * Like writeFileAtomic, but never replaces `target`: link(), unlike rename(), fails when the
 * target exists, so of two commits racing for one key exactly one wins. False: it existed.
 */
async function writeFileExclusive(target: string, temp: string, content: string): Promise<boolean> {
  await writeSynced(temp, content);
  try {
    await link(temp, target);
    return true;
  } catch (err) {
    if (isCode(err, 'EEXIST')) return false;
    throw err;
  } finally {
    await unlinkQuiet(temp);
  }
}

async function unlinkQuiet(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if (!isCode(err, 'ENOENT')) throw err;
  }
}

function isCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}
