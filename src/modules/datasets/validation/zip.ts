// Zip, read through random access: a zip's authoritative index (names, sizes, which entries
// are symlinks) is the central directory at its end, and entries written by streaming zippers
// (Go's archive/zip, Java, zip-stream) do not even carry their sizes in the local headers, so
// a front-to-back reader cannot tell where a stored entry ends. We therefore
//   1. read the end record (last <= 64 KiB) and the central directory (one ranged read),
//   2. make one sequential pass over the whole file, which hashes every byte and walks the
//      entries in offset order, inflating them off this thread (inflate-workers.ts, or zlib's
//      thread pool for small archives) while this thread hashes and reads on.
// Three reads in all, so an S3 source costs three GETs, not one per entry.
import type { Hash } from 'node:crypto';
import { isUtf8 } from 'node:buffer';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import type { EntryConsumer, EntryGate, EntryInfo, EntryKind } from './entries.js';
import { StopExpansion, type ExpansionGuard } from './limits.js';
import { InflateWorkers, type InflateResult } from './inflate-workers.js';
import { decodeCp437 } from './paths.js';
import type { ProblemList } from './problems.js';
import type { RandomAccessSource } from './types.js';

const EOCD_SIG = 0x06054b50;
const EOCD64_SIG = 0x06064b50;
const EOCD64_LOCATOR_SIG = 0x07064b50;
const CDH_SIG = 0x02014b50;
const LFH_SIG = 0x04034b50;
const MAX_COMMENT = 0xffff;

// Entries up to these sizes are inflated in one call, several at a time, so other threads
// inflate while this one hashes and parses; larger ones are streamed one by one.
const ONE_SHOT_MAX_COMPRESSED = 1024 * 1024;
const ONE_SHOT_MAX_UNCOMPRESSED = 8 * 1024 * 1024;
const MAX_IN_FLIGHT = 8;
// Below this, a thread-pool round trip costs more than inflating here (label files, data.yaml).
const INLINE_MAX_COMPRESSED = 16 * 1024;
// Worker threads pay off once there is this much to inflate; small archives (and the tests)
// use zlib's thread pool and skip the workers' start-up.
const WORKERS_MIN_BYTES = 32 * 1024 * 1024;
// Entries per message to a worker, and compressed bytes per message.
const BATCH_ENTRIES = 16;
const BATCH_BYTES = 2 * 1024 * 1024;
const MAX_IN_FLIGHT_BYTES = 48 * 1024 * 1024;

interface CdEntry {
  name: string;
  nameBytes: Buffer;
  flags: number;
  method: number;
  crc: number;
  csize: number;
  usize: number;
  offset: number;
  kind: EntryKind;
}

const METHOD_NAMES: Record<number, string> = { 1: 'shrink', 6: 'implode', 9: 'deflate64', 12: 'bzip2', 14: 'LZMA', 93: 'zstd', 95: 'xz', 98: 'PPMd' };

export async function readRange(src: RandomAccessSource, start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of src.read(start, end) as AsyncIterable<Buffer>) parts.push(chunk);
  const buf = Buffer.concat(parts);
  if (buf.length !== end - start) throw new Error(`archive source returned ${buf.length} bytes for range ${start}-${end}`);
  return buf;
}

export type InflateWorkersMode = 'auto' | 'always' | 'never';

export interface ZipWalkResult {
  entries: number;
  /** Every entry was read; false when the index was unusable or the walk stopped. */
  complete: boolean;
}

class ZipCorrupt extends Error {}

export async function walkZip(opts: {
  source: RandomAccessSource;
  /** null when the bytes were already hashed (a spooled upload). */
  hash: Hash | null;
  gate: EntryGate;
  guard: ExpansionGuard;
  problems: ProblemList;
  archiveName: string;
  signal?: AbortSignal;
  inflateWorkers?: InflateWorkersMode;
}): Promise<ZipWalkResult> {
  const { source, problems } = opts;
  let entries: CdEntry[] = [];
  let cdStart = 0;
  let stop: StopExpansion | null = null;
  let complete = true;
  try {
    const index = await readIndex(source, opts.guard);
    entries = index.entries;
    cdStart = index.cdStart;
    if (index.warning) problems.archive(index.warning);
  } catch (err) {
    complete = false;
    if (err instanceof ZipCorrupt) problems.archive(err.message);
    else if (err instanceof StopExpansion) stop = err;
    else throw err;
  }
  if (stop) record(problems, opts.archiveName, stop);
  const walker = new ByteWalker(source.read(0, source.size), opts.hash, opts.signal);
  if (entries.length && !stop) {
    try {
      await walkEntries(walker, entries, cdStart, opts);
    } catch (err) {
      complete = false;
      if (err instanceof StopExpansion) record(problems, opts.archiveName, err);
      else if (err instanceof ZipCorrupt) problems.archive(err.message);
      else {
        walker.destroy();
        throw err;
      }
    }
  }
  // The rest of the file (and all of it when the index was unusable) is only hashed.
  await walker.drain();
  return { entries: entries.length, complete };
}

function record(problems: ProblemList, archiveName: string, err: StopExpansion): void {
  if (err.path === archiveName || err.path === '') problems.archive(err.message);
  else problems.add(err.path, null, err.message);
}

// --- the index ------------------------------------------------------------------------------------

async function readIndex(src: RandomAccessSource, guard: ExpansionGuard) {
  const size = src.size;
  if (size === 0) throw new ZipCorrupt('the archive is empty (0 bytes)');
  const tailStart = Math.max(0, size - (22 + MAX_COMMENT));
  const tail = await readRange(src, tailStart, size);
  let at = -1;
  // The last record whose comment reaches exactly to the end; failing that, the last one that fits.
  let loose = -1;
  for (let p = tail.length - 22; p >= 0; p--) {
    if (tail.readUInt32LE(p) !== EOCD_SIG) continue;
    const commentLen = tail.readUInt16LE(p + 20);
    if (p + 22 + commentLen === tail.length) {
      at = p;
      break;
    }
    if (loose < 0 && p + 22 + commentLen <= tail.length) loose = p;
  }
  if (at < 0) at = loose;
  if (at < 0) {
    const head = tail.subarray(0, Math.min(4, tail.length));
    const looks =
      tailStart === 0 && head[0] === 0x1f && head[1] === 0x8b
        ? ' (it starts like a gzip file: name it .tar.gz)'
        : tailStart === 0 && tail.length >= 262 && tail.toString('latin1', 257, 262) === 'ustar'
          ? ' (it looks like a tar file: name it .tar)'
          : '';
    throw new ZipCorrupt(`not a zip file: no end of central directory record${looks}`);
  }
  const eocdPos = tailStart + at;
  const e = tail.subarray(at);
  const disk = e.readUInt16LE(4);
  const cdDisk = e.readUInt16LE(6);
  let count = e.readUInt16LE(10);
  let cdSize = e.readUInt32LE(12);
  let cdOffset = e.readUInt32LE(16);
  let recordPos = eocdPos;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    // Zip64: the locator sits just before the end record and points at the zip64 end record.
    if (eocdPos < 20) throw new ZipCorrupt('corrupt zip: zip64 end record locator missing');
    const loc = await readRange(src, eocdPos - 20, eocdPos);
    if (loc.readUInt32LE(0) !== EOCD64_LOCATOR_SIG) throw new ZipCorrupt('corrupt zip: zip64 end record locator missing');
    const rec64Pos = Number(loc.readBigUInt64LE(8));
    if (rec64Pos + 56 > eocdPos) throw new ZipCorrupt('corrupt zip: zip64 end record out of range');
    const rec = await readRange(src, rec64Pos, rec64Pos + 56);
    if (rec.readUInt32LE(0) !== EOCD64_SIG) throw new ZipCorrupt('corrupt zip: bad zip64 end record');
    count = safe(rec.readBigUInt64LE(32));
    cdSize = safe(rec.readBigUInt64LE(40));
    cdOffset = safe(rec.readBigUInt64LE(48));
    recordPos = rec64Pos;
  } else if (disk !== 0 || cdDisk !== 0) {
    throw new ZipCorrupt('multi-part (spanned) zip archives are not supported');
  }
  if (count > guard.limits.maxEntries) {
    throw new StopExpansion('', `the archive lists ${count} entries, more than the ${guard.limits.maxEntries} allowed; validation stopped`);
  }
  // Data prepended to the zip (self-extractors) shifts every offset; Python's zipfile corrects the same way.
  const concat = recordPos - cdSize - cdOffset;
  if (concat < 0) throw new ZipCorrupt('corrupt zip: the central directory does not fit before its end record');
  const cdStart = cdOffset + concat;
  const entries: CdEntry[] = [];
  let warning: string | null = null;
  if (cdSize > 0) {
    let carry: Buffer = Buffer.alloc(0);
    for await (const chunk of src.read(cdStart, cdStart + cdSize) as AsyncIterable<Buffer>) {
      let buf = carry.length ? Buffer.concat([carry, chunk]) : chunk;
      let p = 0;
      while (p + 46 <= buf.length) {
        if (buf.readUInt32LE(p) !== CDH_SIG) throw new ZipCorrupt(`corrupt zip: bad central directory record at byte ${cdStart + (entries.length ? p : 0)}`);
        const nameLen = buf.readUInt16LE(p + 28);
        const extraLen = buf.readUInt16LE(p + 30);
        const commentLen = buf.readUInt16LE(p + 32);
        const total = 46 + nameLen + extraLen + commentLen;
        if (p + total > buf.length) break;
        entries.push(parseCdRecord(buf.subarray(p, p + total), concat));
        if (entries.length > guard.limits.maxEntries) {
          throw new StopExpansion('', `the archive has more than ${guard.limits.maxEntries} entries; validation stopped`);
        }
        p += total;
      }
      carry = Buffer.from(buf.subarray(p));
      buf = carry;
    }
    if (carry.length) throw new ZipCorrupt('corrupt zip: truncated central directory');
  }
  if (entries.length !== count) {
    warning = `the central directory holds ${entries.length} entries but its end record says ${count}`;
  }
  let declared = 0;
  for (const entry of entries) declared += entry.usize;
  guard.checkDeclaredTotal(declared);
  return { entries, cdStart, warning };
}

function safe(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipCorrupt('corrupt zip: 64-bit field out of range');
  return Number(v);
}

function parseCdRecord(r: Buffer, concat: number): CdEntry {
  const madeBy = r.readUInt16LE(4);
  const flags = r.readUInt16LE(8);
  const method = r.readUInt16LE(10);
  const crc = r.readUInt32LE(16);
  let csize = r.readUInt32LE(20);
  let usize = r.readUInt32LE(24);
  const nameLen = r.readUInt16LE(28);
  const extraLen = r.readUInt16LE(30);
  const external = r.readUInt32LE(38);
  let offset = r.readUInt32LE(42);
  const nameBytes = Buffer.from(r.subarray(46, 46 + nameLen));
  const extra = r.subarray(46 + nameLen, 46 + nameLen + extraLen);
  // Zip64 extended information: only the fields whose 32-bit slots are saturated, in this order.
  for (let p = 0; p + 4 <= extra.length; ) {
    const id = extra.readUInt16LE(p);
    const len = extra.readUInt16LE(p + 2);
    if (id === 0x0001) {
      let q = p + 4;
      const end = Math.min(q + len, extra.length);
      if (usize === 0xffffffff && q + 8 <= end) {
        usize = safe(extra.readBigUInt64LE(q));
        q += 8;
      }
      if (csize === 0xffffffff && q + 8 <= end) {
        csize = safe(extra.readBigUInt64LE(q));
        q += 8;
      }
      if (offset === 0xffffffff && q + 8 <= end) offset = safe(extra.readBigUInt64LE(q));
    }
    p += 4 + len;
  }
  // Bit 11: UTF-8 names; otherwise code page 437, as Python's zipfile decodes them.
  const name = flags & 0x800 ? (isUtf8(nameBytes) ? nameBytes.toString('utf8') : decodeCp437(nameBytes)) : decodeCp437(nameBytes);
  let kind: EntryKind = name.endsWith('/') ? 'dir' : 'file';
  // Unix permissions in the high half of the external attributes (when made on Unix, host 3).
  if (madeBy >> 8 === 3) {
    const fmt = (external >>> 16) & 0o170000;
    if (fmt === 0o120000) kind = 'symlink';
    else if (fmt === 0o040000) kind = 'dir';
    else if (fmt === 0o020000 || fmt === 0o060000) kind = 'device';
    else if (fmt === 0o010000) kind = 'fifo';
    else if (fmt === 0o140000) kind = 'socket';
  }
  return { name, nameBytes, flags, method, crc, csize, usize, offset: offset + concat, kind };
}

// --- the pass over the entries ---------------------------------------------------------------------

async function walkEntries(
  walker: ByteWalker,
  entries: CdEntry[],
  cdStart: number,
  opts: { gate: EntryGate; guard: ExpansionGuard; problems: ProblemList; archiveName: string; inflateWorkers?: InflateWorkersMode },
): Promise<void> {
  const { gate, guard, problems } = opts;
  const order = entries.map((_, i) => i).sort((a, b) => entries[a].offset - entries[b].offset || a - b);
  const inflight = new InflightWindow();
  let batchable = 0;
  for (const e of entries) if (e.method === 8 && isBatchable(e)) batchable += e.csize;
  const useWorkers = opts.inflateWorkers === 'always' ? batchable > 0 : opts.inflateWorkers !== 'never' && batchable >= WORKERS_MIN_BYTES;
  const workers = useWorkers ? startWorkers() : null;
  let batch: { compressed: Buffer; entry: CdEntry; check: EntryCheck }[] = [];
  let batchBytes = 0;
  const flush = async () => {
    if (!batch.length || !workers) return;
    const items = batch;
    batch = [];
    batchBytes = 0;
    const bytes = items.reduce((s, it) => s + it.compressed.length + it.entry.usize, 0);
    await inflight.add(
      bytes,
      () => workers.run(items.map((it) => ({ compressed: it.compressed, usize: it.entry.usize }))).then((results) => {
        results.forEach((r, k) => applyResult(r, items[k].entry, items[k].check));
      }),
      // Two batches per worker keep every worker busy while the next batch is read.
      workers.size * 2,
    );
  };
  try {
    for (const idx of order) {
      const entry = entries[idx];
      inflight.throwIfFailed();
      if (entry.offset < walker.pos) {
        // Entries whose data overlap are how "better zip bombs" reach 10^6:1 and more.
        throw new StopExpansion(entry.name, 'entry overlaps the previous entry (a zip-bomb construction); validation stopped');
      }
      if (entry.offset + 30 > cdStart) throw new ZipCorrupt(`corrupt zip: entry "${entry.name}" starts inside the central directory`);
      if (entry.kind === 'file') guard.checkDeclaredEntrySize(entry.name, entry.usize);
      const info: EntryInfo = { rawName: entry.name, kind: entry.kind, size: entry.usize };
      if (entry.kind === 'symlink') {
        // A zip symlink's target is its content; read it (it is tiny) so the problem can name it.
        info.linkTarget = entry.method === 0 && entry.csize <= 4096 ? await peekTarget(walker, entry) : undefined;
      }
      const gated = gate.open(info);
      if (gated.refused || entry.kind !== 'file') continue;
      await walker.skipTo(entry.offset);
      const lfh = await walker.read(30);
      if (lfh.readUInt32LE(0) !== LFH_SIG) {
        problems.add(entry.name, null, 'corrupt zip: no local header where the central directory points');
        continue;
      }
      const nameLen = lfh.readUInt16LE(26);
      const extraLen = lfh.readUInt16LE(28);
      const localName = await walker.read(nameLen);
      await walker.skip(extraLen);
      if (!localName.equals(entry.nameBytes)) {
        // Two names for one entry: tools disagree about which is real, so the validated tree could differ from the extracted one.
        problems.add(entry.name, null, `the local header names this entry "${decodeCp437(localName)}"; the two names must match`);
        continue;
      }
      if (entry.flags & 0x1) {
        problems.add(entry.name, null, 'encrypted entries are not supported');
        continue;
      }
      if (walker.pos + entry.csize > cdStart) throw new ZipCorrupt(`corrupt zip: the data of "${entry.name}" runs into the central directory`);
      if (entry.method !== 0 && entry.method !== 8) {
        const m = METHOD_NAMES[entry.method] ?? `method ${entry.method}`;
        problems.add(entry.name, null, `compressed with ${m}, which is not supported; use deflate (the default) or store`);
        continue;
      }
      const check = new EntryCheck(entry, gated.consumer, guard, problems);
      if (entry.method === 0) {
        await walker.forEach(entry.csize, (slice) => check.output(slice));
        check.finish();
      } else if (entry.csize <= INLINE_MAX_COMPRESSED && entry.usize <= ONE_SHOT_MAX_UNCOMPRESSED) {
        inflateInline(await walker.read(entry.csize), entry, check);
      } else if (isBatchable(entry) && workers) {
        // Copied now: the batch outlives the chunk this slice points into.
        batch.push({ compressed: await walker.read(entry.csize), entry, check });
        batchBytes += entry.csize;
        if (batch.length >= BATCH_ENTRIES || batchBytes >= BATCH_BYTES) await flush();
      } else if (isBatchable(entry)) {
        const compressed = await walker.read(entry.csize);
        await inflight.add(compressed.length + entry.usize, () => inflateOneShot(compressed, entry, check));
      } else {
        await inflateStreaming(walker, entry, check);
      }
    }
    await flush();
    await inflight.settle();
  } finally {
    inflight.abandon();
    await workers?.close();
  }
  inflight.throwIfFailed();
}

function isBatchable(e: CdEntry): boolean {
  return e.csize > INLINE_MAX_COMPRESSED && e.csize <= ONE_SHOT_MAX_COMPRESSED && e.usize <= ONE_SHOT_MAX_UNCOMPRESSED;
}

function startWorkers(): InflateWorkers | null {
  try {
    return InflateWorkers.start();
  } catch {
    // Worker threads unavailable (restricted runtime): zlib's thread pool does the same job, slower.
    return null;
  }
}

function applyResult(r: InflateResult, entry: CdEntry, check: EntryCheck): void {
  if (r.ok) {
    check.output(r.data, r.crc);
    check.finish();
  } else if (r.code === 'ERR_BUFFER_TOO_LARGE') {
    throw new StopExpansion(entry.name, `entry expands past the ${entry.usize} bytes its header declares; refused as a likely zip bomb, validation stopped`);
  } else {
    check.corrupt(`bad deflate data (${r.message})`);
  }
}

async function peekTarget(walker: ByteWalker, entry: CdEntry): Promise<string | undefined> {
  if (entry.offset < walker.pos) return undefined;
  await walker.skipTo(entry.offset);
  const lfh = await walker.read(30);
  if (lfh.readUInt32LE(0) !== LFH_SIG) return undefined;
  await walker.skip(lfh.readUInt16LE(26) + lfh.readUInt16LE(28));
  return (await walker.read(entry.csize)).toString('utf8');
}

/** Counts, checks and forwards one entry's decompressed bytes. */
class EntryCheck {
  produced = 0;
  private crc = 0;

  constructor(
    private readonly entry: CdEntry,
    private readonly consumer: EntryConsumer | null,
    private readonly guard: ExpansionGuard,
    private readonly problems: ProblemList,
  ) {}

  /** `crc`: the CRC-32 of `buf` when the producer computed it already. */
  output(buf: Buffer, crc?: number): void {
    this.produced += buf.length;
    this.guard.addEntryBytes(this.entry.name, this.produced, buf.length);
    if (this.entry.method !== 0) this.guard.checkRatio(this.entry.name, this.produced, this.entry.csize);
    if (this.produced > this.entry.usize) {
      throw new StopExpansion(this.entry.name, `entry expands past the ${this.entry.usize} bytes its header declares; refused as a likely zip bomb, validation stopped`);
    }
    this.crc = crc !== undefined && this.produced === buf.length ? crc : zlib.crc32(buf, this.crc);
    this.consumer?.write(buf);
  }

  finish(): void {
    if (this.produced !== this.entry.usize) {
      this.corrupt(`${this.produced} bytes where the central directory says ${this.entry.usize}`);
    } else if (this.crc >>> 0 !== this.entry.crc >>> 0) {
      this.corrupt('CRC-32 mismatch');
    } else {
      this.consumer?.end();
    }
  }

  corrupt(reason: string): void {
    this.problems.add(this.entry.name, null, `corrupt zip entry: ${reason}`);
    if (this.consumer?.abort) this.consumer.abort();
    else this.consumer?.end();
  }
}

function inflateInline(compressed: Buffer, entry: CdEntry, check: EntryCheck): void {
  let out: Buffer;
  try {
    out = zlib.inflateRawSync(compressed, { maxOutputLength: Math.max(1, entry.usize + 1), chunkSize: Math.max(64, entry.usize + 1) });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new StopExpansion(entry.name, `entry expands past the ${entry.usize} bytes its header declares; refused as a likely zip bomb, validation stopped`);
    }
    check.corrupt(`bad deflate data (${(err as Error).message})`);
    return;
  }
  check.output(out);
  check.finish();
}

function inflateOneShot(compressed: Buffer, entry: CdEntry, check: EntryCheck): Promise<void> {
  return new Promise((resolve, reject) => {
    // One byte over the declared size is enough to know the header lied.
    // Output in one buffer: with the default 16 KiB chunks, per-chunk bookkeeping on this thread
    // costs more than the inflate itself on the pool (measured 2x slower overall).
    const chunkSize = Math.max(64, Math.min(entry.usize + 1, ONE_SHOT_MAX_UNCOMPRESSED + 1));
    zlib.inflateRaw(compressed, { maxOutputLength: Math.max(1, entry.usize + 1), chunkSize }, (err, out) => {
      try {
        if (err) {
          if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
            throw new StopExpansion(entry.name, `entry expands past the ${entry.usize} bytes its header declares; refused as a likely zip bomb, validation stopped`);
          }
          check.corrupt(`bad deflate data (${err.message})`);
        } else {
          check.output(out);
          check.finish();
        }
        resolve();
      } catch (e) {
        reject(e);
      }
    });
  });
}

async function inflateStreaming(walker: ByteWalker, entry: CdEntry, check: EntryCheck): Promise<void> {
  const z = zlib.createInflateRaw({ chunkSize: 256 * 1024 });
  let failed: unknown = null;
  let zerr: Error | null = null;
  const done = new Promise<void>((resolve) => {
    z.on('data', (out: Buffer) => {
      if (failed) return;
      try {
        check.output(out);
      } catch (e) {
        failed = e;
        z.destroy();
        resolve();
      }
    });
    z.on('end', resolve);
    z.on('close', resolve);
    z.on('error', (e: Error) => {
      zerr = e;
      resolve();
    });
  });
  await walker.forEach(entry.csize, (slice) => {
    if (failed || zerr) return undefined;
    if (!z.write(slice)) {
      return new Promise<void>((resolve) => {
        const go = () => {
          z.off('drain', go);
          z.off('close', go);
          resolve();
        };
        z.on('drain', go);
        z.on('close', go);
      });
    }
    return undefined;
  });
  if (!failed && !zerr) z.end();
  await done;
  z.destroy();
  if (failed) throw failed;
  if (zerr) check.corrupt(`bad deflate data (${(zerr as Error).message})`);
  else check.finish();
}

/** Bounded set of one-shot inflates running on the thread pool. */
class InflightWindow {
  private running = new Set<Promise<void>>();
  private bytes = 0;
  private failure: unknown = null;
  private abandoned = false;

  async add(bytes: number, start: () => Promise<void>, maxRunning = MAX_IN_FLIGHT): Promise<void> {
    while (this.running.size >= maxRunning || (this.running.size > 0 && this.bytes + bytes > MAX_IN_FLIGHT_BYTES)) {
      await Promise.race(this.running);
      this.throwIfFailed();
    }
    this.bytes += bytes;
    const p: Promise<void> = start()
      .catch((err) => {
        if (!this.abandoned) this.failure ??= err;
      })
      .finally(() => {
        this.running.delete(p);
        this.bytes -= bytes;
      });
    this.running.add(p);
  }

  async settle(): Promise<void> {
    while (this.running.size) await Promise.race(this.running);
  }

  throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  abandon(): void {
    // Results arriving after a stop are ignored (their consumers may see a few more bytes).
    this.abandoned = true;
  }
}

/** Sequential reader over one stream: skips, reads small headers, streams entry data, hashes every chunk it pulls. */
class ByteWalker {
  pos = 0;
  private chunk: Buffer = Buffer.alloc(0);
  private at = 0;
  private readonly it: AsyncIterator<Buffer>;
  private ended = false;

  constructor(
    private readonly stream: Readable,
    private readonly hash: Hash | null,
    private readonly signal?: AbortSignal,
  ) {
    this.it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  private async pull(): Promise<boolean> {
    if (this.ended) return false;
    if (this.signal?.aborted) {
      this.stream.destroy();
      throw this.signal.reason ?? new Error('validation aborted');
    }
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    this.hash?.update(r.value);
    this.chunk = r.value;
    this.at = 0;
    return true;
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.at === this.chunk.length && !(await this.pull())) throw new ZipCorrupt('corrupt zip: unexpected end of file');
      const c = Math.min(left, this.chunk.length - this.at);
      this.at += c;
      this.pos += c;
      left -= c;
    }
  }

  async skipTo(offset: number): Promise<void> {
    await this.skip(offset - this.pos);
  }

  async read(n: number): Promise<Buffer> {
    if (this.chunk.length - this.at >= n) {
      const out = this.chunk.subarray(this.at, this.at + n);
      this.at += n;
      this.pos += n;
      return out;
    }
    const parts: Buffer[] = [];
    await this.forEach(n, (s) => {
      parts.push(s);
      return undefined;
    });
    return Buffer.concat(parts);
  }

  /** Hands n bytes to fn in slices; fn may return a promise to apply backpressure. */
  async forEach(n: number, fn: (slice: Buffer) => void | Promise<void> | undefined): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.at === this.chunk.length && !(await this.pull())) throw new ZipCorrupt('corrupt zip: unexpected end of file');
      const c = Math.min(left, this.chunk.length - this.at);
      const slice = this.chunk.subarray(this.at, this.at + c);
      this.at += c;
      this.pos += c;
      left -= c;
      const wait = fn(slice);
      if (wait) await wait;
    }
  }

  async drain(): Promise<void> {
    while (await this.pull()) {
      /* hashing only */
    }
  }

  destroy(): void {
    this.stream.destroy();
  }
}
