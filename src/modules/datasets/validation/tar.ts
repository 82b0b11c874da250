// Tar (optionally gzipped), read strictly front to back: nothing is buffered beyond a header
// block, and the gzip inflate runs on libuv's thread pool while this thread parses and hashes.
import type { Hash } from 'node:crypto';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { EntryConsumer, EntryGate, EntryInfo, EntryKind } from './entries.js';
import { StopExpansion, type ExpansionGuard } from './limits.js';
import type { ProblemList } from './problems.js';

const BLOCK = 512;
// PAX and GNU long-name headers are read whole; real ones are a few hundred bytes.
const MAX_META_BYTES = 1024 * 1024;
// zlib output chunk: large enough that per-chunk overhead vanishes, small enough to stay in cache.
const INFLATE_CHUNK = 2 * 1024 * 1024;

const enum T {
  Header,
  Content,
  Meta,
  Padding,
  Done,
}

interface Pending {
  path?: string;
  linkpath?: string;
  size?: number;
}

/** Synchronous tar parser fed with uncompressed bytes. */
export class TarParser {
  private state = T.Header;
  private readonly block = Buffer.alloc(BLOCK);
  private blockLen = 0;
  private left = 0;
  private padding = 0;
  private entryName = '';
  private entrySize = 0;
  private entryDone = 0;
  private consumer: EntryConsumer | null = null;
  private counting = false;
  private metaType = '';
  private meta: Buffer[] = [];
  private pending: Pending = {};
  private headerOffset = 0;
  private offset = 0;
  entries = 0;
  sawAnyHeader = false;
  /** The archive could not be read to its end (truncated, corrupt header): its listing is incomplete. */
  broken = false;

  constructor(
    private readonly gate: EntryGate,
    private readonly guard: ExpansionGuard,
    private readonly problems: ProblemList,
  ) {}

  get done(): boolean {
    return this.state === T.Done;
  }

  push(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n && this.state !== T.Done) {
      switch (this.state) {
        case T.Header: {
          const c = Math.min(BLOCK - this.blockLen, n - i);
          buf.copy(this.block, this.blockLen, i, i + c);
          this.blockLen += c;
          i += c;
          if (this.blockLen === BLOCK) {
            this.headerOffset = this.offset + i - BLOCK;
            this.blockLen = 0;
            this.header();
          }
          break;
        }
        case T.Content: {
          const c = Math.min(this.left, n - i);
          if (c > 0) {
            this.entryDone += c;
            if (this.counting) this.guard.addEntryBytes(this.entryName, this.entryDone, c);
            this.consumer?.write(buf.subarray(i, i + c));
            i += c;
            this.left -= c;
          }
          if (this.left === 0) this.finishContent();
          break;
        }
        case T.Meta: {
          const c = Math.min(this.left, n - i);
          this.meta.push(Buffer.from(buf.subarray(i, i + c)));
          i += c;
          this.left -= c;
          if (this.left === 0) this.finishMeta();
          break;
        }
        case T.Padding: {
          const c = Math.min(this.padding, n - i);
          i += c;
          this.padding -= c;
          if (this.padding === 0) this.state = T.Header;
          break;
        }
      }
    }
    this.offset += n;
  }

  /** The uncompressed stream ended. */
  end(): void {
    if (this.state === T.Done) return;
    if (this.state === T.Header && this.blockLen === 0) {
      // No end-of-archive blocks: GNU tar and Python accept that.
      return;
    }
    this.broken = true;
    if (this.state === T.Content) {
      this.problems.archive(`the archive is truncated: "${this.entryName}" ends after ${this.entryDone} of ${this.entrySize} bytes`);
    } else {
      this.problems.archive('the archive is truncated (it ends inside a tar header)');
    }
  }

  private header(): void {
    const b = this.block;
    if (isZeroBlock(b)) {
      // Python's tarfile and GNU tar stop at the first zero block; whatever follows is never extracted.
      this.state = T.Done;
      return;
    }
    if (!checksumOk(b)) {
      this.broken = true;
      this.problems.archive(
        `invalid tar header at byte ${this.headerOffset} (checksum mismatch)${this.sawAnyHeader ? '; the rest of the archive cannot be read' : ': not a tar archive'}`,
      );
      this.state = T.Done;
      return;
    }
    this.sawAnyHeader = true;
    const type = b[156] === 0 ? '\0' : String.fromCharCode(b[156]);
    let size = parseNumeric(b, 124, 12);
    if (size === null || size < 0) {
      this.broken = true;
      this.problems.archive(`invalid size field in the tar header at byte ${this.headerOffset}; the rest of the archive cannot be read`);
      this.state = T.Done;
      return;
    }
    if (type === 'x' || type === 'g' || type === 'L' || type === 'K') {
      if (size > MAX_META_BYTES) {
        throw new StopExpansion(nameOf(b), `tar extension header of ${size} bytes (more than ${MAX_META_BYTES}); validation stopped`);
      }
      this.metaType = type;
      this.meta = [];
      this.left = size;
      this.padding = pad(size);
      this.state = T.Meta;
      if (size === 0) this.finishMeta();
      return;
    }
    const p = this.pending;
    this.pending = {};
    let name = p.path ?? nameOf(b);
    if (p.size !== undefined) size = p.size;
    const linkTarget = p.linkpath ?? cstring(b, 157, 100);
    let kind: EntryKind;
    let detail: string | undefined;
    switch (type) {
      case '0':
      case '7':
        kind = 'file';
        break;
      case '\0':
        // Pre-POSIX tar marks folders only by the trailing slash (Python's tarfile does the same).
        kind = name.endsWith('/') ? 'dir' : 'file';
        break;
      case '5':
        kind = 'dir';
        break;
      case '1':
        kind = 'hardlink';
        break;
      case '2':
        kind = 'symlink';
        break;
      case '3':
      case '4':
        kind = 'device';
        break;
      case '6':
        kind = 'fifo';
        break;
      case 'S':
        kind = 'unsupported';
        detail = 'GNU sparse files are not supported';
        break;
      default:
        kind = 'unsupported';
        detail = `unsupported tar entry type "${type.replace(/[^\x20-\x7e]/g, '?')}"`;
    }
    if (kind === 'dir' && !name.endsWith('/')) name += '/';
    this.entries++;
    const info: EntryInfo = { rawName: name, kind, size, linkTarget: kind === 'symlink' || kind === 'hardlink' ? linkTarget : undefined, detail };
    if (kind === 'file') this.guard.checkDeclaredEntrySize(name, size);
    const gate = this.gate.open(info);
    this.entryName = name;
    this.entrySize = size;
    this.entryDone = 0;
    // Folders, links and devices carry no content in tar (a hard link's size is 0); skip whatever is declared.
    this.counting = kind === 'file' && !gate.refused;
    this.consumer = gate.refused ? null : gate.consumer;
    this.left = size;
    this.padding = pad(size);
    this.state = T.Content;
    if (size === 0) this.finishContent();
  }

  private finishContent(): void {
    const c = this.consumer;
    this.consumer = null;
    c?.end();
    this.state = this.padding > 0 ? T.Padding : T.Header;
  }

  private finishMeta(): void {
    const data = Buffer.concat(this.meta);
    this.meta = [];
    if (this.metaType === 'L') this.pending.path = data.toString('utf8').replace(/\0.*$/s, '');
    else if (this.metaType === 'K') this.pending.linkpath = data.toString('utf8').replace(/\0.*$/s, '');
    else if (this.metaType === 'x') Object.assign(this.pending, parsePax(data));
    // Global PAX headers ('g') only carry defaults such as mtime for archives we care about.
    this.state = this.padding > 0 ? T.Padding : T.Header;
  }
}

function pad(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i += 8) if (b.readBigUInt64LE(i) !== 0n) return false;
  return true;
}

function checksumOk(b: Buffer): boolean {
  const stored = parseNumeric(b, 148, 8);
  if (stored === null) return false;
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  // Some old tars summed signed bytes; Python accepts either.
  return stored === unsigned || stored === signed;
}

/** Octal (NUL/space terminated) or GNU base-256 (high bit of the first byte set). */
function parseNumeric(b: Buffer, off: number, len: number): number | null {
  if (b[off] & 0x80) {
    if (b[off] === 0xff) return null; // negative
    let v = b[off] & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i];
    return Number.isSafeInteger(v) ? v : null;
  }
  const s = b.toString('latin1', off, off + len).replace(/\0.*$/s, '').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) return null;
  return parseInt(s, 8);
}

function cstring(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('utf8', off, end >= 0 && end < off + len ? end : off + len);
}

function nameOf(b: Buffer): string {
  const name = cstring(b, 0, 100);
  // The ustar prefix field (POSIX "ustar\0"); GNU tar uses those bytes for other fields.
  if (b.toString('latin1', 257, 263) === 'ustar\0') {
    const prefix = cstring(b, 345, 155);
    if (prefix) return `${prefix}/${name}`;
  }
  return name;
}

function parsePax(data: Buffer): Pending {
  const out: Pending = {};
  let i = 0;
  while (i < data.length) {
    const sp = data.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(data.toString('latin1', i, sp), 10);
    if (!Number.isFinite(len) || len <= 0 || i + len > data.length) break;
    const rec = data.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) {
      const key = rec.slice(0, eq);
      const value = rec.slice(eq + 1);
      if (key === 'path') out.path = value;
      else if (key === 'linkpath') out.linkpath = value;
      else if (key === 'size' && /^\d+$/.test(value)) out.size = Number(value);
    }
    i += len;
  }
  return out;
}

export interface TarWalkResult {
  sizeBytes: number;
  entries: number;
  /** Every entry was read; false after a limit, a corrupt stream or a truncated archive. */
  complete: boolean;
}

/**
 * Reads the whole input once: every byte is hashed; bytes are inflated and parsed until the
 * tar ends or expansion stops (a limit, a corrupt stream), after which they are only hashed.
 */
export async function walkTar(opts: {
  input: Readable;
  gzip: boolean;
  hash: Hash;
  parser: TarParser;
  guard: ExpansionGuard;
  problems: ProblemList;
  archiveName: string;
  signal?: AbortSignal;
}): Promise<TarWalkResult> {
  const { input, hash, parser, guard, problems, archiveName, signal } = opts;
  let size = 0;
  let stopped = false;
  let incomplete = false;
  const stopWaiters = new Set<() => void>();
  const stop = (err?: StopExpansion) => {
    if (stopped) return;
    stopped = true;
    if (err) {
      incomplete = true;
      if (err.path === archiveName) problems.archive(err.message);
      else problems.add(err.path, null, err.message);
    }
    for (const w of [...stopWaiters]) w();
  };
  // Anything else thrown while parsing is a bug, not a property of the archive: rethrown at the end.
  let failure: unknown = null;
  const guarded = (fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (err instanceof StopExpansion) stop(err);
      else {
        failure ??= err;
        stop();
      }
    }
  };

  let inflater: zlib.Gunzip | null = null;
  let inflaterDone: Promise<void> | null = null;
  if (opts.gzip) {
    const z = zlib.createGunzip({ chunkSize: INFLATE_CHUNK });
    inflater = z;
    let produced = 0;
    z.on('data', (out: Buffer) => {
      if (stopped) return;
      guarded(() => {
        produced += out.length;
        guard.checkRatio(archiveName, produced, z.bytesWritten);
        parser.push(out);
        if (parser.done) stop();
      });
    });
    inflaterDone = new Promise<void>((resolve) => {
      z.on('end', resolve);
      z.on('close', resolve);
      z.on('error', (err: Error) => {
        if (!stopped) {
          incomplete = true;
          problems.archive(`not a valid gzip stream: ${err.message}${/unexpected end/i.test(err.message) ? ' (the upload may be truncated)' : ''}`);
          stop();
        }
        resolve();
      });
    });
  }

  const waitDrain = (z: zlib.Gunzip) =>
    new Promise<void>((resolve) => {
      const done = () => {
        z.off('drain', done);
        stopWaiters.delete(done);
        resolve();
      };
      z.on('drain', done);
      stopWaiters.add(done);
    });

  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      if (signal?.aborted) {
        input.destroy();
        throw signal.reason ?? new Error('validation aborted');
      }
      hash.update(chunk);
      size += chunk.length;
      if (stopped) continue;
      if (inflater) {
        if (!inflater.write(chunk)) await waitDrain(inflater);
      } else {
        guarded(() => {
          parser.push(chunk);
          if (parser.done) stop();
        });
      }
    }
  } catch (err) {
    // The source failed (or the caller aborted): nothing can be said about the archive.
    inflater?.destroy();
    throw err;
  }
  if (size === 0) {
    inflater?.destroy();
    problems.archive('the archive is empty (0 bytes)');
    return { sizeBytes: 0, entries: 0, complete: false };
  }
  if (inflater) {
    if (!stopped) {
      inflater.end();
      await inflaterDone;
    }
    inflater.destroy();
  }
  if (failure) throw failure;
  if (!stopped) guarded(() => parser.end());
  return { sizeBytes: size, entries: parser.entries, complete: !incomplete && !parser.broken };
}
