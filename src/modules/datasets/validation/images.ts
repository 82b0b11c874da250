// Image checks from the bytes as they stream past: container structure, dimensions and a
// complete ending, without decoding pixels.
//
// Why not decode: even libjpeg-turbo needs ~10 ms per megapixel on one core, i.e. ~25-50 MB/s
// of JPEG, far below the target (half of sha256sum's ~250 MB/s here), and the API would need a
// native image library. The structural walk runs at ~2 GB/s and finds what makes a trainer's
// decode fail in practice (not an image, wrong container, truncated upload, zero-sized or
// unsupported frame), and gives the real dimensions for the box checks. It cannot see corrupt
// entropy-coded data inside an otherwise well-formed file (libjpeg decodes that to grey blocks
// with a warning), nor a PNG whose IDAT data is damaged but complete.
//
// What each format must show:
//   JPEG  SOI, marker segments up to a frame header (SOF: 8-bit precision, 1/3/4 components,
//         non-zero size), at least one scan, and an EOI marker reached by walking the segments
//         and entropy-coded data (bytes after EOI are ignored, as decoders do).
//   PNG   signature, IHDR first (non-zero size), IDAT, and an IEND chunk reached by walking the
//         chunk lengths. Chunk CRCs are not verified.
//   GIF   GIF87a/GIF89a header with a non-zero size, and the 0x3B trailer as the last byte.
//   BMP   BM header with a DIB header, non-zero size, and for uncompressed bitmaps enough bytes
//         for every row.
//   WebP  RIFF/WEBP with a VP8, VP8L or VP8X chunk (size from it) and as many bytes as RIFF says.
//   TIFF  byte order mark and IFD0 with ImageWidth/ImageLength when IFD0 lies in the first MiB;
//         truncation is not detected.
// Formats are recognised by content, like Pillow, not by the file's extension.

export interface ImageInfo {
  format: 'JPEG' | 'PNG' | 'GIF' | 'BMP' | 'WEBP' | 'TIFF' | null;
  width: number | null;
  height: number | null;
  /** Why a decoder would fail; null when the file looks complete. */
  error: string | null;
}

// File extensions the trainers treat as images (trainers/cvtrain/settings.py IMAGE_EXTENSIONS).
export const IMAGE_EXTENSIONS = ['.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff'] as const;

export function isImageName(path: string): boolean {
  const lower = path.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

// Enough for every header field read before the first chunk is walked (BMP needs 34 bytes).
const HEAD_BYTES = 64;
const TIFF_KEEP = 1024 * 1024;

const enum J {
  Marker, // expecting 0xFF (other bytes are skipped, as libjpeg does with a warning)
  Code,
  Len1,
  Len2,
  Segment,
  Scan,
  ScanFF,
  Done,
}

const enum P {
  ChunkHead,
  ChunkBody,
  Done,
}

// Per-image state is plain numbers and small JS arrays: a Buffer per image would be an
// ArrayBuffer each, and tens of thousands of them make V8 run full GCs for external memory
// (measured: 8x more mark-compacts, ~15% of the validation time).
export class ImageChecker {
  /** Bytes of the first writes while they are shorter than HEAD_BYTES. */
  private headParts: Buffer[] | null = null;
  private headLen = 0;
  private kind: ImageInfo['format'] | 'UNKNOWN' | null = null;
  private total = 0;
  private width: number | null = null;
  private height: number | null = null;
  private error: string | null = null;

  // JPEG
  private js = J.Marker;
  private marker = 0;
  private segLeft = 0;
  private readonly sof: number[] = [];
  private sawSof = false;
  private sawScan = false;

  // PNG
  private ps = P.ChunkHead;
  private readonly chunkHead: number[] = [];
  private chunkType = '';
  private chunkLeft = 0;
  private sawIdat = false;
  private chunks = 0;

  // GIF, BMP, WebP
  private lastByte = -1;
  private needBytes = 0;

  // TIFF
  private tiff: Buffer[] = [];
  private tiffLen = 0;

  write(chunk: Buffer): void {
    if (this.error) return;
    this.total += chunk.length;
    if (this.kind !== null) {
      this.feed(chunk);
      return;
    }
    if (this.headParts === null && chunk.length >= HEAD_BYTES) {
      this.start(chunk);
      return;
    }
    (this.headParts ??= []).push(Buffer.from(chunk));
    this.headLen += chunk.length;
    if (this.headLen >= HEAD_BYTES) this.startFromParts();
  }

  end(): ImageInfo {
    if (!this.error && this.kind === null) {
      if (this.headLen === 0) this.error = 'empty file';
      else this.startFromParts();
    }
    if (!this.error) this.finish();
    const format = this.kind === 'UNKNOWN' || this.kind === null ? null : this.kind;
    return { format, width: this.width, height: this.height, error: this.error };
  }

  private startFromParts(): void {
    const head = Buffer.concat(this.headParts ?? []);
    this.headParts = null;
    this.start(head);
  }

  private fail(message: string): void {
    if (!this.error) this.error = message;
  }

  /** Recognises the format from the first bytes and walks all of `h` (the whole first write). */
  private start(h: Buffer): void {
    if (h.length >= 3 && h[0] === 0xff && h[1] === 0xd8 && h[2] === 0xff) {
      this.kind = 'JPEG';
      this.js = J.Marker;
      this.feed(h.subarray(2));
    } else if (h.length >= 8 && h.readUInt32BE(0) === 0x89504e47 && h.readUInt32BE(4) === 0x0d0a1a0a) {
      this.kind = 'PNG';
      this.feed(h.subarray(8));
    } else if (h.length >= 10 && (h.toString('latin1', 0, 6) === 'GIF87a' || h.toString('latin1', 0, 6) === 'GIF89a')) {
      this.kind = 'GIF';
      this.width = h.readUInt16LE(6);
      this.height = h.readUInt16LE(8);
      this.feed(h);
    } else if (h.length >= 2 && h[0] === 0x42 && h[1] === 0x4d) {
      this.kind = 'BMP';
      this.startBmp(h);
      this.feed(h);
    } else if (h.length >= 12 && h.toString('latin1', 0, 4) === 'RIFF' && h.toString('latin1', 8, 12) === 'WEBP') {
      this.kind = 'WEBP';
      this.startWebp(h);
      this.feed(h);
    } else if (h.length >= 8 && (h.toString('latin1', 0, 4) === 'II*\0' || h.toString('latin1', 0, 4) === 'MM\0*')) {
      this.kind = 'TIFF';
      this.feed(h);
    } else {
      this.kind = 'UNKNOWN';
      this.fail('not a JPEG, PNG, GIF, BMP, WebP or TIFF file');
    }
  }

  private feed(buf: Buffer): void {
    switch (this.kind) {
      case 'JPEG':
        return this.feedJpeg(buf);
      case 'PNG':
        return this.feedPng(buf);
      case 'TIFF':
        if (this.tiffLen < TIFF_KEEP) {
          const part = buf.subarray(0, TIFF_KEEP - this.tiffLen);
          this.tiff.push(Buffer.from(part));
          this.tiffLen += part.length;
        }
        return;
      default:
        if (buf.length) this.lastByte = buf[buf.length - 1];
    }
  }

  private finish(): void {
    switch (this.kind) {
      case 'JPEG':
        if (this.js !== J.Done) {
          if (!this.sawSof) this.fail('JPEG without a frame header (SOF)');
          else if (!this.sawScan) this.fail('JPEG without image data (no SOS segment)');
          else this.fail('truncated JPEG (no EOI marker)');
        }
        break;
      case 'PNG':
        if (this.ps !== P.Done) this.fail(this.chunks === 0 ? 'PNG without an IHDR chunk' : 'truncated PNG (no IEND chunk)');
        else if (!this.sawIdat) this.fail('PNG without image data (no IDAT chunk)');
        break;
      case 'GIF':
        if (this.lastByte !== 0x3b) this.fail('truncated GIF (no trailer byte)');
        break;
      case 'BMP':
      case 'WEBP':
        if (this.total < this.needBytes) this.fail(`truncated ${this.kind === 'BMP' ? 'BMP' : 'WebP'} (${this.total} of ${this.needBytes} bytes)`);
        break;
      case 'TIFF':
        this.finishTiff();
        break;
    }
    if (!this.error && (this.width === 0 || this.height === 0)) this.fail(`image has zero width or height (${this.width}x${this.height})`);
  }

  // --- JPEG -------------------------------------------------------------------------------

  private feedJpeg(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      switch (this.js) {
        case J.Marker: {
          const ff = buf.indexOf(0xff, i);
          if (ff < 0) return;
          i = ff + 1;
          this.js = J.Code;
          break;
        }
        case J.Code:
        case J.ScanFF: {
          const b = buf[i++];
          if (b === 0xff) break; // fill byte
          if (this.js === J.ScanFF && (b === 0x00 || (b >= 0xd0 && b <= 0xd7))) {
            this.js = J.Scan; // stuffed byte or restart marker inside entropy-coded data
            break;
          }
          this.onMarker(b);
          if (this.error) return;
          break;
        }
        case J.Len1:
          this.segLeft = buf[i++] << 8;
          this.js = J.Len2;
          break;
        case J.Len2: {
          const len = this.segLeft | buf[i++];
          if (len < 2) return this.fail(`corrupt JPEG (segment length ${len})`);
          this.segLeft = len - 2;
          this.js = J.Segment;
          if (this.segLeft === 0) this.endSegment();
          break;
        }
        case J.Segment: {
          const take = Math.min(this.segLeft, n - i);
          if (isSof(this.marker)) for (let k = 0; k < take && this.sof.length < 6; k++) this.sof.push(buf[i + k]);
          i += take;
          this.segLeft -= take;
          if (this.segLeft === 0) this.endSegment();
          if (this.error) return;
          break;
        }
        case J.Scan: {
          const ff = buf.indexOf(0xff, i);
          if (ff < 0) return;
          i = ff + 1;
          this.js = J.ScanFF;
          break;
        }
        case J.Done:
          return;
      }
    }
  }

  private onMarker(code: number): void {
    this.marker = code;
    if (code === 0xd9) {
      if (!this.sawSof) return this.fail('JPEG ends (EOI) before a frame header');
      if (!this.sawScan) return this.fail('JPEG ends (EOI) before any image data');
      this.js = J.Done;
      return;
    }
    if ((code >= 0xd0 && code <= 0xd7) || code === 0x01 || code === 0xd8 || code === 0x00) {
      // Standalone markers (and a stray FF00 between segments) carry no length.
      this.js = J.Marker;
      return;
    }
    if (code === 0xda && !this.sawSof) return this.fail('JPEG scan (SOS) before the frame header (SOF)');
    this.js = J.Len1;
  }

  private endSegment(): void {
    if (isSof(this.marker)) {
      if (this.sawSof) return this.fail('JPEG with two frame headers');
      if (this.sof.length < 6) return this.fail('corrupt JPEG (short frame header)');
      this.sawSof = true;
      const [precision, h1, h0, w1, w0, components] = this.sof;
      this.height = (h1 << 8) | h0;
      this.width = (w1 << 8) | w0;
      // Pillow refuses these itself ("cannot handle N-bit layers", "cannot handle N-layer images").
      if (precision !== 8) return this.fail(`${precision}-bit JPEG (only 8-bit JPEGs decode)`);
      if (components !== 1 && components !== 3 && components !== 4) return this.fail(`JPEG with ${components} components`);
    }
    if (this.marker === 0xda) {
      this.sawScan = true;
      this.js = J.Scan;
    } else {
      this.js = J.Marker;
    }
  }

  // --- PNG ----------------------------------------------------------------------------------

  private feedPng(buf: Buffer): void {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      if (this.ps === P.Done) return;
      if (this.ps === P.ChunkHead) {
        // Length and type, plus IHDR's width and height when this is the first chunk.
        const want = this.chunks === 0 ? 16 : 8;
        const head = this.chunkHead;
        while (head.length < want && i < n) head.push(buf[i++]);
        if (head.length < want) return;
        const u32 = (o: number) => ((head[o] << 24) | (head[o + 1] << 16) | (head[o + 2] << 8) | head[o + 3]) >>> 0;
        const len = u32(0);
        const type = String.fromCharCode(head[4], head[5], head[6], head[7]);
        if (len > 0x7fffffff) return this.fail(`corrupt PNG (chunk length ${len})`);
        if (this.chunks === 0) {
          if (type !== 'IHDR' || len !== 13) return this.fail('PNG does not start with an IHDR chunk');
          this.width = u32(8);
          this.height = u32(12);
        }
        this.chunks++;
        this.chunkType = type;
        if (type === 'IDAT') this.sawIdat = true;
        // Data and CRC; the first 8 bytes of IHDR's data are already consumed.
        this.chunkLeft = len + 4 - (want - 8);
        head.length = 0;
        this.ps = P.ChunkBody;
        if (this.chunkLeft === 0) this.endPngChunk();
      } else {
        const c = Math.min(this.chunkLeft, n - i);
        i += c;
        this.chunkLeft -= c;
        if (this.chunkLeft === 0) this.endPngChunk();
      }
    }
  }

  private endPngChunk(): void {
    this.ps = this.chunkType === 'IEND' ? P.Done : P.ChunkHead;
  }

  // --- BMP, WebP, TIFF ----------------------------------------------------------------------------

  private startBmp(h: Buffer): void {
    if (h.length < 26) return this.fail('truncated BMP header');
    const offset = h.readUInt32LE(10);
    const dib = h.readUInt32LE(14);
    let bpp: number;
    let compression = 0;
    if (dib === 12) {
      this.width = h.readUInt16LE(18);
      this.height = h.readUInt16LE(20);
      bpp = h.readUInt16LE(24);
    } else if (dib >= 40 && h.length >= 34) {
      this.width = h.readInt32LE(18);
      this.height = Math.abs(h.readInt32LE(22)); // negative: rows stored top-down
      bpp = h.readUInt16LE(28);
      compression = h.readUInt32LE(30);
    } else {
      return this.fail(`BMP with an unknown header (${dib} bytes)`);
    }
    if (this.width < 0) return this.fail(`BMP with negative width ${this.width}`);
    if (![1, 2, 4, 8, 16, 24, 32].includes(bpp)) return this.fail(`BMP with ${bpp} bits per pixel`);
    // BI_RGB and BI_BITFIELDS store every row uncompressed, padded to 4 bytes.
    if (compression === 0 || compression === 3) {
      const stride = Math.floor((bpp * this.width + 31) / 32) * 4;
      this.needBytes = offset + stride * this.height;
    }
  }

  private startWebp(h: Buffer): void {
    const riff = h.readUInt32LE(4);
    this.needBytes = 8 + riff + (riff & 1);
    const fourcc = h.toString('latin1', 12, 16);
    const p = 20;
    if (fourcc === 'VP8 ' && h.length >= p + 10) {
      if (h[p + 3] !== 0x9d || h[p + 4] !== 0x01 || h[p + 5] !== 0x2a) return this.fail('corrupt WebP (bad VP8 frame tag)');
      this.width = h.readUInt16LE(p + 6) & 0x3fff;
      this.height = h.readUInt16LE(p + 8) & 0x3fff;
    } else if (fourcc === 'VP8L' && h.length >= p + 5) {
      if (h[p] !== 0x2f) return this.fail('corrupt WebP (bad VP8L signature)');
      const bits = h.readUInt32LE(p + 1);
      this.width = (bits & 0x3fff) + 1;
      this.height = ((bits >>> 14) & 0x3fff) + 1;
    } else if (fourcc === 'VP8X' && h.length >= p + 10) {
      this.width = h.readUIntLE(p + 4, 3) + 1;
      this.height = h.readUIntLE(p + 7, 3) + 1;
    } else {
      return this.fail(`WebP without a VP8, VP8L or VP8X chunk (found "${fourcc}")`);
    }
  }

  private finishTiff(): void {
    const b = Buffer.concat(this.tiff);
    this.tiff = [];
    const le = b[0] === 0x49;
    const u16 = (o: number) => (le ? b.readUInt16LE(o) : b.readUInt16BE(o));
    const u32 = (o: number) => (le ? b.readUInt32LE(o) : b.readUInt32BE(o));
    const ifd = u32(4);
    if (ifd < 8) return this.fail('corrupt TIFF (IFD offset)');
    if (ifd + 2 > b.length) return; // IFD0 beyond what we keep: dimensions stay unknown
    const count = u16(ifd);
    for (let k = 0; k < count; k++) {
      const e = ifd + 2 + k * 12;
      if (e + 12 > b.length) break;
      const tag = u16(e);
      const type = u16(e + 2);
      const value = type === 3 ? u16(e + 8) : u32(e + 8);
      if (tag === 256) this.width = value;
      else if (tag === 257) this.height = value;
    }
    if (this.width === null || this.height === null) this.fail('TIFF without ImageWidth/ImageLength');
  }
}

function isSof(code: number): boolean {
  return code >= 0xc0 && code <= 0xcf && code !== 0xc4 && code !== 0xc8 && code !== 0xcc;
}
