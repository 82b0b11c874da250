// Datasets on the node's disk, keyed by the archive's sha256 (the API records it at upload, so a
// dataset version maps to exactly one folder on every node). Downloads are verified while they
// stream, concurrent jobs wanting the same dataset share one download, archives are extracted
// only if every entry stays inside the target (no "..", absolute paths or links), and the least
// recently used datasets beyond `keep` are deleted, never one a running job uses.
import { isIgnoredEntry } from '../src/modules/datasets/validation/paths.js';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import yauzl from 'yauzl';
import type { Logger } from '../src/lib/log.js';
import { MAX_EXTRACT_RATIO } from './config.js';
import { downloadVerified, IntegrityError } from './transfers.js';

/** An archive entry that would land outside the dataset folder, or is not a plain file or folder. */
export class UnsafeArchiveError extends Error {
  constructor(
    public readonly entry: string,
    public readonly reason: string,
  ) {
    super(`dataset archive refused: entry ${JSON.stringify(entry)} ${reason}`);
    this.name = 'UnsafeArchiveError';
  }
}
export class ArchiveFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArchiveFormatError';
  }
}

/**
 * The archive in storage is not the one the API validated: never trained on, never retried into
 * use. Names the version and both hashes, so the operator can tell which upload was replaced.
 */
export class DatasetIntegrityError extends IntegrityError {
  constructor(
    public readonly versionId: string | null,
    expected: string,
    actual: string,
  ) {
    super(expected, actual, `dataset version ${versionId ?? '(unknown)'}`);
    this.message =
      `dataset version ${versionId ?? '(unknown)'}: the archive in storage is not the one validated at finalize ` +
      `(recorded sha256 ${expected}, downloaded ${actual}); upload it again as a new version`;
    this.name = 'DatasetIntegrityError';
  }
}

export interface DatasetSource {
  /** The dataset version's id, for errors and logs. */
  versionId?: string;
  /** The sha256 the API recorded when it validated the archive: the only bytes ever used. */
  sha256: string;
  /** Presigned GET URL (absolute). */
  url: string;
  /** Headers the presigned GET must carry. */
  headers?: Record<string, string>;
  format: string;
  filename?: string;
}

export interface DatasetLease {
  sha256: string;
  /** The dataset root: the archive root, or its single top-level folder. */
  root: string;
  /** The job is done with it; only released datasets can be evicted. */
  release(): void;
}

interface Meta {
  sha256: string;
  root: string;
  format: string;
  filename: string | null;
  lastUsed: number;
  bytes: number;
}

interface Inflight {
  promise: Promise<Meta>;
  controller: AbortController;
  waiters: number;
}

export interface DatasetCacheOptions {
  dir: string;
  keep: number;
  logger: Logger;
  maxExtractRatio?: number;
}

export class DatasetCache {
  private readonly refs = new Map<string, number>();
  private readonly inflight = new Map<string, Inflight>();
  /** Downloads actually started (tests check that concurrent requests share one). */
  downloads = 0;

  constructor(private readonly opts: DatasetCacheOptions) {
    mkdirSync(opts.dir, { recursive: true });
    // Leftovers of a node killed mid-download or mid-extraction.
    rmSync(path.join(opts.dir, '.partial'), { recursive: true, force: true });
  }

  async acquire(source: DatasetSource, signal?: AbortSignal): Promise<DatasetLease> {
    const { sha256 } = source;
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`not a sha256: ${sha256}`);
    this.refs.set(sha256, (this.refs.get(sha256) ?? 0) + 1);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      const n = (this.refs.get(sha256) ?? 1) - 1;
      if (n <= 0) this.refs.delete(sha256);
      else this.refs.set(sha256, n);
      // Over the budget only because this one was in use: it may go now.
      this.evict();
    };
    try {
      let meta = this.readMeta(sha256);
      // A folder whose record is of other bytes (interrupted or tampered) is not the recorded archive.
      if (meta && meta.sha256 !== sha256) {
        this.opts.logger.warn('dataset cache entry does not match its recorded sha256; downloading again', {
          sha256,
          recorded: meta.sha256,
          versionId: source.versionId,
        });
        rmSync(this.datasetDir(sha256), { recursive: true, force: true });
        meta = null;
      }
      if (meta) {
        this.opts.logger.debug('dataset cache hit', { sha256 });
      } else {
        meta = await this.shared(source, signal);
      }
      meta.lastUsed = Date.now();
      this.writeMeta(meta);
      this.evict();
      return { sha256, root: path.join(this.datasetDir(sha256), meta.root), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * Deletes the least recently used datasets beyond `keep`. Datasets in use count towards
   * `keep` but are never deleted.
   */
  evict(): string[] {
    const metas = this.list().sort((a, b) => b.lastUsed - a.lastUsed);
    const evicted: string[] = [];
    let kept = metas.filter((m) => this.refs.has(m.sha256)).length;
    for (const m of metas) {
      if (this.refs.has(m.sha256)) continue;
      if (kept < this.opts.keep) {
        kept++;
        continue;
      }
      rmSync(this.datasetDir(m.sha256), { recursive: true, force: true });
      evicted.push(m.sha256);
      this.opts.logger.info('dataset evicted from the cache', { sha256: m.sha256 });
    }
    return evicted;
  }

  /** The datasets on disk (complete ones only). */
  list(): Meta[] {
    const out: Meta[] = [];
    for (const name of readdirSync(this.opts.dir)) {
      if (!/^[0-9a-f]{64}$/.test(name)) continue;
      const meta = this.readMeta(name);
      if (meta) out.push(meta);
    }
    return out;
  }

  private datasetDir(sha256: string): string {
    return path.join(this.opts.dir, sha256);
  }

  private readMeta(sha256: string): Meta | null {
    const file = path.join(this.datasetDir(sha256), 'meta.json');
    if (!existsSync(file)) return null;
    try {
      return JSON.parse(readFileSync(file, 'utf8')) as Meta;
    } catch {
      return null;
    }
  }

  private writeMeta(meta: Meta): void {
    writeFileSync(path.join(this.datasetDir(meta.sha256), 'meta.json'), JSON.stringify(meta));
  }

  /**
   * One download per sha256 however many jobs ask. The download stops only when every job
   * waiting for it has given up (cancel, shutdown).
   */
  private shared(source: DatasetSource, signal?: AbortSignal): Promise<Meta> {
    let entry = this.inflight.get(source.sha256);
    if (!entry) {
      const controller = new AbortController();
      const promise = this.fetch(source, controller.signal).finally(() => this.inflight.delete(source.sha256));
      entry = { promise, controller, waiters: 0 };
      this.inflight.set(source.sha256, entry);
    }
    const current = entry;
    current.waiters++;
    return new Promise<Meta>((resolve, reject) => {
      let done = false;
      const onAbort = () => {
        if (done) return;
        done = true;
        if (--current.waiters === 0) current.controller.abort();
        reject(signal!.reason ?? new Error('aborted'));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      current.promise.then(
        (m) => {
          if (done) return;
          done = true;
          current.waiters--;
          signal?.removeEventListener('abort', onAbort);
          resolve(m);
        },
        (e) => {
          if (done) return;
          done = true;
          current.waiters--;
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  private async fetch(source: DatasetSource, signal: AbortSignal): Promise<Meta> {
    this.downloads++;
    const partialDir = path.join(this.opts.dir, '.partial');
    const work = path.join(partialDir, `${source.sha256}-${randomBytes(4).toString('hex')}`);
    const archive = path.join(work, 'archive');
    const dataDir = path.join(work, 'data');
    await mkdir(dataDir, { recursive: true });
    const t0 = Date.now();
    try {
      const { sizeBytes } = await downloadVerified(source.url, archive, source.sha256, {
        signal,
        headers: source.headers,
        what: `dataset version ${source.versionId ?? '(unknown)'} (${source.filename ?? source.sha256.slice(0, 12)})`,
      }).catch((err: unknown) => {
        if (err instanceof IntegrityError) throw new DatasetIntegrityError(source.versionId ?? null, err.expected, err.actual);
        throw err;
      });
      const limit = Math.max(sizeBytes * (this.opts.maxExtractRatio ?? MAX_EXTRACT_RATIO), 64 * 1024 * 1024);
      const kind = await sniffArchive(archive);
      const bytes = kind === 'zip' ? await extractZip(archive, dataDir, limit) : await extractTar(archive, dataDir, limit);
      await rm(archive, { force: true });
      const root = datasetRoot(dataDir);
      const meta: Meta = {
        sha256: source.sha256,
        root: path.relative(work, root) || '.',
        format: source.format,
        filename: source.filename ?? null,
        lastUsed: Date.now(),
        bytes,
      };
      writeFileSync(path.join(work, 'meta.json'), JSON.stringify(meta));
      const final = this.datasetDir(source.sha256);
      await rm(final, { recursive: true, force: true });
      await rename(work, final);
      this.opts.logger.info('dataset downloaded and extracted', {
        sha256: source.sha256,
        archiveBytes: sizeBytes,
        extractedBytes: bytes,
        seconds: Math.round((Date.now() - t0) / 100) / 10,
      });
      return meta;
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw err;
    }
  }
}

/** Zip tools often wrap everything in one folder; the trainer wants the folder with data.yaml. */
function datasetRoot(dataDir: string): string {
  const entries = readdirSync(dataDir, { withFileTypes: true });
  if (entries.length === 1 && entries[0].isDirectory()) return path.join(dataDir, entries[0].name);
  return dataDir;
}

async function sniffArchive(file: string): Promise<'zip' | 'tar'> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(512);
    const { bytesRead } = await fh.read(head, 0, 512, 0);
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0x04034b50) return 'zip';
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0x06054b50) return 'zip'; // empty zip
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'tar'; // gzip: tar.gz
    if (bytesRead >= 262 && head.toString('latin1', 257, 262) === 'ustar') return 'tar';
    throw new ArchiveFormatError('dataset archive is neither zip nor tar(.gz)');
  } finally {
    await fh.close();
  }
}

/**
 * Metadata some archivers add (macOS AppleDouble `._*`, `__MACOSX`, `.DS_Store`, Thumbs.db);
 * never part of a dataset. The same rule as the API's validator, so what it accepted is exactly
 * what the trainer sees (a `._img.jpg` would otherwise be read as a corrupt image).
 */
function isJunk(name: string): boolean {
  return isIgnoredEntry(name.replace(/\/+$/, ''));
}

/** The entry's path inside `dest`, or a refusal. */
function safeTarget(dest: string, name: string): string {
  if (name.includes('\0')) throw new UnsafeArchiveError(name, 'has a NUL byte');
  if (name.includes('\\')) throw new UnsafeArchiveError(name, 'uses backslashes');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) throw new UnsafeArchiveError(name, 'is an absolute path');
  if (name.split('/').some((p) => p === '..')) throw new UnsafeArchiveError(name, 'climbs out with ".."');
  const target = path.resolve(dest, name);
  if (target !== dest && !target.startsWith(dest + path.sep)) throw new UnsafeArchiveError(name, 'lands outside the dataset folder');
  return target;
}

function extractZip(archive: string, dest: string, limit: number): Promise<number> {
  return new Promise((resolve, reject) => {
    // decodeStrings false: yauzl's own name check would reject with a vaguer message; ours
    // names the entry and the rule.
    yauzl.open(archive, { lazyEntries: true, decodeStrings: false, validateEntrySizes: true }, (err, zip) => {
      if (err || !zip) return reject(new ArchiveFormatError(`dataset zip unreadable: ${err?.message}`));
      let total = 0;
      const fail = (e: unknown) => {
        zip.close();
        reject(e);
      };
      zip.on('error', (e) => fail(new ArchiveFormatError(`dataset zip unreadable: ${(e as Error).message}`)));
      zip.on('end', () => resolve(total));
      zip.on('entry', (entry: yauzl.Entry) => {
        void (async () => {
          const raw = entry.fileName as unknown as Buffer;
          // Bit 11: UTF-8 names; otherwise CP437, which for dataset file names is ASCII in practice.
          const name = raw.toString((entry.generalPurposeBitFlag & 0x800) !== 0 ? 'utf8' : 'latin1');
          const target = safeTarget(dest, name);
          const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
          if (mode === 0o120000) throw new UnsafeArchiveError(name, 'is a symbolic link');
          if (mode !== 0 && mode !== 0o100000 && mode !== 0o040000) throw new UnsafeArchiveError(name, 'is not a plain file or folder');
          if (isJunk(name)) return zip.readEntry();
          if (name.endsWith('/')) {
            await mkdir(target, { recursive: true });
            return zip.readEntry();
          }
          total += entry.uncompressedSize;
          if (total > limit) throw new UnsafeArchiveError(name, `takes the extracted size over ${limit} bytes (zip bomb?)`);
          await mkdir(path.dirname(target), { recursive: true });
          const stream = await new Promise<NodeJS.ReadableStream>((res, rej) =>
            zip.openReadStream(entry, (e, s) => (e || !s ? rej(new ArchiveFormatError(`dataset zip entry ${name}: ${e?.message}`)) : res(s))),
          );
          // wx: an entry twice (or a file where a folder was) is refused rather than overwritten.
          await pipeline(stream, createWriteStream(target, { flags: 'wx' }));
          zip.readEntry();
        })().catch(fail);
      });
      zip.readEntry();
    });
  });
}

async function extractTar(archive: string, dest: string, limit: number): Promise<number> {
  let problem: UnsafeArchiveError | null = null;
  let total = 0;
  const plain = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory']);
  await tar.x({
    file: archive,
    cwd: dest,
    strict: true,
    preserveOwner: false,
    // Permissions from the archive are not trusted: files readable, folders traversable.
    dmode: 0o755,
    fmode: 0o644,
    filter: (p, entry) => {
      if (problem) return false;
      const e = entry as tar.ReadEntry;
      const name = p.replace(/^\.\/+/, '');
      try {
        if (name === '' || name === '.') return false;
        safeTarget(dest, name.replace(/\/+$/, ''));
        if (!plain.has(e.type)) throw new UnsafeArchiveError(name, `is a ${e.type === 'SymbolicLink' ? 'symbolic link' : e.type === 'Link' ? 'hard link' : e.type}, not a plain file or folder`);
        if (isJunk(name)) return false;
        total += e.size ?? 0;
        if (total > limit) throw new UnsafeArchiveError(name, `takes the extracted size over ${limit} bytes (zip bomb?)`);
        return true;
      } catch (err) {
        problem = err as UnsafeArchiveError;
        return false;
      }
    },
  }).catch((err: Error) => {
    if (problem) return;
    throw new ArchiveFormatError(`dataset tar unreadable: ${err.message}`);
  });
  if (problem) throw problem;
  return total;
}

