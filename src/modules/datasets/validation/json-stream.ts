// A streaming JSON reader for COCO annotation files.
//
// COCO instances files reach hundreds of MB (COCO 2017 train: 448 MB, 860k annotations);
// JSON.parse would need the whole text as one string (several times its size in memory, and
// over V8's string limit past ~512 MB). This reader walks the bytes once and materialises
// only the elements of the top-level arrays the caller asks for, and within each element
// only the keys it asks for (segmentation polygons are skipped unread). Memory is what the
// caller keeps of those elements.
//
// It accepts what Python's json.load accepts, because that is what the trainer runs: strict
// JSON plus NaN, Infinity and -Infinity; it refuses a UTF-8 BOM, invalid UTF-8, control
// characters inside strings, and nesting deeper than MAX_JSON_DEPTH (Python raises
// RecursionError near 1000, which the trainer does not catch).
import { isUtf8 } from 'node:buffer';
import { MAX_JSON_DEPTH, MAX_JSON_STRING_BYTES } from './limits.js';

export class JsonSyntaxError extends Error {
  constructor(
    readonly reason: string,
    readonly line: number,
    readonly column: number,
  ) {
    super(`${reason} (line ${line}, column ${column})`);
    this.name = 'JsonSyntaxError';
  }
}

export type JsonType = 'object' | 'array' | 'string' | 'number' | 'boolean' | 'null';

export interface JsonElementsHandler {
  /** Called once when the document's top-level value is not an object; nothing else follows. */
  topLevel(type: JsonType): void;
  /** A key of the top-level object with its value's type; true to receive that array's elements. */
  topKey(key: string, type: JsonType, line: number): boolean;
  /** Whether to keep `key` of an element object (false: its value is skipped unread). */
  keepKey(topKey: string, key: string): boolean;
  /** One element of a requested array, with the line it starts on. TOO_LARGE when it exceeded the token budget. */
  element(topKey: string, value: unknown, line: number): void;
}

/** Stands in for an element with more than MAX_ELEMENT_TOKENS kept values. */
export const TOO_LARGE = Symbol('element too large');
// A COCO element needs a handful of values; this bounds what one hostile element can pin in memory.
const MAX_ELEMENT_TOKENS = 10_000;

const OBJ = 0;
const ARR = 1;

const enum S {
  Value,
  ArrFirst,
  ObjFirst,
  Key,
  Colon,
  After,
  End,
  Str,
  Num,
  Lit,
}

const KEY_CACHE_SIZE = 256;

// Number grammar states (JSON's: -?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?).
const enum N {
  Start,
  Minus,
  Zero,
  Int,
  Dot,
  Frac,
  E,
  ESign,
  Exp,
}

export class JsonElementStream {
  private state = S.Value;
  private readonly stack = new Uint8Array(MAX_JSON_DEPTH + 1);
  private depth = 0;

  // Position, for error messages and element lines.
  private line = 1;
  private lineStart = 0;
  private offset = 0;
  private started = false;

  // String token.
  private strIsKey = false;
  private strCollect = false;
  private strParts: Buffer[] = [];
  private strLen = 0;
  private strHasEscape = false;
  private strEsc = 0; // 0: none, 1: after backslash, 2..5: hex digits of \u still expected
  private strHash = 0;
  private readonly keyCache: (string | undefined)[] = new Array(KEY_CACHE_SIZE);
  // Number or literal token: the text is kept only when the value is (numbers elsewhere are
  // only checked against JSON's grammar, byte by byte).
  private tok = '';
  private numState = 0;
  private numCollect = false;
  private numStart = 0;

  // Structure.
  private topKey = '';
  private readonly topKeysSeen = new Set<string>();
  private ignoreAll = false;
  private collecting = false;
  private building = false;
  private skipFrom = -1;
  private tooLarge = false;
  private budget = 0;
  private elementLine = 0;
  private root: unknown = undefined;
  private readonly bstack: (unknown[] | Record<string, unknown>)[] = [];
  private readonly bkeys: string[] = [];
  private elemKeyKept = true;

  private readonly utf8 = new Utf8Checker();

  constructor(private readonly handler: JsonElementsHandler) {}

  /** Duplicate top-level keys (Python keeps the last; callers may want to say so). */
  get duplicateTopKeys(): string[] {
    return this.dupTop;
  }
  private readonly dupTop: string[] = [];

  write(buf: Buffer): void {
    if (!this.started && buf.length) {
      this.started = true;
      if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) {
        this.err('unexpected UTF-8 BOM (save the file as UTF-8 without BOM)', 0);
      }
    }
    if (!this.utf8.write(buf)) this.err('invalid UTF-8', 0);
    this.scan(buf);
    this.offset += buf.length;
  }

  end(): void {
    if (!this.utf8.end()) this.err('invalid UTF-8 at the end of the file', 0);
    if (this.state === S.Num) this.finishNumber(null, 0);
    else if (this.state === S.Lit) this.finishLiteral(0);
    if (this.state === S.Str) this.err('unterminated string', 0);
    if (this.state !== S.End) {
      this.err(this.depth === 0 && this.state === S.Value ? 'expecting a value (the file is empty)' : 'unexpected end of file', 0);
    }
  }

  private err(reason: string, i: number): never {
    const pos = this.offset + i;
    throw new JsonSyntaxError(reason, this.line, pos - this.lineStart + 1);
  }

  private scan(buf: Buffer): void {
    const n = buf.length;
    let i = 0;
    while (i < n) {
      const st = this.state;
      if (st === S.Str) {
        i = this.scanString(buf, i);
        continue;
      }
      if (st === S.Num) {
        i = this.scanNumber(buf, i);
        continue;
      }
      if (st === S.Lit) {
        let j = i;
        while (j < n && isLetter(buf[j])) j++;
        this.tok += buf.toString('latin1', i, j);
        if (this.tok.length > 16) this.err(`unexpected "${this.tok.slice(0, 16)}"`, j);
        if (j === n) return;
        i = this.finishLiteral(j);
        continue;
      }
      const c = buf[i];
      // Whitespace (JSON's four characters only).
      if (c === 0x20 || c === 0x09 || c === 0x0d) {
        i++;
        continue;
      }
      if (c === 0x0a) {
        i++;
        this.line++;
        this.lineStart = this.offset + i;
        continue;
      }
      switch (st) {
        case S.Value:
        case S.ArrFirst:
          if (st === S.ArrFirst && c === 0x5d) {
            i = this.close(ARR, i);
            continue;
          }
          i = this.startValue(buf, i, c);
          continue;
        case S.ObjFirst:
        case S.Key:
          if (st === S.ObjFirst && c === 0x7d) {
            i = this.close(OBJ, i);
            continue;
          }
          if (c !== 0x22) this.err('expecting a property name in double quotes', i);
          this.beginString(true);
          i++;
          continue;
        case S.Colon:
          if (c !== 0x3a) this.err("expecting ':' delimiter", i);
          this.state = S.Value;
          i++;
          continue;
        case S.After: {
          const top = this.stack[this.depth - 1];
          if (c === 0x2c) {
            this.state = top === OBJ ? S.Key : S.Value;
            i++;
          } else if (c === 0x7d && top === OBJ) {
            i = this.close(OBJ, i);
          } else if (c === 0x5d && top === ARR) {
            i = this.close(ARR, i);
          } else {
            this.err(top === OBJ ? "expecting ',' or '}'" : "expecting ',' or ']'", i);
          }
          continue;
        }
        case S.End:
          this.err('extra data after the JSON document', i);
      }
    }
  }

  private startValue(buf: Buffer, i: number, c: number): number {
    if (c === 0x7b || c === 0x5b) {
      const isArr = c === 0x5b;
      this.beginValue(isArr ? 'array' : 'object');
      if (this.depth >= MAX_JSON_DEPTH) this.err(`nested deeper than ${MAX_JSON_DEPTH} levels`, i);
      if (this.building && this.skipFrom < 0) {
        const container: unknown[] | Record<string, unknown> = isArr ? [] : {};
        this.attach(container);
        this.bstack.push(container);
        this.bkeys.push('');
      }
      this.stack[this.depth++] = isArr ? ARR : OBJ;
      this.state = isArr ? S.ArrFirst : S.ObjFirst;
      return i + 1;
    }
    if (c === 0x22) {
      this.beginString(false);
      return i + 1;
    }
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      this.state = S.Num;
      this.tok = '';
      this.numState = N.Start;
      this.numStart = i;
      this.numCollect = this.building && this.skipFrom < 0 && this.elemKeyWillBeKept();
      return i;
    }
    if (c === 0x74 || c === 0x66 || c === 0x6e || c === 0x4e || c === 0x49) {
      this.state = S.Lit;
      this.tok = '';
      return i;
    }
    this.err('expecting a value', i);
  }

  /** Walks number bytes from i with JSON's grammar; returns where the number ends, or buf.length. */
  private scanNumber(buf: Buffer, i: number): number {
    const n = buf.length;
    let ns = this.numState;
    let j = i;
    for (; j < n; j++) {
      const c = buf[j];
      if (c >= 0x30 && c <= 0x39) {
        if (ns === N.Start || ns === N.Minus) ns = c === 0x30 ? N.Zero : N.Int;
        else if (ns === N.Zero) this.err('invalid number (leading zero)', j);
        else if (ns === N.Dot) ns = N.Frac;
        else if (ns === N.E || ns === N.ESign) ns = N.Exp;
        continue;
      }
      if (c === 0x2d && ns === N.Start) ns = N.Minus;
      else if ((c === 0x2d || c === 0x2b) && ns === N.E) ns = N.ESign;
      else if (c === 0x2e && (ns === N.Int || ns === N.Zero)) ns = N.Dot;
      else if ((c === 0x65 || c === 0x45) && (ns === N.Int || ns === N.Zero || ns === N.Frac)) ns = N.E;
      else if (c === 0x49 && ns === N.Minus) {
        // "-Infinity", which Python's json accepts.
        this.state = S.Lit;
        this.tok = '-';
        return j;
      } else break;
    }
    this.numState = ns;
    if (j === n) {
      // The number goes on in the next chunk: keep its text if its value is wanted.
      if (this.numCollect) {
        this.tok += buf.toString('latin1', this.numStart, n);
        if (this.tok.length > 4096) this.err('number too long', j);
      }
      this.numStart = 0;
      return n;
    }
    return this.finishNumber(buf, j);
  }

  private finishNumber(buf: Buffer | null, i: number): number {
    const ns = this.numState;
    if (ns !== N.Int && ns !== N.Zero && ns !== N.Frac && ns !== N.Exp) this.err('invalid number', i);
    let value = 0;
    if (this.numCollect) {
      value = this.tok === '' && buf ? numberAt(buf, this.numStart, i) : Number(this.tok + (buf ? buf.toString('latin1', this.numStart, i) : ''));
    }
    this.tok = '';
    this.primitive('number', value);
    return i;
  }

  private finishLiteral(i: number): number {
    const t = this.tok;
    this.tok = '';
    switch (t) {
      case 'true':
        this.primitive('boolean', true);
        break;
      case 'false':
        this.primitive('boolean', false);
        break;
      case 'null':
        this.primitive('null', null);
        break;
      case 'NaN':
        this.primitive('number', NaN);
        break;
      case 'Infinity':
        this.primitive('number', Infinity);
        break;
      case '-Infinity':
        this.primitive('number', -Infinity);
        break;
      default:
        this.err(`unexpected "${t}"`, i);
    }
    return i;
  }

  // --- strings --------------------------------------------------------------------------

  private beginString(isKey: boolean): void {
    this.state = S.Str;
    this.strIsKey = isKey;
    this.strParts = [];
    this.strLen = 0;
    this.strHasEscape = false;
    this.strEsc = 0;
    this.strHash = 0;
    if (isKey) this.strCollect = this.depth === 1 || (this.building && this.skipFrom < 0);
    else this.strCollect = this.building && this.skipFrom < 0 && this.elemKeyWillBeKept();
  }

  private elemKeyWillBeKept(): boolean {
    // A value directly under an element object: kept only when its key is.
    return !(this.depth === 3 && this.bstack.length === 1 && !Array.isArray(this.bstack[0]) && !this.elemKeyKept);
  }

  /** Scans string bytes from i; returns the index after the closing quote, or buf.length. */
  private scanString(buf: Buffer, i: number): number {
    const n = buf.length;
    const start = i;
    let j = i;
    let h = this.strHash;
    while (j < n) {
      const c = buf[j];
      if (this.strEsc === 0) {
        if (c === 0x22) break;
        if (c === 0x5c) {
          this.strEsc = 1;
          this.strHasEscape = true;
        } else if (c < 0x20) {
          this.err('invalid control character in a string', j);
        } else {
          h = (Math.imul(h, 31) + c) | 0;
        }
      } else if (this.strEsc === 1) {
        if (c === 0x75) this.strEsc = 5;
        else if (c === 0x22 || c === 0x5c || c === 0x2f || c === 0x62 || c === 0x66 || c === 0x6e || c === 0x72 || c === 0x74) this.strEsc = 0;
        else this.err('invalid \\escape', j);
      } else {
        const hex = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
        if (!hex) this.err('invalid \\uXXXX escape', j);
        this.strEsc = this.strEsc === 2 ? 0 : this.strEsc - 1;
      }
      j++;
    }
    this.strHash = h;
    if (this.strCollect && j > start) {
      this.strLen += j - start;
      if (this.strLen > MAX_JSON_STRING_BYTES) this.err(`string longer than ${MAX_JSON_STRING_BYTES} bytes`, j);
      // Copied only when the string goes on in the next chunk (the caller may reuse this one).
      this.strParts.push(j === n ? Buffer.from(buf.subarray(start, j)) : buf.subarray(start, j));
    }
    if (j === n) return n;
    // Closing quote.
    let value = '';
    if (this.strCollect) {
      const whole = this.strParts.length <= 1 && this.strLen === j - start;
      if (whole && this.strIsKey && !this.strHasEscape && j - start <= 32) {
        value = this.internedKey(buf, start, j, h);
      } else {
        // In place when the whole string lies in this chunk (the usual case).
        const text = whole ? buf.toString('utf8', start, j) : Buffer.concat(this.strParts).toString('utf8');
        value = this.strHasEscape ? (JSON.parse(`"${text}"`) as string) : text;
      }
    }
    this.strParts = [];
    if (this.strIsKey) {
      this.key(value);
      this.state = S.Colon;
    } else {
      this.primitive('string', value);
    }
    return j + 1;
  }

  /**
   * Keys repeat in every element ("id", "bbox"...); decoding each with Buffer#toString costs
   * more than the rest of the parse, so short keys are looked up by a hash of their bytes.
   */
  private internedKey(buf: Buffer, start: number, end: number, hash: number): string {
    const slot = hash & (KEY_CACHE_SIZE - 1);
    const cached = this.keyCache[slot];
    if (cached !== undefined && cached.length === end - start) {
      let same = true;
      for (let k = 0; k < cached.length; k++) {
        if (cached.charCodeAt(k) !== buf[start + k]) {
          same = false;
          break;
        }
      }
      if (same) return cached;
    }
    const key = buf.toString('utf8', start, end);
    // Only ASCII keys are cached: their UTF-16 code units are their bytes.
    if (key.length === end - start) this.keyCache[slot] = key;
    return key;
  }

  // --- structure ----------------------------------------------------------------------------

  private close(kind: number, i: number): number {
    this.depth--;
    if (this.building && this.skipFrom < 0 && this.bstack.length) {
      this.bstack.pop();
      this.bkeys.pop();
    }
    this.endValue();
    void kind;
    return i + 1;
  }

  private key(k: string): void {
    if (this.depth === 1) {
      if (this.topKeysSeen.has(k)) this.dupTop.push(k);
      this.topKeysSeen.add(k);
      this.topKey = k;
      return;
    }
    if (this.building && this.skipFrom < 0 && this.bstack.length) {
      this.bkeys[this.bkeys.length - 1] = k;
      if (this.depth === 3 && this.bstack.length === 1) this.elemKeyKept = this.handler.keepKey(this.topKey, k);
    }
  }

  /** Bookkeeping at the start of any value, at the current depth (containers not yet pushed). */
  private beginValue(type: JsonType): void {
    const d = this.depth;
    if (this.ignoreAll) return;
    if (d === 0) {
      if (type !== 'object') {
        this.ignoreAll = true;
        this.handler.topLevel(type);
      }
      return;
    }
    if (d === 1) {
      this.collecting = this.handler.topKey(this.topKey, type, this.line) && type === 'array';
      return;
    }
    if (d === 2 && this.collecting) {
      this.building = true;
      this.tooLarge = false;
      this.budget = 0;
      this.skipFrom = -1;
      this.root = undefined;
      this.bstack.length = 0;
      this.bkeys.length = 0;
      this.elemKeyKept = true;
      this.elementLine = this.line;
    } else if (!this.building || this.skipFrom >= 0) {
      return;
    }
    if (!this.elemKeyWillBeKept()) {
      this.skipFrom = d;
      return;
    }
    if (++this.budget > MAX_ELEMENT_TOKENS) {
      this.tooLarge = true;
      this.skipFrom = 2;
    }
  }

  /** After a value completed; the depth is the one it started at. */
  private endValue(): void {
    const d = this.depth;
    if (this.building && this.skipFrom === d) this.skipFrom = -1;
    if (d === 2 && this.building) {
      this.building = false;
      this.skipFrom = -1;
      const value = this.tooLarge ? TOO_LARGE : this.root;
      this.root = undefined;
      this.bstack.length = 0;
      this.bkeys.length = 0;
      this.handler.element(this.topKey, value, this.elementLine);
    } else if (d === 1) {
      this.collecting = false;
    }
    this.state = d === 0 ? S.End : S.After;
  }

  private primitive(type: JsonType, value: unknown): void {
    this.beginValue(type);
    if (this.building && this.skipFrom < 0) this.attach(value);
    this.endValue();
  }

  private attach(v: unknown): void {
    const n = this.bstack.length;
    if (n === 0) {
      this.root = v;
      return;
    }
    const parent = this.bstack[n - 1];
    if (Array.isArray(parent)) parent.push(v);
    else {
      const key = this.bkeys[n - 1];
      // A plain object is far faster than a prototype-less one; "__proto__" must stay an own key.
      if (key === '__proto__') Object.defineProperty(parent, key, { value: v, enumerable: true, writable: true, configurable: true });
      else parent[key] = v;
    }
  }
}

const POW10 = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * The value of a (grammar-checked) JSON number in buf[start, end) without making a string.
 * Exact: with at most 15 significant digits and a decimal exponent within +-22, the mantissa
 * and the power of ten are exact doubles and one multiplication or division rounds correctly
 * (Clinger's fast path); anything else goes through Number().
 */
function numberAt(buf: Buffer, start: number, end: number): number {
  let k = start;
  const neg = buf[k] === 0x2d;
  if (neg) k++;
  let mant = 0;
  let digits = 0;
  let frac = 0;
  for (; k < end && buf[k] >= 0x30 && buf[k] <= 0x39; k++, digits++) mant = mant * 10 + (buf[k] - 0x30);
  if (k < end && buf[k] === 0x2e) {
    for (k++; k < end && buf[k] >= 0x30 && buf[k] <= 0x39; k++, digits++, frac++) mant = mant * 10 + (buf[k] - 0x30);
  }
  let exp = 0;
  if (k < end) {
    k++; // e or E
    const expNeg = buf[k] === 0x2d;
    if (expNeg || buf[k] === 0x2b) k++;
    for (; k < end && exp < 1000; k++) exp = exp * 10 + (buf[k] - 0x30);
    if (expNeg) exp = -exp;
  }
  const p = exp - frac;
  if (digits > 15 || p < -22 || p > 22) return Number(buf.toString('latin1', start, end));
  const v = p >= 0 ? mant * POW10[p] : mant / POW10[-p];
  return neg ? -v : v;
}

function isLetter(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** Validates UTF-8 across chunk boundaries without decoding. */
export class Utf8Checker {
  private carry: Buffer | null = null;

  write(buf: Buffer): boolean {
    let b = buf;
    if (this.carry) {
      const needed = seqLen(this.carry[0]) - this.carry.length;
      if (buf.length < needed) {
        this.carry = Buffer.concat([this.carry, buf]);
        return true;
      }
      const head = Buffer.concat([this.carry, buf.subarray(0, needed)]);
      this.carry = null;
      if (!isUtf8(head)) return false;
      b = buf.subarray(needed);
    }
    // Hold back a sequence cut by the chunk's end; its lead byte says how long it is.
    let cut = b.length;
    for (let k = 1; k <= 3 && k <= b.length; k++) {
      const c = b[b.length - k];
      if ((c & 0xc0) === 0x80) continue;
      if (c >= 0xc0 && seqLen(c) > k) cut = b.length - k;
      break;
    }
    if (cut < b.length) this.carry = Buffer.from(b.subarray(cut));
    return isUtf8(b.subarray(0, cut));
  }

  end(): boolean {
    return this.carry === null;
  }
}

function seqLen(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}
