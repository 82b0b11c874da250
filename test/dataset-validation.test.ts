// Streaming validation of uploaded dataset archives (issue 3). Archives are built in memory
// with test/helpers/archives.ts; valid datasets come from the trainers' own generator, and the
// trainers' validate-dataset is run on the same folders so both sides are held to one answer.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fileSource,
  validateDatasetArchive,
  type DatasetFormat,
  type RandomAccessSource,
  type ValidationReport,
} from '../src/modules/datasets/validation/index.js';
import { ImageChecker } from '../src/modules/datasets/validation/images.js';
import { JsonElementStream, JsonSyntaxError } from '../src/modules/datasets/validation/json-stream.js';
import { GIF_1X1, makeBmp, makePng, makeTar, makeTarGz, makeZip, paxHeader, tarHeader, tarPadding, type EntrySpec } from './helpers/archives.js';

const run = promisify(execFile);
const repo = path.resolve(import.meta.dirname, '..');
const PY = '/usr/bin/python3';
const pyEnv = { ...process.env, PYTHONPATH: path.join(repo, 'trainers') };

let work: string;
let jpeg: Buffer; // a real 64x64 JPEG from the trainers' generator
const datasets: Record<'yolo' | 'coco' | 'image_folder', EntrySpec[]> = { yolo: [], coco: [], image_folder: [] };
let trainerReports: Record<string, { classes: string[]; splits: Record<string, { images: number; boxes: number }>; valid: boolean; problems: { path: string; line: number | null }[] }>;

function dirEntries(root: string, prefix = ''): EntrySpec[] {
  const out: EntrySpec[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const full = path.join(dir, name);
      const rel = prefix + path.relative(root, full).split(path.sep).join('/');
      if (statSync(full).isDirectory()) {
        out.push({ name: `${rel}/` });
        walk(full);
      } else {
        out.push({ name: rel, data: readFileSync(full) });
      }
    }
  };
  walk(root);
  return out;
}

/** Runs the trainers' validate-dataset on several folders in one Python process (torch imports once). */
async function trainerValidate(dirs: Record<string, [string, string]>) {
  const code = `
import json, sys
from cvtrain.datasets.validate import validate_dataset
jobs = json.loads(sys.argv[1])
out = {}
for key, (d, fmt) in jobs.items():
    r = validate_dataset(d, fmt, check_images=True)
    out[key] = {"classes": r["classes"], "splits": r["splits"], "valid": r["valid"],
                "problems": [{"path": p["path"][len(r["path"]) + 1:], "line": p["line"]} for p in r["problems"]]}
print(json.dumps(out))`;
  const { stdout } = await run(PY, ['-c', code, JSON.stringify(dirs)], { env: pyEnv, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout);
}

function chunks(buf: Buffer, size = 16 * 1024): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
  return out;
}

function bufferSource(buf: Buffer): RandomAccessSource {
  return { size: buf.length, read: (start, end) => Readable.from(chunks(buf.subarray(start, end))) };
}

function validate(buf: Buffer, archiveName: string, format: DatasetFormat, extra: Partial<Parameters<typeof validateDatasetArchive>[1]> = {}) {
  // Zips get random access (as storage provides), tarballs a plain stream: the production paths.
  const input = archiveName.endsWith('.zip') ? bufferSource(buf) : Readable.from(chunks(buf));
  return validateDatasetArchive(input, { format, archiveName, ...extra });
}

const lines = (r: ValidationReport) => r.problems.map((p) => `${p.path}${p.line !== null ? `:${p.line}` : ''}: ${p.message}`);

function yoloBase(): EntrySpec[] {
  return [
    { name: 'data.yaml', data: 'names: [cat, dog]\n' },
    { name: 'images/train/a.jpg', data: jpeg },
    { name: 'labels/train/a.txt', data: '0 0.5 0.5 0.2 0.2\n' },
  ];
}

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'cvtrain-dv-test-'));
  await Promise.all(
    (['yolo', 'coco', 'image_folder'] as const).map((fmt) =>
      run(PY, ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', path.join(work, fmt), '--format', fmt, '--images', '8', '--seed', '3', '--size', '64'], {
        env: pyEnv,
      }),
    ),
  );
  for (const fmt of ['yolo', 'coco', 'image_folder'] as const) datasets[fmt] = dirEntries(path.join(work, fmt));
  jpeg = readFileSync(path.join(work, 'yolo/images/train/img_00000.jpg'));
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('valid datasets from the trainers generator', () => {
  beforeAll(async () => {
    trainerReports = await trainerValidate({
      yolo: [path.join(work, 'yolo'), 'yolo'],
      coco: [path.join(work, 'coco'), 'coco'],
      image_folder: [path.join(work, 'image_folder'), 'image_folder'],
    });
  }, 60_000);

  const cases: [keyof typeof datasets, DatasetFormat, string][] = [
    ['yolo', 'YOLO', 'shapes.tar.gz'],
    ['coco', 'COCO', 'shapes.zip'],
    ['image_folder', 'IMAGE_FOLDER', 'shapes.tgz'],
  ];
  for (const [key, format, name] of cases) {
    it(`${format} in ${name} is READY with the same classes and counts as the trainer reports`, async () => {
      const archive = name.endsWith('.zip') ? makeZip(datasets[key]) : makeTarGz(datasets[key]);
      const r = await validate(archive, name, format);
      expect(lines(r)).toEqual([]);
      expect(r.status).toBe('READY');
      const trainer = trainerReports[key];
      expect(trainer.valid).toBe(true);
      expect(r.classNames).toEqual(trainer.classes);
      expect(r.classNames).toEqual(['circle', 'square', 'triangle']);
      for (const [split, s] of Object.entries(trainer.splits)) expect(r.splits[split]).toEqual({ images: s.images, boxes: s.boxes });
      expect(Object.keys(r.splits).sort()).toEqual(Object.keys(trainer.splits).sort());
      expect(r.sha256).toBe(createHash('sha256').update(archive).digest('hex'));
      expect(r.sizeBytes).toBe(archive.length);
      expect(r.entries).toBe(datasets[key].length);
      const content = datasets[key].reduce((s, e) => s + (e.data ? Buffer.byteLength(e.data) : 0), 0);
      expect(r.uncompressedBytes).toBe(content);
      expect(r.root).toBe('');
    });
  }

  it('reads a zip given as a plain stream by spooling it into its own temp folder, removed afterwards', async () => {
    const tmp = mkdtempSync(path.join(work, 'spool-'));
    const archive = makeZip(datasets.yolo);
    const r = await validateDatasetArchive(Readable.from(chunks(archive)), { format: 'YOLO', archiveName: 'x.zip', tempDir: tmp });
    expect(r.status).toBe('READY');
    expect(r.sha256).toBe(createHash('sha256').update(archive).digest('hex'));
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('reads a tarball from a random-access source and a zip from a local file', async () => {
    const tgz = makeTarGz(datasets.coco);
    expect((await validateDatasetArchive(bufferSource(tgz), { format: 'COCO', archiveName: 'c.tar.gz' })).status).toBe('READY');
    const file = path.join(work, 'coco.zip');
    writeFileSync(file, makeZip(datasets.coco));
    const r = await validateDatasetArchive(await fileSource(file), { format: 'COCO', archiveName: 'coco.zip' });
    expect(r.status).toBe('READY');
    expect(r.sizeBytes).toBe(statSync(file).size);
  });

  it('accepts a dataset wrapped in one folder and reports that folder as the root', async () => {
    const wrapped = datasets.yolo.map((e) => ({ ...e, name: `my data/${e.name}` }));
    const r = await validate(makeZip([{ name: 'my data/' }, ...wrapped]), 'w.zip', 'YOLO');
    expect(lines(r)).toEqual([]);
    expect(r.root).toBe('my data/');
    expect(r.splits.train.images).toBe(trainerReports.yolo.splits.train.images);
    const folder = datasets.image_folder.map((e) => ({ ...e, name: `shapes/${e.name}` }));
    const f = await validate(makeTarGz(folder), 'f.tar.gz', 'IMAGE_FOLDER');
    expect(f.status).toBe('READY');
    expect(f.root).toBe('shapes/');
    expect(Object.keys(f.splits).sort()).toEqual(['train', 'val']);
  });

  it('reads zips written by streaming zippers (sizes after the data) and skips macOS clutter', async () => {
    const entries = datasets.yolo.map((e) => ({ ...e, method: 'store' as const, dataDescriptor: true }));
    entries.push(
      { name: '__MACOSX/images/train/._img_00000.jpg', data: 'not a jpeg', method: 'store', dataDescriptor: true },
      { name: 'images/train/._img_00001.jpg', data: 'resource fork', method: 'store', dataDescriptor: true },
      { name: '.DS_Store', data: 'x', method: 'store', dataDescriptor: true },
    );
    const r = await validate(makeZip(entries), 'mac.zip', 'YOLO');
    expect(lines(r)).toEqual([]);
    expect(r.splits.train.images).toBe(trainerReports.yolo.splits.train.images);
  });

  it('reads zip64 archives', async () => {
    const r = await validate(makeZip(datasets.coco, { zip64: true }), 'z64.zip', 'COCO');
    expect(lines(r)).toEqual([]);
    expect(r.splits).toEqual({ train: { images: trainerReports.coco.splits.train.images, boxes: trainerReports.coco.splits.train.boxes }, val: expect.any(Object) });
  });

  it("reads what Python's zipfile and tarfile (GNU and PAX, long and non-ASCII names) write", async () => {
    const out = path.join(work, 'pywriters');
    mkdirSync(out);
    const code = `
import os, sys, shutil, tarfile, zipfile
src, out = sys.argv[1], sys.argv[2]
ds = os.path.join(out, 'ds')
shutil.copytree(src, ds)
deep = 'd' * 120
os.makedirs(os.path.join(ds, 'images', 'train', deep))
os.makedirs(os.path.join(ds, 'labels', 'train', deep))
shutil.copy(os.path.join(ds, 'images', 'train', 'img_00000.jpg'), os.path.join(ds, 'images', 'train', deep, 'ünïcødé.jpg'))
with open(os.path.join(ds, 'labels', 'train', deep, 'ünïcødé.txt'), 'w') as fh:
    fh.write('0 0.5 0.5 0.2 0.2\\n')
with zipfile.ZipFile(os.path.join(out, 'ds.zip'), 'w', zipfile.ZIP_DEFLATED) as z:
    for root, dirs, files in os.walk(ds):
        for f in files:
            full = os.path.join(root, f)
            z.write(full, os.path.relpath(full, ds))
for name, fmt in (('gnu.tar.gz', tarfile.GNU_FORMAT), ('pax.tar.gz', tarfile.PAX_FORMAT)):
    with tarfile.open(os.path.join(out, name), 'w:gz', format=fmt) as t:
        t.add(ds, arcname='dataset')
`;
    await run(PY, ['-c', code, path.join(work, 'yolo'), out]);
    const expected = { ...trainerReports.yolo.splits.train };
    for (const [name, root] of [
      ['ds.zip', ''],
      ['gnu.tar.gz', 'dataset/'],
      ['pax.tar.gz', 'dataset/'],
    ]) {
      const r = await validateDatasetArchive(name.endsWith('.zip') ? await fileSource(path.join(out, name)) : Readable.from([readFileSync(path.join(out, name))]), {
        format: 'YOLO',
        archiveName: name,
      });
      expect(lines(r)).toEqual([]);
      expect(r.root).toBe(root);
      expect(r.splits.train).toEqual({ images: expected.images + 1, boxes: expected.boxes + 1 });
    }
  });

  it('rejects (rather than reporting) when the bytes cannot be read', async () => {
    const failing = () =>
      new Readable({
        read() {
          this.destroy(new Error('connection reset by storage'));
        },
      });
    await expect(validateDatasetArchive(failing(), { format: 'YOLO', archiveName: 'a.tar.gz' })).rejects.toThrow('connection reset by storage');
    const tmp = mkdtempSync(path.join(work, 'spool-fail-'));
    await expect(validateDatasetArchive(failing(), { format: 'YOLO', archiveName: 'a.zip', tempDir: tmp })).rejects.toThrow('connection reset by storage');
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('stops when its AbortSignal fires', async () => {
    const controller = new AbortController();
    controller.abort(new Error('finalize timed out'));
    await expect(
      validateDatasetArchive(Readable.from(chunks(makeTarGz(datasets.yolo))), { format: 'YOLO', archiveName: 'a.tar.gz', signal: controller.signal }),
    ).rejects.toThrow('finalize timed out');
  });

  it('reads long names from ustar prefixes and PAX headers', async () => {
    const long = `images/train/${'d'.repeat(90)}/${'n'.repeat(60)}.jpg`;
    const tar = Buffer.concat([
      makeTar(
        [
          { name: 'data.yaml', data: 'names: [a]\n' },
          { name: long, data: jpeg },
          { name: long.replace('images', 'labels').replace(/\.jpg$/, '.txt'), data: '0 0.5 0.5 0.1 0.1\n' },
        ],
        { endBlocks: false },
      ),
      paxHeader({ path: `images/val/${'p'.repeat(120)}.jpg` }),
      tarHeader('ignored-by-pax.jpg', jpeg.length),
      jpeg,
      tarPadding(jpeg.length),
      Buffer.alloc(1024),
    ]);
    const r = await validate(zlib.gzipSync(tar), 'long.tar.gz', 'YOLO');
    expect(lines(r)).toEqual([]);
    expect(r.splits).toEqual({ train: { images: 1, boxes: 1 }, val: { images: 1, boxes: 0 } });
  });
});

describe('YOLO problems', () => {
  it('names the file, the line and what is wrong for every label problem, like the trainer', async () => {
    const entries: EntrySpec[] = [
      { name: 'data.yaml', data: 'names:\n  0: cat\n  1: dog\n' },
      { name: 'images/train/ok.jpg', data: jpeg },
      { name: 'labels/train/ok.txt', data: '1 0.5 0.5 0.2 0.2\n\n0 0.1 0.1 0.2 0.2\r\n' },
      { name: 'images/train/background.jpg', data: jpeg }, // no label: an image without objects
      { name: 'images/train/bad.jpg', data: jpeg },
      {
        name: 'labels/train/bad.txt',
        data: ['2 0.5 0.5 0.2 0.2', '0 0.5 0.5 0.2', 'x 0.5 0.5 0.2 0.2', '0 1.5 0.5 0.2 0.2', '0 0.95 0.5 0.2 0.2', '0 0.5 0.5 0 0.2', '1.5 0.5 0.5 0.1 0.1', ''].join('\n'),
      },
      { name: 'labels/train/orphan.txt', data: '0 0.5 0.5 0.1 0.1\n' },
      { name: 'images/train/twin.jpg', data: jpeg },
      { name: 'images/train/twin.png', data: makePng(8, 8) },
      { name: 'images/train/cut.jpg', data: jpeg.subarray(0, jpeg.length - 200) },
      { name: 'images/train/notes.md', data: 'hello' },
      { name: 'labels/test/x.txt', data: '0 0.5 0.5 0.1 0.1\n' },
    ];
    const r = await validate(makeTarGz(entries), 'y.tar.gz', 'YOLO');
    expect(r.status).toBe('INVALID');
    expect(lines(r)).toEqual([
      'images/train/cut.jpg: image does not decode: truncated JPEG (no EOI marker)',
      'images/train/notes.md: not an image the trainer reads (it reads .jpg .jpeg .png .bmp .webp .tif .tiff); remove it or convert it',
      'images/train/twin.png: two images share the label name twin.txt',
      'labels/test/x.txt: label file without image (there is no images/test/ folder)',
      'labels/train/bad.txt:1: class id 2 out of range 0..1',
      'labels/train/bad.txt:2: expected 5 values (class cx cy w h), found 4',
      'labels/train/bad.txt:3: values must be numbers',
      'labels/train/bad.txt:4: coordinates outside 0..1 (1.5 0.5 0.2 0.2)',
      'labels/train/bad.txt:5: box extends past the image edge (x 0.85..1.05, y 0.4..0.6; must stay within 0..1)',
      'labels/train/bad.txt:6: box width and height must be > 0',
      'labels/train/bad.txt:7: class id 1.5 out of range 0..1',
      'labels/train/orphan.txt: label file without image',
    ]);
    expect(r.classNames).toEqual(['cat', 'dog']);
    // ok, background and the twins are usable; bad (labels) and cut (image) are not.
    expect(r.splits.train).toEqual({ images: 4, boxes: 2 });

    // The trainer flags the same files and lines (the extra checks here: notes.md, labels/test).
    const dir = path.join(work, 'yolo-problems');
    mkdirSync(dir);
    execFileSync('tar', ['-xzf', '-', '-C', dir], { input: makeTarGz(entries) });
    const trainer = (await trainerValidate({ y: [dir, 'yolo'] })).y;
    const mine = r.problems.filter((p) => !p.path.endsWith('notes.md') && !p.path.startsWith('labels/test'));
    expect(new Set(mine.map((p) => `${p.path}:${p.line}`))).toEqual(new Set(trainer.problems.map((p: { path: string; line: number | null }) => `${p.path}:${p.line}`)));
  }, 30_000);

  it('checks data.yaml: missing, empty names, gaps, nc, invalid YAML with its line', async () => {
    const noYaml = await validate(makeZip(yoloBase().slice(1)), 'a.zip', 'YOLO');
    expect(lines(noYaml)).toEqual(['data.yaml: missing data.yaml: a YOLO dataset needs data.yaml with the class `names`']);
    const cases: [string, string][] = [
      ['names: []\n', 'data.yaml: `names` must be a non-empty list of class names (or a map {0: name, 1: name, ...})'],
      ['nc: 2\n', 'data.yaml: `names` must be a non-empty list of class names (or a map {0: name, 1: name, ...})'],
      ['names: {0: a, 2: b}\n', 'data.yaml: `names` keys must be 0..1 without gaps'],
      ['names: [a, b]\nnc: 3\n', 'data.yaml: nc is 3 but `names` has 2 entries'],
      ['names: [a, b\ntrain: x\n', 'data.yaml:'],
    ];
    for (const [yaml, expected] of cases) {
      const r = await validate(makeZip([{ name: 'data.yaml', data: yaml }, ...yoloBase().slice(1)]), 'a.zip', 'YOLO');
      expect(r.status).toBe('INVALID');
      expect(lines(r)[0].startsWith(expected)).toBe(true);
    }
    const bad = await validate(makeZip([{ name: 'data.yaml', data: 'path: .\nnames: [a, b\n' }, ...yoloBase().slice(1)]), 'a.zip', 'YOLO');
    expect(bad.problems[0]).toMatchObject({ path: 'data.yaml', message: expect.stringMatching(/^not valid YAML: /) });
    expect(bad.problems[0].line).toBeGreaterThanOrEqual(2);
    // PyYAML reads YAML 1.1: `no` is the boolean False, which the trainer turns into the name "False".
    const yes = await validate(makeZip([{ name: 'data.yaml', data: 'names: [yes, no]\n' }, ...yoloBase().slice(1)]), 'a.zip', 'YOLO');
    expect(yes.classNames).toEqual(['True', 'False']);
  });
});

describe('COCO problems', () => {
  const coco = (doc: unknown, images: EntrySpec[] = [{ name: 'images/train/a.jpg', data: jpeg }]) =>
    makeZip([{ name: 'annotations/instances_train.json', data: typeof doc === 'string' ? doc : JSON.stringify(doc, null, 1) }, ...images]);

  it('reports invalid JSON with its line', async () => {
    const r = await validate(coco('{\n "images": [],\n "categories": [\n  {"id": 1,}\n ]\n}'), 'c.zip', 'COCO');
    expect(r.problems).toEqual([
      { path: 'annotations/instances_train.json', line: 4, message: expect.stringMatching(/^not valid JSON: expecting a property name in double quotes \(column \d+\)$/) },
    ]);
    const missing = await validate(coco({ images: [] }), 'c.zip', 'COCO');
    expect(lines(missing)).toEqual(['annotations/instances_train.json: needs `images` and `categories` lists (missing: categories)']);
  });

  it('finds duplicate ids, dangling references, bad boxes, size mismatches and missing files, each with its line', async () => {
    const doc = {
      images: [
        { id: 1, file_name: 'a.jpg', width: 64, height: 64 },
        { id: 1, file_name: 'a.jpg', width: 64, height: 64 },
        { id: 2, file_name: 'missing.jpg', width: 64, height: 64 },
        { id: 3, file_name: 'b.jpg', width: 100, height: 64 },
        { id: 4, file_name: 'p.png' },
        { file_name: 'no-id.jpg' },
      ],
      annotations: [
        { id: 1, image_id: 1, category_id: 1, bbox: [1, 1, 10, 10] },
        { id: 1, image_id: 1, category_id: 1, bbox: [2, 2, 10, 10] },
        { id: 2, image_id: 99, category_id: 1, bbox: [1, 1, 10, 10] },
        { id: 3, image_id: 1, category_id: 7, bbox: [1, 1, 10, 10] },
        { id: 4, image_id: 1, category_id: 1, bbox: [1, 1, 0, 10] },
        { id: 5, image_id: 1, category_id: 1, bbox: [60, 1, 10, 10] },
        { id: 6, image_id: 4, category_id: 2, bbox: [1, 1, 30, 10] },
        { id: 7, image_id: 1, category_id: 1, bbox: [1, 1, 'x', 10] },
      ],
      categories: [
        { id: 1, name: 'cat' },
        { id: 2, name: 'dog' },
        { id: 2, name: 'dog again' },
      ],
    };
    const images = [
      { name: 'images/train/a.jpg', data: jpeg },
      { name: 'images/train/b.jpg', data: jpeg },
      { name: 'images/p.png', data: makePng(20, 20) },
    ];
    const r = await validate(coco(doc, images), 'c.zip', 'COCO');
    const json = 'annotations/instances_train.json';
    const at = (needle: string) => 1 + JSON.stringify(doc, null, 1).split('\n').findIndex((l) => l.includes(needle));
    expect(r.problems).toEqual(
      expect.arrayContaining([
        { path: json, line: expect.any(Number), message: 'duplicate image id 1' },
        { path: json, line: expect.any(Number), message: 'duplicate annotation id 1' },
        { path: json, line: expect.any(Number), message: 'duplicate category id 2' },
        { path: json, line: expect.any(Number), message: 'image entry without id or file_name' },
        { path: json, line: expect.any(Number), message: 'annotation 2 refers to unknown image 99' },
        { path: json, line: expect.any(Number), message: 'annotation 3 (image 1): category_id 7 is not a known category' },
        { path: json, line: expect.any(Number), message: 'annotation 4 (image 1): bbox width and height must be > 0' },
        { path: json, line: expect.any(Number), message: 'annotation 5 (image 1): box [60, 1, 10, 10] outside the image (64x64)' },
        { path: json, line: expect.any(Number), message: 'annotation 6 (image 4): box [1, 1, 30, 10] outside the image (20x20)' },
        { path: json, line: expect.any(Number), message: 'annotation 7 (image 1): bbox values must be numbers' },
        { path: json, line: expect.any(Number), message: 'image 2: file missing.jpg not found' },
        { path: json, line: expect.any(Number), message: 'image 3: b.jpg is 64x64 pixels but the annotation file says 100x64' },
      ]),
    );
    expect(r.problems).toHaveLength(12);
    // Lines point at the element: the second image entry starts where the second `"id": 1` of images is.
    const dup = r.problems.find((p) => p.message === 'duplicate image id 1')!;
    expect(JSON.stringify(doc, null, 1).split('\n')[dup.line! - 1].trim()).toBe('{');
    expect(r.problems.find((p) => p.message.startsWith('annotation 2 '))!.line).toBe(at('"image_id": 99') - 2);
    // With duplicate category ids the trainer's name map keeps the last one; so does this.
    expect(r.classNames).toEqual(['cat', 'dog again']);
  });

  it('parses the JSON the same in any chunking, including 1-byte chunks and multi-byte characters', () => {
    const text = Buffer.from(JSON.stringify({ info: { d: 'ünïcødé ✓ 𝄞', n: [1, 2, { x: null }] }, images: [{ id: 'é', file_name: 'ф.jpg', width: 1e2, height: -0.5e-1 }], categories: [{ id: 1, name: 'a\\"b\\u00e9' }] }));
    const collect = (size: number) => {
      const got: unknown[] = [];
      const s = new JsonElementStream({ topLevel: () => {}, topKey: () => true, keepKey: () => true, element: (k, v, line) => got.push([k, v, line]) });
      for (let i = 0; i < text.length; i += size) s.write(text.subarray(i, i + size));
      s.end();
      return got;
    };
    const whole = collect(text.length);
    expect(whole).toEqual([
      ['images', { id: 'é', file_name: 'ф.jpg', width: 100, height: -0.05 }, 1],
      ['categories', { id: 1, name: 'a\\"b\\u00e9' }, 1],
    ]);
    for (const size of [1, 2, 3, 7]) expect(collect(size)).toEqual(whole);
    const bad = new JsonElementStream({ topLevel: () => {}, topKey: () => false, keepKey: () => true, element: () => {} });
    expect(() => {
      bad.write(Buffer.from('{"a": [1, 2,\n 3]\n"b": 1}'));
      bad.end();
    }).toThrow(JsonSyntaxError);
    const nan = new JsonElementStream({ topLevel: () => {}, topKey: () => true, keepKey: () => true, element: () => {} });
    nan.write(Buffer.from('{"x": [NaN, Infinity, -Infinity]}')); // Python's json accepts these, so must we
    nan.end();
    const invalidUtf8 = new JsonElementStream({ topLevel: () => {}, topKey: () => true, keepKey: () => true, element: () => {} });
    expect(() => invalidUtf8.write(Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]))).toThrow(/invalid UTF-8/);
  });
});

describe('IMAGE_FOLDER problems', () => {
  it('flags classes training lacks, non-images, empty class folders and stray files; accepts a class validation lacks', async () => {
    const entries: EntrySpec[] = [
      { name: 'train/cat/1.jpg', data: jpeg },
      { name: 'train/cat/notes.txt', data: 'x' },
      { name: 'train/dog/1.png', data: makePng(4, 4) },
      { name: 'train/bird/' },
      { name: 'train/readme.md', data: 'x' },
      { name: 'val/cat/1.bmp', data: makeBmp(3, 2) },
      { name: 'val/fox/1.jpg', data: jpeg },
      { name: 'val/cat/bad.jpg', data: 'not a jpeg at all' },
    ];
    const r = await validate(makeZip(entries), 'f.zip', 'IMAGE_FOLDER');
    expect(lines(r)).toEqual([
      'train/bird/: class folder \'bird\' has no images',
      'train/cat/notes.txt: not an image the trainer reads (it reads .jpg .jpeg .png .bmp .webp .tif .tiff); remove it or convert it',
      'train/readme.md: file outside a class folder',
      'val/cat/bad.jpg: image does not decode: not a JPEG, PNG, GIF, BMP, WebP or TIFF file',
      "val/fox/: class 'fox' is not in the training classes (those of 'train': bird, cat, dog)",
    ]);
    // torchvision's ImageFolder order: sorted folder names.
    expect(r.classNames).toEqual(['bird', 'cat', 'dog']);
    expect(r.splits).toEqual({ train: { images: 2, boxes: 0 }, val: { images: 1, boxes: 0 } });
  });
});

describe('archive-level refusals', () => {
  it('a wrong format claim says what the archive looks like', async () => {
    const yolo = makeZip(datasets.yolo);
    const asCoco = await validate(yolo, 'y.zip', 'COCO');
    expect(lines(asCoco)).toEqual(['y.zip: no annotations/instances_*.json found; this looks like a YOLO dataset (data.yaml found)']);
    const asFolder = await validate(yolo, 'y.zip', 'IMAGE_FOLDER');
    expect(lines(asFolder)).toEqual(['y.zip: this looks like a YOLO dataset (data.yaml found), not IMAGE_FOLDER (<split>/<class>/<image>)']);
    const cocoAsYolo = await validate(makeTarGz(datasets.coco), 'c.tgz', 'YOLO');
    expect(lines(cocoAsYolo)).toEqual(['c.tgz: no data.yaml found; this looks like a COCO dataset (annotations/instances_train.json found)']);
    const folderAsCoco = await validate(makeTarGz(datasets.image_folder), 'f.tgz', 'COCO');
    expect(lines(folderAsCoco)[0]).toMatch(/^f.tgz: no annotations\/instances_\*.json found; this looks like an IMAGE_FOLDER dataset/);
  });

  it('an empty archive is INVALID', async () => {
    const emptyZip = await validate(makeZip([]), 'e.zip', 'YOLO');
    expect(lines(emptyZip)).toEqual(['e.zip: the archive is empty']);
    const emptyTgz = await validate(makeTarGz([]), 'e.tar.gz', 'COCO');
    expect(lines(emptyTgz)).toEqual(['e.tar.gz: the archive is empty']);
    const onlyDirs = await validate(makeTarGz([{ name: 'images/' }]), 'e.tar.gz', 'YOLO');
    expect(lines(onlyDirs)).toEqual(['e.tar.gz: the archive holds no files (only folders)']);
    for (const name of ['z.zip', 'z.tar.gz']) {
      const zero = await validate(Buffer.alloc(0), name, 'YOLO');
      expect(lines(zero)).toEqual([`${name}: the archive is empty (0 bytes)`]);
      expect(zero.sha256).toBe(createHash('sha256').digest('hex'));
    }
    const notZip = await validate(makeTarGz(datasets.yolo), 'wrong.zip', 'YOLO');
    expect(lines(notZip)).toEqual(['wrong.zip: not a zip file: no end of central directory record (it starts like a gzip file: name it .tar.gz)']);
    const rar = await validate(Buffer.from('Rar!'), 'x.rar', 'YOLO');
    expect(lines(rar)).toEqual(['x.rar: unsupported archive type "x.rar": upload a .zip, .tar.gz (.tgz) or .tar file']);
  });

  it('refuses entries that climb out (zip-slip) without writing anything', async () => {
    const evil = ['../evil.txt', 'images/../../evil.txt', '/etc/cron.d/evil', 'C:/Windows/evil.txt', 'images\\..\\..\\evil.txt'];
    const tmp = mkdtempSync(path.join(work, 'slip-'));
    for (const build of [makeZip, makeTarGz]) {
      const name = build === makeZip ? 's.zip' : 's.tar.gz';
      const r = await validateDatasetArchive(Readable.from([build([...yoloBase(), ...evil.map((n) => ({ name: n, data: 'x' }))])]), {
        format: 'YOLO',
        archiveName: name,
        tempDir: tmp,
      });
      expect(r.status).toBe('INVALID');
      expect(lines(r).sort()).toEqual(
        [
          '../evil.txt: entry refused: ".." climbs out of the extraction folder; it would be written outside the extraction folder',
          'images/../../evil.txt: entry refused: ".." climbs out of the extraction folder; it would be written outside the extraction folder',
          '/etc/cron.d/evil: entry refused: absolute path; it would be written outside the extraction folder',
          'C:/Windows/evil.txt: entry refused: drive letter in the entry name; it would be written outside the extraction folder',
          'images\\..\\..\\evil.txt: entry refused: backslash in the entry name (a path separator on Windows); it would be written outside the extraction folder',
        ].sort(),
      );
    }
    // Nothing written next to the work folder, and the spool folder is gone.
    expect(readdirSync(tmp)).toEqual([]);
    expect(readdirSync(path.dirname(work)).filter((n) => n === 'evil.txt')).toEqual([]);
  });

  it('refuses symlinks, hard links and devices', async () => {
    const links: EntrySpec[] = [
      { name: 'images/train/link.jpg', type: 'symlink', linkTarget: '/etc/passwd' },
      { name: 'images/train/hard.jpg', type: 'hardlink', linkTarget: 'images/train/a.jpg' },
      { name: 'dev', type: 'chardev' },
      { name: 'pipe', type: 'fifo' },
    ];
    const tar = await validate(makeTarGz([...yoloBase(), ...links]), 'l.tar.gz', 'YOLO');
    expect(lines(tar)).toEqual([
      'dev: device entry refused: only files and folders can be extracted',
      'images/train/hard.jpg: hard link to "images/train/a.jpg" refused: links can point outside the extraction folder; archive the file itself',
      'images/train/link.jpg: symbolic link to "/etc/passwd" refused: links can point outside the extraction folder; archive the file itself',
      'pipe: FIFO entry refused: only files and folders can be extracted',
    ]);
    const zip = await validate(makeZip([...yoloBase(), { name: 'images/train/link.jpg', type: 'symlink', linkTarget: '../../../etc/passwd', method: 'store' }]), 'l.zip', 'YOLO');
    expect(lines(zip)).toEqual([
      'images/train/link.jpg: symbolic link to "../../../etc/passwd" refused: links can point outside the extraction folder; archive the file itself',
    ]);
  });

  it('refuses duplicate entries and names that are both a file and a folder', async () => {
    const r = await validate(makeTar([...yoloBase(), { name: 'images/train/a.jpg', data: jpeg }, { name: 'data.yaml/x', data: 'y' }]), 'd.tar', 'YOLO');
    expect(lines(r)).toEqual([
      'data.yaml/x: is both a file and a folder in the archive',
      'images/train/a.jpg: appears twice in the archive (extracting would overwrite the first copy with the second)',
    ]);
  });

  it('stops zip bombs by counting decompressed bytes: per entry, in total, by ratio, lying headers, overlaps', async () => {
    const MB = 1024 * 1024;
    const zeros = Buffer.alloc(24 * MB);
    const bomb = makeZip([...yoloBase(), { name: 'images/train/z.jpg', data: zeros }]);
    expect(bomb.length).toBeLessThan(64 * 1024); // a few KB expanding to 24 MB

    const perEntry = await validate(bomb, 'b.zip', 'YOLO', { limits: { maxEntryUncompressedBytes: 8 * MB, maxCompressionRatio: 1e9 } });
    expect(lines(perEntry)).toEqual(['images/train/z.jpg: entry declares 24.0 MiB, more than the 8.0 MiB allowed per entry; validation stopped']);
    expect(perEntry.uncompressedBytes).toBeLessThan(MB);

    const ratio = await validate(bomb, 'b.zip', 'YOLO');
    expect(lines(ratio)).toEqual([expect.stringMatching(/^images\/train\/z\.jpg: compression ratio above 100:1 \(.+\); refused as a likely zip bomb, validation stopped$/)]);
    expect(ratio.uncompressedBytes).toBeLessThan(10 * MB);

    // Headers that understate the size do not help: the real bytes are counted.
    const liar = makeZip([...yoloBase(), { name: 'images/train/z.jpg', data: zeros, declaredSize: 1000 }]);
    const lied = await validate(liar, 'l.zip', 'YOLO', { limits: { maxCompressionRatio: 1e9 } });
    expect(lines(lied)).toEqual(['images/train/z.jpg: entry expands past the 1000 bytes its header declares; refused as a likely zip bomb, validation stopped']);
    expect(lied.uncompressedBytes).toBeLessThan(2 * MB);

    const total = await validate(makeZip([...yoloBase(), ...[1, 2, 3].map((i) => ({ name: `images/train/z${i}.jpg`, data: Buffer.alloc(4 * MB) }))]), 't.zip', 'YOLO', {
      limits: { maxTotalUncompressedBytes: 10 * MB, maxCompressionRatio: 1e9 },
    });
    expect(lines(total)).toEqual([expect.stringMatching(/^t\.zip: the archive declares 12\.0 MiB of content, more than the 10\.0 MiB allowed; validation stopped$/)]);

    // Many entries sharing one compressed body ("a better zip bomb").
    const overlap = makeZip([...yoloBase(), ...[1, 2, 3].map((i) => ({ name: `images/train/o${i}.jpg`, data: jpeg }))], { overlapAll: true });
    const o = await validate(overlap, 'o.zip', 'YOLO');
    expect(lines(o)).toEqual([expect.stringMatching(/: entry overlaps the previous entry \(a zip-bomb construction\); validation stopped$/)]);
  });

  it('gives the same answers when zip entries are inflated on worker threads', async () => {
    const big = makePng(160, 160, { noise: true }); // ~77 KB that deflate cannot shrink: takes the batched path
    const entries: EntrySpec[] = [{ name: 'data.yaml', data: 'names: [a]\n' }];
    for (let i = 0; i < 20; i++) entries.push({ name: `images/train/${i}.png`, data: big }, { name: `labels/train/${i}.txt`, data: '0 0.5 0.5 0.1 0.1\n' });
    const zip = makeZip(entries);
    const viaWorkers = await validate(zip, 'w.zip', 'YOLO', { inflateWorkers: 'always' });
    const viaPool = await validate(zip, 'w.zip', 'YOLO', { inflateWorkers: 'never' });
    expect(lines(viaWorkers)).toEqual([]);
    expect(viaWorkers).toEqual(viaPool);
    expect(viaWorkers.splits.train).toEqual({ images: 20, boxes: 20 });

    const liar = makeZip([...entries.slice(0, 3), { name: 'images/train/z.png', data: big, declaredSize: 1000 }]);
    expect(lines(await validate(liar, 'l.zip', 'YOLO', { inflateWorkers: 'always', limits: { maxCompressionRatio: 1e9 } }))).toEqual([
      'images/train/z.png: entry expands past the 1000 bytes its header declares; refused as a likely zip bomb, validation stopped',
    ]);
    const mangled = Buffer.from(makeZip(entries.slice(0, 3)));
    const at = mangled.indexOf('images/train/0.png') + 'images/train/0.png'.length;
    mangled.fill(0xff, at + 10, at + 40);
    expect(lines(await validate(mangled, 'm.zip', 'YOLO', { inflateWorkers: 'always' }))).toEqual([
      expect.stringMatching(/^images\/train\/0\.png: corrupt zip entry: (bad deflate data|CRC-32 mismatch)/),
    ]);
  });

  it('stops tar.gz bombs: ratio over the stream, total, and huge declared entries', async () => {
    const MB = 1024 * 1024;
    const tgz = makeTarGz([...yoloBase(), { name: 'images/train/z.jpg', data: Buffer.alloc(40 * MB) }]);
    expect(tgz.length).toBeLessThan(256 * 1024);
    const r = await validate(tgz, 'b.tar.gz', 'YOLO');
    expect(lines(r)).toEqual([expect.stringMatching(/^b\.tar\.gz: compression ratio above 100:1 .+; refused as a likely zip bomb, validation stopped$/)]);
    expect(r.uncompressedBytes).toBeLessThan(10 * MB);
    expect(r.sha256).toBe(createHash('sha256').update(tgz).digest('hex')); // still hashed to the end

    const total = await validate(tgz, 'b.tar.gz', 'YOLO', { limits: { maxTotalUncompressedBytes: 5 * MB, maxCompressionRatio: 1e9 } });
    expect(lines(total)).toEqual(['b.tar.gz: the archive expands past 5.0 MiB (the total limit); refused as a likely zip bomb, validation stopped']);
    expect(total.uncompressedBytes).toBeLessThan(6 * MB);

    const huge = Buffer.concat([tarHeader('images/train/huge.jpg', 6 * 1024 ** 3), Buffer.alloc(512)]);
    const h = await validate(zlib.gzipSync(huge), 'h.tar.gz', 'YOLO');
    expect(lines(h)).toEqual(['images/train/huge.jpg: entry declares 6.0 GiB, more than the 4.0 GiB allowed per entry; validation stopped']);

    const many = await validate(makeTarGz([...yoloBase(), ...Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, data: '' }))]), 'm.tar.gz', 'YOLO', { limits: { maxEntries: 10 } });
    expect(lines(many)).toEqual(['m.tar.gz: the archive has more than 10 entries (the limit); validation stopped']);
  });

  it('reports truncated and corrupt archives instead of throwing', async () => {
    const full = makeTarGz(datasets.yolo);
    const cut = await validate(full.subarray(0, Math.floor(full.length / 2)), 'c.tar.gz', 'YOLO');
    expect(lines(cut)).toEqual(['c.tar.gz: not a valid gzip stream: unexpected end of file (the upload may be truncated)']);
    // A flipped byte in stored JPEG data still walks as a JPEG; the CRC catches it, as Python's zipfile would.
    const stored = makeZip([...yoloBase().map((e) => ({ ...e, method: 'store' as const }))]);
    const at = stored.indexOf(jpeg.subarray(1000, 1016)) + 8;
    const flipped = Buffer.from(stored);
    flipped[at] ^= 0x01;
    expect(lines(await validate(flipped, 'c.zip', 'YOLO'))).toEqual(['images/train/a.jpg: corrupt zip entry: CRC-32 mismatch']);
    const deflated = makeZip(yoloBase());
    const mangled = Buffer.from(deflated);
    const start = deflated.indexOf('images/train/a.jpg') + 'images/train/a.jpg'.length;
    mangled.fill(0xff, start + 10, start + 40);
    expect(lines(await validate(mangled, 'c.zip', 'YOLO'))).toEqual([expect.stringMatching(/^images\/train\/a\.jpg: corrupt zip entry: (bad deflate data|CRC-32 mismatch)/)]);
  });

  it('caps the problem list: 50 per file, 1000 in all, then "and N more"', async () => {
    const bad = Array.from({ length: 60 }, () => '9 0.5 0.5 0.1 0.1').join('\n');
    const entries: EntrySpec[] = [{ name: 'data.yaml', data: 'names: [a]\n' }];
    for (let i = 0; i < 25; i++) {
      entries.push({ name: `images/train/${i}.jpg`, data: jpeg }, { name: `labels/train/${i}.txt`, data: bad });
    }
    const r = await validate(makeTarGz(entries), 'cap.tar.gz', 'YOLO');
    expect(r.problems.filter((p) => p.path === 'labels/train/0.txt')).toHaveLength(51);
    expect(r.problems.find((p) => p.path === 'labels/train/0.txt' && p.line === null)!.message).toBe('and 10 more problems in this file');
    expect(r.problems.filter((p) => p.line !== null)).toHaveLength(1000);
    expect(r.problems[r.problems.length - 1]).toEqual({ path: 'cap.tar.gz', line: null, message: 'and 300 more problems' });
  });
});

describe('image header checks', () => {
  const check = (buf: Buffer, chunk = 7) => {
    const c = new ImageChecker();
    for (let i = 0; i < buf.length; i += chunk) c.write(buf.subarray(i, i + chunk));
    return c.end();
  };

  it('reads dimensions of JPEG, PNG, BMP, GIF in any chunking', () => {
    expect(check(jpeg)).toEqual({ format: 'JPEG', width: 64, height: 64, error: null });
    expect(check(jpeg, 1)).toEqual({ format: 'JPEG', width: 64, height: 64, error: null });
    expect(check(makePng(17, 5))).toEqual({ format: 'PNG', width: 17, height: 5, error: null });
    expect(check(makeBmp(3, 2))).toEqual({ format: 'BMP', width: 3, height: 2, error: null });
    expect(check(GIF_1X1)).toEqual({ format: 'GIF', width: 1, height: 1, error: null });
    // Bytes after EOI (camera "motion photos" append video there) do not matter to decoders.
    expect(check(Buffer.concat([jpeg, Buffer.from('trailing data')])).error).toBeNull();
  });

  it('says why a file would not decode', () => {
    expect(check(jpeg.subarray(0, jpeg.length - 2)).error).toBe('truncated JPEG (no EOI marker)');
    expect(check(jpeg.subarray(0, 300)).error).toMatch(/^(truncated JPEG \(no EOI marker\)|JPEG without .*)$/);
    const png = makePng(4, 4);
    expect(check(png.subarray(0, png.length - 12)).error).toBe('truncated PNG (no IEND chunk)');
    expect(check(makeBmp(4, 4).subarray(0, 60)).error).toBe('truncated BMP (60 of 102 bytes)');
    expect(check(Buffer.alloc(0)).error).toBe('empty file');
    expect(check(Buffer.from('<html>not an image</html>')).error).toBe('not a JPEG, PNG, GIF, BMP, WebP or TIFF file');
  });
});
