// YOLO layout, checked exactly as trainers/cvtrain/datasets/formats.py reads it:
//   data.yaml with `names` (a list, or a map {0: a, 1: b} with keys 0..N-1), optional `nc`,
//   images/<split>/** (any depth), labels/<split>/<same relative stem>.txt with lines
//   `class cx cy w h`, normalised. An image without a label file is a background image.
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { EntryConsumer } from './entries.js';
import { IMAGE_EXTENSIONS, isImageName } from './images.js';
import type { ProblemList } from './problems.js';
import type { SplitSummary } from './types.js';
import { join, type DatasetView } from './view.js';

// Python's str.split() separators (str.isspace): unlike JS's \s it includes \x1c-\x1f and \x85
// and excludes \ufeff, so a BOM-prefixed first value fails to parse in both.
const PY_TOKEN = /[^\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/g;
// What Python's float() accepts (ASCII digits; underscores between digits; inf/nan words).
const PY_FLOAT = /^[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d(?:_?\d)*)?$/;
const PY_SPECIAL = /^([+-]?)(inf|infinity|nan)$/i;

function pyFloat(s: string): number | null {
  if (PY_FLOAT.test(s)) return Number(s.replace(/_/g, ''));
  const m = PY_SPECIAL.exec(s);
  if (!m) return null;
  if (m[2].toLowerCase() === 'nan') return NaN;
  return m[1] === '-' ? -Infinity : Infinity;
}

/** Parsed label lines. Class ids are judged once data.yaml is known (it may come later in the archive). */
export interface LabelFile {
  /** Problems that do not depend on the class count, by line. */
  early: { line: number; message: string }[];
  /** Lines with five numbers: class value, raw class text, and a coordinate problem if any. */
  classValues: number[];
  classLines: number[];
  classRaw: string[];
  coordProblems: Map<number, string>;
}

export class LabelParser implements EntryConsumer {
  // Bytes of a UTF-8 sequence cut by the end of the previous chunk (rare: labels are ASCII).
  // Not a StringDecoder: that allocates a native buffer per file, and label files are many.
  private carry: Buffer | null = null;
  private rest = '';
  private lineNo = 0;
  readonly file: LabelFile = { early: [], classValues: [], classLines: [], classRaw: [], coordProblems: new Map() };

  constructor(private readonly onEnd: (file: LabelFile) => void) {}

  write(chunk: Buffer): void {
    let buf = this.carry ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = null;
    const cut = utf8Boundary(buf);
    if (cut < buf.length) {
      this.carry = Buffer.from(buf.subarray(cut));
      buf = buf.subarray(0, cut);
    }
    const text = this.rest + buf.toString('utf8');
    // Python's universal newlines: \r\n, \r and \n; a trailing \r may be the first half of \r\n.
    const end = text.endsWith('\r') ? text.length - 1 : text.length;
    const lastBreak = Math.max(text.lastIndexOf('\n', end - 1), text.lastIndexOf('\r', end - 1));
    if (lastBreak < 0) {
      this.rest = text;
      return;
    }
    this.rest = text.slice(lastBreak + 1);
    const lines = text.slice(0, lastBreak + 1).split(/\r\n|\r|\n/);
    lines.pop(); // the empty string after the final break
    for (const line of lines) this.line(line);
  }

  end(): void {
    // Undecodable bytes become U+FFFD, like Python's errors="replace".
    const tail = this.rest + (this.carry ? this.carry.toString('utf8') : '');
    this.rest = '';
    this.carry = null;
    if (tail) for (const line of tail.split(/\r\n|\r|\n/)) this.line(line);
    this.onEnd(this.file);
  }

  private line(line: string): void {
    const lineNo = ++this.lineNo;
    const parts = line.match(PY_TOKEN);
    if (!parts) return;
    if (parts.length !== 5) {
      this.file.early.push({ line: lineNo, message: `expected 5 values (class cx cy w h), found ${parts.length}` });
      return;
    }
    const values = parts.map(pyFloat);
    if (values.some((v) => v === null)) {
      this.file.early.push({ line: lineNo, message: 'values must be numbers' });
      return;
    }
    const [cls, cx, cy, w, h] = values as number[];
    this.file.classValues.push(cls);
    this.file.classLines.push(lineNo);
    this.file.classRaw.push(parts[0]);
    const coord = coordinateProblem(cx, cy, w, h);
    if (coord) this.file.coordProblems.set(lineNo, coord);
  }
}

/** Where a UTF-8 sequence cut by the end of `buf` begins (buf.length when none is cut). */
function utf8Boundary(buf: Buffer): number {
  for (let k = 1; k <= 3 && k <= buf.length; k++) {
    const c = buf[buf.length - k];
    if ((c & 0xc0) === 0x80) continue;
    const len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return len > k ? buf.length - k : buf.length;
  }
  return buf.length;
}

function coordinateProblem(cx: number, cy: number, w: number, h: number): string | null {
  const vals = [cx, cy, w, h];
  if (!vals.every(Number.isFinite)) return 'coordinates must be finite';
  if (w <= 0 || h <= 0) return 'box width and height must be > 0';
  if (Math.min(...vals) < 0 || Math.max(...vals) > 1) return `coordinates outside 0..1 (${vals.join(' ')})`;
  // Same tolerance as the trainer: rounding to 6 decimals can push an edge box out by ~1e-6.
  const tol = 1e-6;
  if (Math.min(cx - w / 2, cy - h / 2) < -tol || Math.max(cx + w / 2, cy + h / 2) > 1 + tol) {
    return `box extends past the image edge (x ${fmt(cx - w / 2)}..${fmt(cx + w / 2)}, y ${fmt(cy - h / 2)}..${fmt(cy + h / 2)}; must stay within 0..1)`;
  }
  return null;
}

function fmt(v: number): string {
  return String(Number(v.toFixed(6)));
}

/** The problems of one label file given the class count; null classes: data.yaml unusable, class ids unchecked. */
export function labelProblems(file: LabelFile, classes: number | null): { line: number; message: string }[] {
  const out = [...file.early];
  for (let k = 0; k < file.classValues.length; k++) {
    const v = file.classValues[k];
    const line = file.classLines[k];
    if (classes !== null && (!Number.isInteger(v) || v < 0 || v >= classes)) {
      out.push({ line, message: `class id ${file.classRaw[k]} out of range 0..${classes - 1}` });
      continue;
    }
    if (classes === null && !Number.isFinite(v)) {
      out.push({ line, message: `class id ${file.classRaw[k]} is not a number the trainer can use` });
      continue;
    }
    const coord = file.coordProblems.get(line);
    if (coord) out.push({ line, message: coord });
  }
  return out.sort((a, b) => a.line - b.line);
}

// --- data.yaml ------------------------------------------------------------------------------------

/** Python's str() of what PyYAML returns for a scalar, so class names read the same. */
function pyStr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'number' && Number.isInteger(v) && !Object.is(v, -0)) return String(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v).replace(/^(-?\d+)$/, '$1.0') : Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  if (typeof v === 'string') return v;
  return JSON.stringify(v);
}

const INT_KEY = /^\s*[+-]?\d+\s*$/;

export function parseDataYaml(text: Buffer | null, path: string, problems: ProblemList): string[] | null {
  if (text === null) {
    problems.add(path, null, 'data.yaml is too large to be a YOLO data file');
    return null;
  }
  let meta: unknown;
  try {
    // YAML 1.1 like PyYAML's safe_load (yes/no are booleans); duplicate keys allowed (the last wins) as there.
    meta = parseYaml(text.toString('utf8'), { version: '1.1', uniqueKeys: false, maxAliasCount: 1000 });
  } catch (err) {
    if (err instanceof YAMLParseError) {
      problems.add(path, err.linePos?.[0]?.line ?? null, `not valid YAML: ${err.message.split('\n')[0]}`);
    } else {
      problems.add(path, null, `not valid YAML: ${(err as Error).message}`);
    }
    return null;
  }
  if (meta === null || meta === undefined) meta = {};
  let names: unknown = typeof meta === 'object' && !Array.isArray(meta) ? (meta as Record<string, unknown>).names : undefined;
  if (names instanceof Map) names = Object.fromEntries(names);
  if (names !== null && typeof names === 'object' && !Array.isArray(names)) {
    const map = names as Record<string, unknown>;
    const keys = Object.keys(map);
    if (!keys.every((k) => INT_KEY.test(k))) {
      problems.add(path, null, '`names` keys must be class ids 0..N-1');
      return null;
    }
    const ids = keys.map((k) => parseInt(k, 10)).sort((a, b) => a - b);
    if (ids.some((id, i) => id !== i)) {
      problems.add(path, null, `\`names\` keys must be 0..${ids.length - 1} without gaps`);
      return null;
    }
    const byId = new Map(keys.map((k) => [parseInt(k, 10), map[k]]));
    names = ids.map((id) => byId.get(id));
  }
  if (!Array.isArray(names) || names.length === 0) {
    problems.add(path, null, '`names` must be a non-empty list of class names (or a map {0: name, 1: name, ...})');
    return null;
  }
  const nc = (meta as Record<string, unknown>).nc;
  if (nc !== undefined && nc !== null && !(typeof nc === 'number' && nc === names.length) && !(typeof nc === 'boolean' && Number(nc) === names.length)) {
    problems.add(path, null, `nc is ${pyStr(nc)} but \`names\` has ${names.length} entries`);
    return null;
  }
  return names.map(pyStr);
}

// --- the layout ---------------------------------------------------------------------------------------

export interface FormatResult {
  classNames: string[];
  splits: Record<string, SplitSummary>;
}

export function trainFirst(splits: string[]): string[] {
  // The training split fixes class order for the others, as in the trainer's validate-dataset.
  return [...splits].sort((a, b) => (a === 'train' ? -1 : b === 'train' ? 1 : 0) || (a < b ? -1 : a > b ? 1 : 0));
}

export function notAnImage(path: string, problems: ProblemList): void {
  problems.add(path, null, `not an image the trainer reads (it reads ${IMAGE_EXTENSIONS.join(' ')}); remove it or convert it`);
}

export function checkYolo(view: DatasetView, problems: ProblemList): FormatResult {
  const yamlPath = view.at('data.yaml');
  const yamlFacts = view.files.get(yamlPath);
  let names: string[] | null = null;
  if (!yamlFacts) {
    problems.add(yamlPath, null, 'missing data.yaml: a YOLO dataset needs data.yaml with the class `names`');
  } else {
    if (!yamlFacts.damaged) names = parseDataYaml(yamlFacts.yaml ?? null, yamlPath, problems);
  }
  const result: FormatResult = { classNames: names ?? [], splits: {} };
  const imagesDir = view.at('images');
  const labelsDir = view.at('labels');
  const splits = trainFirst(view.childDirs(imagesDir));
  if (!splits.length) {
    problems.add(view.at('images/'), null, 'no splits found: a YOLO dataset needs images/<split>/ folders (e.g. images/train, images/val)');
  }
  for (const split of splits) {
    const imgDir = join(imagesDir, split);
    const lblDir = join(labelsDir, split);
    const images: string[] = [];
    for (const f of view.filesUnder(imgDir)) {
      if (isImageName(f)) images.push(f);
      else notAnImage(f, problems);
    }
    const stems = new Map<string, string>();
    for (const img of images) {
      const stem = stripExt(img.slice(imgDir.length + 1));
      if (stems.has(stem)) problems.add(img, null, `two images share the label name ${stem}.txt`);
      stems.set(stem, img);
    }
    for (const f of view.filesUnder(lblDir)) {
      if (!f.endsWith('.txt')) continue;
      if (!stems.has(stripExt(f.slice(lblDir.length + 1)))) problems.add(f, null, 'label file without image');
    }
    let usable = 0;
    let boxes = 0;
    for (const img of images) {
      const stem = stripExt(img.slice(imgDir.length + 1));
      const labelPath = `${lblDir}/${stem}.txt`;
      const labelFacts = view.files.get(labelPath);
      const label = labelFacts?.damaged ? undefined : labelFacts?.label;
      let ok = !labelFacts?.damaged;
      if (label) {
        const lp = labelProblems(label, names ? names.length : null);
        for (const p of lp) problems.add(labelPath, p.line, p.message);
        if (lp.length) ok = false;
      }
      const facts = view.files.get(img);
      const info = facts?.image;
      if (facts?.damaged) ok = false;
      else if (info?.error) {
        problems.add(img, null, `image does not decode: ${info.error}`);
        ok = false;
      }
      if (ok) {
        usable++;
        boxes += label ? label.classValues.length : 0;
      }
    }
    result.splits[split] = { images: usable, boxes };
  }
  // Label folders of splits without images are never read by the trainer: every file there is orphaned.
  for (const split of view.childDirs(labelsDir)) {
    if (view.isDir(join(imagesDir, split))) continue;
    for (const f of view.filesUnder(join(labelsDir, split))) {
      if (f.endsWith('.txt')) problems.add(f, null, `label file without image (there is no images/${split}/ folder)`);
    }
  }
  return result;
}

function stripExt(rel: string): string {
  const slash = rel.lastIndexOf('/');
  const dot = rel.lastIndexOf('.');
  // os.path.splitext: a leading dot of the base name does not start an extension.
  if (dot <= slash + 1) return rel;
  let k = slash + 1;
  while (k < dot && rel[k] === '.') k++;
  return k === dot ? rel : rel.slice(0, dot);
}
