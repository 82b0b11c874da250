// Minimal zip and tar writers for tests and benchmarks. Hand-written rather than a library
// because the tests need archives no well-behaved library will produce: names that climb
// out, symlinks, headers that lie about sizes, overlapping entries.
import zlib from 'node:zlib';

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'chardev' | 'fifo';

export interface EntrySpec {
  name: string;
  data?: Buffer | string;
  type?: EntryType;
  linkTarget?: string;
  /** zip: store or deflate (default deflate). */
  method?: 'store' | 'deflate';
  /** zip: the uncompressed size written into the headers, when a test wants them to lie. */
  declaredSize?: number;
  /** zip: sizes and CRC after the data (bit 3), as streaming zippers write them. */
  dataDescriptor?: boolean;
}

const CRC = (buf: Buffer) => zlib.crc32(buf) >>> 0;

const UNIX_MODE: Record<EntryType, number> = {
  file: 0o100644,
  dir: 0o040755,
  symlink: 0o120777,
  hardlink: 0o100644,
  chardev: 0o020644,
  fifo: 0o010644,
};

export interface ZipOptions {
  /** Put every entry's data at the first entry's offset (the overlapping-entries zip bomb). */
  overlapAll?: boolean;
  /** Zip64 records (as for archives over 4 GiB or 65535 entries), with the 32-bit fields saturated. */
  zip64?: boolean;
}

export function makeZip(entries: EntrySpec[], opts: ZipOptions = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  let firstOffset = -1;
  for (const e of entries) {
    const type = e.type ?? (e.name.endsWith('/') ? 'dir' : 'file');
    const raw = Buffer.from(type === 'symlink' ? (e.linkTarget ?? '') : (e.data ?? ''));
    const method = type === 'dir' || e.method === 'store' ? 0 : 8;
    const body = method === 8 ? zlib.deflateRawSync(raw) : raw;
    const crc = CRC(raw);
    const usize = e.declaredSize ?? raw.length;
    const name = Buffer.from(e.name);
    const flags = 0x800 | (e.dataDescriptor ? 0x8 : 0);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt32LE(e.dataDescriptor ? 0 : crc, 14);
    local.writeUInt32LE(e.dataDescriptor ? 0 : body.length, 18);
    local.writeUInt32LE(e.dataDescriptor ? 0 : usize, 22);
    local.writeUInt16LE(name.length, 26);
    const entryOffset = opts.overlapAll && firstOffset >= 0 ? firstOffset : offset;
    if (!(opts.overlapAll && firstOffset >= 0)) {
      parts.push(local, name, body);
      offset += 30 + name.length + body.length;
      if (e.dataDescriptor) {
        const dd = Buffer.alloc(16);
        dd.writeUInt32LE(0x08074b50, 0);
        dd.writeUInt32LE(crc, 4);
        dd.writeUInt32LE(body.length, 8);
        dd.writeUInt32LE(usize, 12);
        parts.push(dd);
        offset += 16;
      }
    }
    if (firstOffset < 0) firstOffset = entryOffset;
    const cd = Buffer.alloc(46);
    cd.writeUInt32LE(0x02014b50, 0);
    cd.writeUInt16LE((3 << 8) | 45, 4); // made on Unix: external attributes hold the mode
    cd.writeUInt16LE(opts.zip64 ? 45 : 20, 6);
    cd.writeUInt16LE(flags, 8);
    cd.writeUInt16LE(method, 10);
    cd.writeUInt32LE(crc, 16);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : body.length, 20);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : usize, 24);
    cd.writeUInt16LE(name.length, 28);
    cd.writeUInt32LE((UNIX_MODE[type] << 16) >>> 0, 38);
    cd.writeUInt32LE(opts.zip64 ? 0xffffffff : entryOffset, 42);
    let extra = Buffer.alloc(0);
    if (opts.zip64) {
      extra = Buffer.alloc(28);
      extra.writeUInt16LE(0x0001, 0);
      extra.writeUInt16LE(24, 2);
      extra.writeBigUInt64LE(BigInt(usize), 4);
      extra.writeBigUInt64LE(BigInt(body.length), 12);
      extra.writeBigUInt64LE(BigInt(entryOffset), 20);
      cd.writeUInt16LE(extra.length, 30);
    }
    central.push(cd, name, extra);
  }
  const cdBuf = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 8);
  end.writeUInt16LE(opts.zip64 ? 0xffff : entries.length, 10);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : cdBuf.length, 12);
  end.writeUInt32LE(opts.zip64 ? 0xffffffff : offset, 16);
  if (!opts.zip64) return Buffer.concat([...parts, cdBuf, end]);
  const rec = Buffer.alloc(56);
  rec.writeUInt32LE(0x06064b50, 0);
  rec.writeBigUInt64LE(44n, 4);
  rec.writeUInt16LE(45, 12);
  rec.writeUInt16LE(45, 14);
  rec.writeBigUInt64LE(BigInt(entries.length), 24);
  rec.writeBigUInt64LE(BigInt(entries.length), 32);
  rec.writeBigUInt64LE(BigInt(cdBuf.length), 40);
  rec.writeBigUInt64LE(BigInt(offset), 48);
  const loc = Buffer.alloc(20);
  loc.writeUInt32LE(0x07064b50, 0);
  loc.writeBigUInt64LE(BigInt(offset + cdBuf.length), 8);
  loc.writeUInt32LE(1, 16);
  return Buffer.concat([...parts, cdBuf, rec, loc, end]);
}

const TAR_TYPE: Record<EntryType, string> = { file: '0', dir: '5', symlink: '2', hardlink: '1', chardev: '3', fifo: '6' };

/** A ustar header; `type` may also be a raw type flag such as 'x' (PAX). */
export function tarHeader(name: string, size: number, type: EntryType | string = 'file', linkTarget = ''): Buffer {
  const h = Buffer.alloc(512);
  let n = Buffer.from(name);
  let prefix = Buffer.alloc(0);
  if (n.length > 100) {
    // ustar splits long names at a slash into prefix (155) and name (100).
    const cut = name.lastIndexOf('/', name.length - 1 - 0);
    const at = cut > 0 && Buffer.byteLength(name.slice(cut + 1)) <= 100 ? cut : -1;
    if (at < 0) throw new Error(`name too long for ustar: ${name}`);
    prefix = Buffer.from(name.slice(0, at));
    n = Buffer.from(name.slice(at + 1));
  }
  n.copy(h, 0);
  h.write(type === 'dir' ? '0000755\0' : '0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(TAR_TYPE[type as EntryType] ?? type, 156, 'latin1');
  Buffer.from(linkTarget).copy(h, 157);
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  prefix.copy(h, 345);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

export function tarPadding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/** A PAX extended header (type 'x') whose records apply to the next entry. */
export function paxHeader(records: Record<string, string>): Buffer {
  let text = '';
  for (const [k, v] of Object.entries(records)) {
    const body = ` ${k}=${v}\n`;
    let len = Buffer.byteLength(body) + 1;
    while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
    text += `${len}${body}`;
  }
  const data = Buffer.from(text);
  return Buffer.concat([tarHeader('PaxHeader/next', data.length, 'x'), data, tarPadding(data.length)]);
}

export function makeTar(entries: EntrySpec[], opts: { endBlocks?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const type = e.type ?? (e.name.endsWith('/') ? 'dir' : 'file');
    const data = type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    parts.push(tarHeader(e.name, data.length, type, e.linkTarget ?? ''), data, tarPadding(data.length));
  }
  if (opts.endBlocks !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export function makeTarGz(entries: EntrySpec[]): Buffer {
  return zlib.gzipSync(makeTar(entries), { level: 1 });
}

// --- tiny images --------------------------------------------------------------------------------

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(CRC(td));
  return Buffer.concat([len, td, crc]);
}

/** An RGB PNG of the given size: grey, or noise (which does not compress). */
export function makePng(width: number, height: number, opts: { noise?: boolean } = {}): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const rows = Buffer.alloc((width * 3 + 1) * height, 0x80);
  if (opts.noise) {
    let x = 0x9e3779b9; // xorshift32: deterministic bytes no compressor can shrink
    for (let i = 0; i < rows.length; i++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      rows[i] = x & 0xff;
    }
    for (let y = 0; y < height; y++) rows[y * (width * 3 + 1)] = 0;
  }
  for (let y = 0; y < height; y++) rows[y * (width * 3 + 1)] = 0; // filter type per row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(rows)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** An uncompressed 24-bit BMP. */
export function makeBmp(width: number, height: number): Buffer {
  const stride = Math.floor((24 * width + 31) / 32) * 4;
  const h = Buffer.alloc(54);
  h.write('BM', 0, 'latin1');
  h.writeUInt32LE(54 + stride * height, 2);
  h.writeUInt32LE(54, 10);
  h.writeUInt32LE(40, 14);
  h.writeInt32LE(width, 18);
  h.writeInt32LE(height, 22);
  h.writeUInt16LE(1, 26);
  h.writeUInt16LE(24, 28);
  return Buffer.concat([h, Buffer.alloc(stride * height, 0x40)]);
}

/** A 1x1 GIF. */
export const GIF_1X1 = Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');
