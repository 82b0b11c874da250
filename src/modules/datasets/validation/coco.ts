// COCO layout, checked as trainers/cvtrain/datasets/formats.py reads it:
//   annotations/instances_<split>.json with `images` and `categories` lists (and `annotations`);
//   each image's file_name looked up under images/<split>/, <split>/, images/ and the root, in
//   that order. Categories sorted by id define the class order, taken from the training split.
// Checked beyond the trainer (each would make it train on wrong data): duplicate category ids,
// ids that are not numbers or strings, image sizes in the JSON that differ from the file's.
import type { EntryConsumer } from './entries.js';
import { JsonElementStream, JsonSyntaxError, TOO_LARGE, type JsonType } from './json-stream.js';
import type { ProblemList } from './problems.js';
import { compareCodePoints } from './problems.js';
import { trainFirst, type FormatResult } from './yolo.js';
import { normalizeRelative, join, type DatasetView } from './view.js';

type Id = number | string | null;

interface CocoImage {
  id: Id;
  fileName: string;
  width: unknown;
  height: unknown;
  line: number;
}

interface CocoCategory {
  id: unknown;
  name: string;
  line: number;
}

const enum Bbox {
  Ok,
  NotList,
  NotNumbers,
  NotFinite,
  NotPositive,
}

const BBOX_MESSAGES = ['', 'bbox must be [x, y, width, height]', 'bbox values must be numbers', 'bbox values must be finite', 'bbox width and height must be > 0'];

export interface CocoFile {
  syntax: JsonSyntaxError | null;
  topLevelType: JsonType | null;
  types: Map<string, JsonType>;
  duplicateKeys: string[];
  images: CocoImage[];
  categories: CocoCategory[];
  /** Problems found while reading (line of the element). */
  early: { line: number; message: string }[];
  // Annotations, column-wise: a COCO file can hold a million of them.
  annIds: unknown[];
  annImage: unknown[];
  annCategory: unknown[];
  annBox: number[];
  annBoxState: number[];
  annLine: number[];
}

// Python float() accepts numeric strings too; COCO writers emit numbers, but the trainer would take "12.5".
const NUMERIC_STRING = /^\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*$|^\s*[+-]?(?:inf|infinity|nan)\s*$/i;

function toFloat(v: unknown): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'string' && NUMERIC_STRING.test(v)) {
    const t = v.trim().toLowerCase().replace(/^\+/, '');
    if (t.endsWith('nan')) return NaN;
    if (t.endsWith('inf') || t.endsWith('infinity')) return t.startsWith('-') ? -Infinity : Infinity;
    return Number(t);
  }
  return null;
}

/** Python's str() of a JSON value, for messages that quote ids and boxes. */
export function pyRepr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (v === true) return 'True';
  if (v === false) return 'False';
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return Number.isNaN(v) ? 'nan' : v === Infinity ? 'inf' : v === -Infinity ? '-inf' : String(v);
  if (Array.isArray(v)) return `[${v.map((x) => (typeof x === 'string' ? `'${x}'` : pyRepr(x))).join(', ')}]`;
  return JSON.stringify(v);
}

const KEEP: Record<string, Set<string>> = {
  images: new Set(['id', 'file_name', 'width', 'height']),
  annotations: new Set(['id', 'image_id', 'category_id', 'bbox']),
  categories: new Set(['id', 'name']),
};

export class CocoParser implements EntryConsumer {
  readonly file: CocoFile = {
    syntax: null,
    topLevelType: null,
    types: new Map(),
    duplicateKeys: [],
    images: [],
    categories: [],
    early: [],
    annIds: [],
    annImage: [],
    annCategory: [],
    annBox: [],
    annBoxState: [],
    annLine: [],
  };
  private readonly json: JsonElementStream;
  private readonly imageIds = new Set<unknown>();
  private readonly annIdSeen = new Set<unknown>();

  constructor(private readonly onEnd: (file: CocoFile) => void) {
    const f = this.file;
    this.json = new JsonElementStream({
      topLevel: (type) => {
        f.topLevelType = type;
      },
      topKey: (key, type) => {
        f.types.set(key, type);
        return key === 'images' || key === 'annotations' || key === 'categories';
      },
      keepKey: (top, key) => KEEP[top]?.has(key) ?? false,
      element: (top, value, line) => this.element(top, value, line),
    });
  }

  write(chunk: Buffer): void {
    if (this.file.syntax) return;
    try {
      this.json.write(chunk);
    } catch (err) {
      if (!(err instanceof JsonSyntaxError)) throw err;
      this.file.syntax = err;
    }
  }

  end(): void {
    if (!this.file.syntax) {
      try {
        this.json.end();
      } catch (err) {
        if (!(err instanceof JsonSyntaxError)) throw err;
        this.file.syntax = err;
      }
    }
    this.file.duplicateKeys = this.json.duplicateTopKeys;
    this.onEnd(this.file);
  }

  private element(top: string, value: unknown, line: number): void {
    const f = this.file;
    const obj = value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
    if (value === TOO_LARGE) {
      f.early.push({ line, message: `an element of \`${top}\` is too large to be a COCO ${top.replace(/s$/, '')}` });
      return;
    }
    if (top === 'images') {
      if (!obj || !('id' in obj) || !('file_name' in obj)) {
        f.early.push({ line, message: 'image entry without id or file_name' });
        return;
      }
      if (!isIdValue(obj.id)) {
        f.early.push({ line, message: `image id ${pyRepr(obj.id)} must be a number or a string` });
        return;
      }
      if (this.imageIds.has(obj.id)) {
        f.early.push({ line, message: `duplicate image id ${pyRepr(obj.id)}` });
        return;
      }
      this.imageIds.add(obj.id);
      f.images.push({ id: obj.id as Id, fileName: pyRepr(obj.file_name), width: obj.width, height: obj.height, line });
    } else if (top === 'categories') {
      // The trainer silently drops categories that are not objects with an id.
      if (obj && 'id' in obj) f.categories.push({ id: obj.id, name: 'name' in obj ? pyRepr(obj.name) : pyRepr(obj.id), line });
    } else {
      if (!obj) {
        f.early.push({ line, message: 'annotation is not an object' });
        return;
      }
      const aid = 'id' in obj ? obj.id : null;
      if (aid !== null && aid !== undefined) {
        if (isIdValue(aid) && this.annIdSeen.has(aid)) f.early.push({ line, message: `duplicate annotation id ${pyRepr(aid)}` });
        this.annIdSeen.add(aid);
      }
      f.annIds.push(aid);
      f.annImage.push(obj.image_id);
      f.annCategory.push(obj.category_id);
      f.annLine.push(line);
      const bbox = obj.bbox;
      let state = Bbox.Ok;
      let b = [0, 0, 0, 0];
      if (!Array.isArray(bbox) || bbox.length !== 4) state = Bbox.NotList;
      else {
        const nums = bbox.map(toFloat);
        if (nums.some((n) => n === null)) state = Bbox.NotNumbers;
        else {
          b = nums as number[];
          if (!b.every(Number.isFinite)) state = Bbox.NotFinite;
          else if (b[2] <= 0 || b[3] <= 0) state = Bbox.NotPositive;
        }
      }
      f.annBox.push(b[0], b[1], b[2], b[3]);
      f.annBoxState.push(state);
    }
  }
}

function isIdValue(v: unknown): boolean {
  return typeof v === 'number' || typeof v === 'string';
}

/** Python's `file_name` lookup: the first candidate inside the root that exists; none once one climbs out. */
function resolveImage(view: DatasetView, split: string, fileName: string): string | null {
  const root = view.root;
  for (const base of [join(root, `images/${split}`), join(root, split), join(root, 'images'), root]) {
    const candidate = normalizeRelative(fileName.startsWith('/') ? fileName : join(base, fileName));
    if (candidate === null || (root ? !candidate.startsWith(`${root}/`) : candidate === '')) return null;
    if (view.isFile(candidate)) return candidate;
  }
  return null;
}

export function cocoSplitFiles(view: DatasetView): { split: string; path: string }[] {
  const dir = view.at('annotations');
  return view
    .childFiles(dir)
    .map((path) => ({ path, base: path.slice(dir.length + (dir ? 1 : 0)) }))
    .filter(({ base }) => base.startsWith('instances_') && base.endsWith('.json'))
    .map(({ path, base }) => ({ path, split: base.slice('instances_'.length, -'.json'.length) }));
}

export function checkCoco(view: DatasetView, problems: ProblemList): FormatResult {
  const result: FormatResult = { classNames: [], splits: {} };
  const files = cocoSplitFiles(view);
  const bySplit = new Map(files.map((f) => [f.split, f.path]));
  let classIds: unknown[] | null = null;
  for (const split of trainFirst([...bySplit.keys()])) {
    const path = bySplit.get(split)!;
    const facts = view.files.get(path);
    if (!facts?.coco || facts.damaged) continue;
    const coco = facts.coco;
    const summary = checkSplit(view, problems, split, path, coco, classIds);
    if (!summary) continue;
    if (classIds === null) {
      classIds = summary.classIds;
      result.classNames = summary.classNames;
    }
    result.splits[split] = { images: summary.images, boxes: summary.boxes };
  }
  return result;
}

function checkSplit(
  view: DatasetView,
  problems: ProblemList,
  split: string,
  path: string,
  f: CocoFile,
  fixedClassIds: unknown[] | null,
): { classIds: unknown[]; classNames: string[]; images: number; boxes: number } | null {
  if (f.syntax) {
    problems.add(path, f.syntax.line, `not valid JSON: ${f.syntax.reason} (column ${f.syntax.column})`);
    return null;
  }
  if (f.topLevelType !== null || f.types.get('images') !== 'array' || f.types.get('categories') !== 'array') {
    const missing = ['images', 'categories'].filter((k) => f.topLevelType === null && !f.types.has(k));
    problems.add(
      path,
      null,
      `needs \`images\` and \`categories\` lists${f.topLevelType !== null ? ` (the file holds a JSON ${f.topLevelType}, not an object)` : missing.length ? ` (missing: ${missing.join(', ')})` : ''}`,
    );
    return null;
  }
  const annType = f.types.get('annotations');
  if (annType !== undefined && annType !== 'array' && annType !== 'null') {
    problems.add(path, null, '`annotations` must be a list');
    return null;
  }
  for (const key of f.duplicateKeys) problems.add(path, null, `key \`${key}\` appears twice at the top level (only the last one counts)`);
  for (const p of f.early) problems.add(path, p.line, p.message);

  // Categories: sorted by id; the trainer's sort fails outright on mixed id types.
  const cats = [...f.categories];
  const numeric = cats.every((c) => typeof c.id === 'number');
  const textual = cats.every((c) => typeof c.id === 'string');
  if (!numeric && !textual) {
    problems.add(path, cats.find((c) => typeof c.id !== typeof cats[0].id)?.line ?? null, 'category ids must all be numbers (or all strings)');
    return null;
  }
  cats.sort((a, b) => (numeric ? (a.id as number) - (b.id as number) : compareCodePoints(a.id as string, b.id as string)));
  const seenCat = new Set<unknown>();
  for (const c of cats) {
    if (seenCat.has(c.id)) problems.add(path, c.line, `duplicate category id ${pyRepr(c.id)}`);
    seenCat.add(c.id);
  }
  const classIds = fixedClassIds ?? [...seenCat];
  if (!classIds.length) {
    problems.add(path, null, 'no categories');
    return null;
  }
  const namesById = new Map<unknown, string>();
  for (const c of cats) namesById.set(c.id, c.name);
  const classNames = classIds.map((id) => namesById.get(id) ?? pyRepr(id));
  const known = new Set(classIds);

  // Images: resolve files, compare sizes with the file headers.
  interface Resolved {
    img: CocoImage;
    file: string | null;
    width: number | null;
    height: number | null;
    bad: boolean;
    boxes: number;
  }
  const byId = new Map<unknown, Resolved>();
  for (const img of f.images) {
    const file = resolveImage(view, split, img.fileName);
    const r: Resolved = { img, file, width: null, height: null, bad: false, boxes: 0 };
    const jw = typeof img.width === 'number' ? img.width : null;
    const jh = typeof img.height === 'number' ? img.height : null;
    r.width = jw;
    r.height = jh;
    if (file === null) {
      problems.add(path, img.line, `image ${pyRepr(img.id)}: file ${img.fileName} not found`);
      r.bad = true;
    } else {
      const facts = view.files.get(file);
      const info = facts?.image;
      if (facts?.damaged) {
        r.bad = true;
      } else if (!info || info.error) {
        problems.add(file, null, `image does not decode: ${info?.error ?? 'not read'}`);
        r.bad = true;
      } else if (info.width !== null && info.height !== null) {
        if ((jw !== null && jw !== info.width) || (jh !== null && jh !== info.height)) {
          problems.add(
            path,
            img.line,
            `image ${pyRepr(img.id)}: ${img.fileName} is ${info.width}x${info.height} pixels but the annotation file says ${pyRepr(img.width)}x${pyRepr(img.height)}`,
          );
          r.bad = true;
        }
        // Without sizes in the JSON, boxes are checked against the file's real size.
        r.width = jw ?? info.width;
        r.height = jh ?? info.height;
      }
    }
    byId.set(img.id, r);
  }

  // Annotations.
  for (let k = 0; k < f.annIds.length; k++) {
    const aid = pyRepr(f.annIds[k]);
    const iid = f.annImage[k];
    const line = f.annLine[k];
    const r = byId.get(iid);
    if (!r) {
      problems.add(path, line, `annotation ${aid} refers to unknown image ${pyRepr(iid)}`);
      continue;
    }
    let problem: string | null = null;
    const cat = f.annCategory[k];
    if (!known.has(cat)) problem = `category_id ${pyRepr(cat)} is not a known category`;
    else if (f.annBoxState[k] !== Bbox.Ok) problem = BBOX_MESSAGES[f.annBoxState[k]];
    else {
      const [x, y, w, h] = f.annBox.slice(4 * k, 4 * k + 4);
      // COCO boxes are often rounded outward by up to a pixel: the trainer's tolerance.
      const tol = 1;
      if (x < -tol || y < -tol || (r.width !== null && x + w > r.width + tol) || (r.height !== null && y + h > r.height + tol)) {
        problem = `box [${[x, y, w, h].map((v) => pyRepr(v)).join(', ')}] outside the image (${r.width ?? '?'}x${r.height ?? '?'})`;
      }
    }
    if (problem) {
      problems.add(path, line, `annotation ${aid} (image ${pyRepr(iid)}): ${problem}`);
      r.bad = true;
      continue;
    }
    r.boxes++;
  }
  let images = 0;
  let boxes = 0;
  for (const r of byId.values()) {
    if (r.bad) continue;
    images++;
    boxes += r.boxes;
  }
  return { classIds, classNames, images, boxes };
}
