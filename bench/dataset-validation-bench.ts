// npm run bench:datasets — dataset archive validation throughput (issue 3).
//
// Builds ~500 MB YOLO archives (zip with deflate, as `zip -r` and desktop tools make them, and
// tar.gz) out of real JPEGs from the trainers' shapes generator, replicated under distinct names
// with their label files. Then, in the same run and alternating, measures `sha256sum` of each
// file (the floor for reading and hashing it) and validateDatasetArchive on it in a fresh child
// process (wall time of the call, and its peak RSS growth over the RSS just before the call).
// Target: validation at >= 50% of sha256sum's speed, peak RSS growth < 200 MB.
// CPU seconds are printed too: on a shared machine wall times swing with other load, CPU time
// much less (the validator's work runs on several threads, so its CPU time exceeds its wall time
// when cores are free).
//
// Env: BENCH_DATASET_MB (default 500), BENCH_DATASET_DIR (default <tmp>/cvtrain-dataset-bench),
// BENCH_ROUNDS (default 2; the best round of each measurement is reported).
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { tarHeader, tarPadding } from '../test/helpers/archives.js';
import { fileSource, validateDatasetArchive } from '../src/modules/datasets/validation/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const TARGET_MB = Number(process.env.BENCH_DATASET_MB ?? 500);
const WORK = process.env.BENCH_DATASET_DIR ?? path.join(os.tmpdir(), 'cvtrain-dataset-bench');
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const DISTINCT = 120;

interface SourceFile {
  name: string;
  data: Buffer;
}

function distinctFiles(): { images: SourceFile[]; labels: Map<string, Buffer>; yaml: Buffer } {
  const src = path.join(WORK, 'src');
  if (!existsSync(path.join(src, 'data.yaml'))) {
    execFileSync(
      '/usr/bin/python3',
      ['-m', 'cvtrain', 'make-dataset', 'shapes', '--out', src, '--format', 'yolo', '--images', String(DISTINCT), '--seed', '7', '--size', '640'],
      { env: { ...process.env, PYTHONPATH: path.join(repo, 'trainers') }, stdio: 'ignore' },
    );
  }
  const images: SourceFile[] = [];
  const labels = new Map<string, Buffer>();
  for (const split of ['train', 'val']) {
    for (const f of readdirSync(path.join(src, 'images', split)).sort()) {
      images.push({ name: `${split}/${f}`, data: readFileSync(path.join(src, 'images', split, f)) });
      const stem = f.replace(/\.jpg$/, '');
      labels.set(`${split}/${stem}`, readFileSync(path.join(src, 'labels', split, `${stem}.txt`)));
    }
  }
  return { images, labels, yaml: readFileSync(path.join(src, 'data.yaml')) };
}

/** The replicated layout: every distinct image under `copies` names, each with its label. */
function* layout(files: ReturnType<typeof distinctFiles>, copies: number) {
  yield { name: 'data.yaml', data: files.yaml, key: 'yaml' };
  for (let c = 0; c < copies; c++) {
    for (const img of files.images) {
      const [split, base] = img.name.split('/');
      const stem = base.replace(/\.jpg$/, '');
      yield { name: `images/${split}/c${c}_${base}`, data: img.data, key: `i:${img.name}` };
      yield { name: `labels/${split}/c${c}_${stem}.txt`, data: files.labels.get(`${split}/${stem}`)!, key: `l:${split}/${stem}` };
    }
  }
}

async function writeAll(file: string, chunks: Iterable<Buffer>): Promise<void> {
  const out = createWriteStream(file);
  for (const c of chunks) if (!out.write(c)) await new Promise<void>((r) => out.once("drain", () => r()));
  await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
}

/** A zip whose entries are deflated at level 6 like `zip -r`; each distinct file is compressed once and reused. */
async function buildZip(file: string, files: ReturnType<typeof distinctFiles>, copies: number): Promise<void> {
  const cache = new Map<string, { body: Buffer; crc: number; size: number }>();
  const central: Buffer[] = [];
  let offset = 0;
  let count = 0;
  function* chunks() {
    for (const e of layout(files, copies)) {
      let c = cache.get(e.key);
      if (!c) {
        c = { body: zlib.deflateRawSync(e.data, { level: 6 }), crc: zlib.crc32(e.data) >>> 0, size: e.data.length };
        cache.set(e.key, c);
      }
      const name = Buffer.from(e.name);
      const local = Buffer.alloc(30);
      local.writeUInt32LE(0x04034b50, 0);
      local.writeUInt16LE(20, 4);
      local.writeUInt16LE(0x800, 6);
      local.writeUInt16LE(8, 8);
      local.writeUInt32LE(c.crc, 14);
      local.writeUInt32LE(c.body.length, 18);
      local.writeUInt32LE(c.size, 22);
      local.writeUInt16LE(name.length, 26);
      const cd = Buffer.alloc(46);
      cd.writeUInt32LE(0x02014b50, 0);
      cd.writeUInt16LE((3 << 8) | 20, 4);
      cd.writeUInt16LE(20, 6);
      cd.writeUInt16LE(0x800, 8);
      cd.writeUInt16LE(8, 10);
      cd.writeUInt32LE(c.crc, 16);
      cd.writeUInt32LE(c.body.length, 20);
      cd.writeUInt32LE(c.size, 24);
      cd.writeUInt16LE(name.length, 28);
      cd.writeUInt32LE((0o100644 << 16) >>> 0, 38);
      cd.writeUInt32LE(offset, 42);
      central.push(cd, name);
      offset += 30 + name.length + c.body.length;
      count++;
      yield local;
      yield name;
      yield c.body;
    }
    const cdBuf = Buffer.concat(central);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(count, 8);
    end.writeUInt16LE(count, 10);
    end.writeUInt32LE(cdBuf.length, 12);
    end.writeUInt32LE(offset, 16);
    yield cdBuf;
    yield end;
  }
  await writeAll(file, chunks());
}

/**
 * A tar.gz as one gzip member, built fast: each distinct payload is deflated once (level 6)
 * ending in a full flush, so the pieces concatenate into one valid deflate stream (as pigz does).
 */
async function buildTarGz(file: string, files: ReturnType<typeof distinctFiles>, copies: number): Promise<void> {
  const flushed = (buf: Buffer) => zlib.deflateRawSync(buf, { level: 6, finishFlush: zlib.constants.Z_FULL_FLUSH });
  const cache = new Map<string, Buffer>();
  let crc = 0;
  let isize = 0;
  function* chunks() {
    yield Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
    for (const e of layout(files, copies)) {
      const header = tarHeader(e.name, e.data.length);
      const payload = Buffer.concat([e.data, tarPadding(e.data.length)]);
      let body = cache.get(e.key);
      if (!body) {
        body = flushed(payload);
        cache.set(e.key, body);
      }
      crc = zlib.crc32(payload, zlib.crc32(header, crc));
      isize += header.length + payload.length;
      yield flushed(header);
      yield body;
    }
    const tail = Buffer.alloc(1024);
    crc = zlib.crc32(tail, crc);
    isize += tail.length;
    yield zlib.deflateRawSync(tail, { level: 6 });
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(crc >>> 0, 0);
    trailer.writeUInt32LE(isize % 2 ** 32, 4);
    yield trailer;
  }
  await writeAll(file, chunks());
}

/** CPU seconds of waited-for children so far (/proc/self/stat cutime + cstime). */
function childrenCpuSeconds(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
  return (Number(fields[13]) + Number(fields[14])) / 100; // USER_HZ
}

function sha256sumRun(file: string): { seconds: number; cpu: number } {
  const c = childrenCpuSeconds();
  const t = process.hrtime.bigint();
  execFileSync('sha256sum', [file], { stdio: 'ignore' });
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, cpu: childrenCpuSeconds() - c };
}

interface ChildResult {
  seconds: number;
  /** CPU seconds of all the child's threads during the call. */
  cpu: number;
  rssBeforeMB: number;
  peakRssMB: number;
  status: string;
  problems: number;
  images: number;
  entries: number;
  sha256: string;
}

function validateInChild(file: string, mode: 'zip' | 'tar.gz'): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', file, mode], {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as ChildResult) : reject(new Error(`child exited ${code}: ${out}`))));
  });
}

async function child(file: string, mode: 'zip' | 'tar.gz'): Promise<void> {
  const input = mode === 'zip' ? await fileSource(file) : createReadStream(file, { highWaterMark: 1024 * 1024 });
  const before = process.memoryUsage().rss;
  const c0 = process.cpuUsage();
  const t = performance.now();
  const report = await validateDatasetArchive(input, { format: 'YOLO', archiveName: path.basename(file) });
  const seconds = (performance.now() - t) / 1000;
  const cu = process.cpuUsage(c0);
  // The kernel's high-water mark: nothing between two samples can escape it.
  const peak = process.resourceUsage().maxRSS * 1024;
  const images = Object.values(report.splits).reduce((s, x) => s + x.images, 0);
  const result: ChildResult = {
    seconds,
    cpu: (cu.user + cu.system) / 1e6,
    rssBeforeMB: before / 1e6,
    peakRssMB: peak / 1e6,
    status: report.status,
    problems: report.problems.length,
    images,
    entries: report.entries,
    sha256: report.sha256,
  };
  process.stdout.write(JSON.stringify(result));
}

async function main(): Promise<void> {
  mkdirSync(WORK, { recursive: true });
  const files = distinctFiles();
  const perCopy = files.images.reduce((s, f) => s + f.data.length, 0) + [...files.labels.values()].reduce((s, b) => s + b.length, 0);
  const copies = Math.max(1, Math.round((TARGET_MB * 1e6) / perCopy));
  const archives: { file: string; mode: 'zip' | 'tar.gz' }[] = [
    { file: path.join(WORK, `yolo-${TARGET_MB}mb.zip`), mode: 'zip' },
    { file: path.join(WORK, `yolo-${TARGET_MB}mb.tar.gz`), mode: 'tar.gz' },
  ];
  const tGen = performance.now();
  for (const a of archives) {
    const stamp = `${a.file}.ok`;
    if (existsSync(stamp) && readFileSync(stamp, 'utf8') === String(copies)) continue;
    if (a.mode === 'zip') await buildZip(a.file, files, copies);
    else await buildTarGz(a.file, files, copies);
    writeFileSync(stamp, String(copies));
  }
  console.error(`archives ready in ${((performance.now() - tGen) / 1000).toFixed(1)} s (${copies} copies of ${files.images.length} JPEGs + labels)`);

  const rows: string[] = [];
  for (const a of archives) {
    const size = statSync(a.file).size;
    const sha: { seconds: number; cpu: number }[] = [];
    const val: ChildResult[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      sha.push(sha256sumRun(a.file));
      val.push(await validateInChild(a.file, a.mode));
    }
    const bestSha = Math.min(...sha.map((x) => x.seconds));
    const shaCpu = Math.min(...sha.map((x) => x.cpu));
    const valCpu = Math.min(...val.map((x) => x.cpu));
    const best = val.reduce((x, y) => (y.seconds < x.seconds ? y : x));
    const growth = Math.max(...val.map((v) => v.peakRssMB - v.rssBeforeMB));
    const shaMBs = size / 1e6 / bestSha;
    const valMBs = size / 1e6 / best.seconds;
    const expected = execFileSync('sha256sum', [a.file]).toString().split(' ')[0];
    if (best.sha256 !== expected) throw new Error(`sha256 mismatch for ${a.file}: ${best.sha256} vs ${expected}`);
    if (best.status !== 'READY') throw new Error(`${a.file} did not validate: ${best.problems} problems`);
    rows.push(
      `| ${path.basename(a.file)} | ${(size / 1e6).toFixed(0)} | ${best.entries} | ${shaMBs.toFixed(0)} | ${valMBs.toFixed(0)} | **${((valMBs / shaMBs) * 100).toFixed(0)}%** | ${shaCpu.toFixed(2)} | ${valCpu.toFixed(2)} | ${growth.toFixed(0)} |`,
    );
    console.error(
      `${path.basename(a.file)}: sha256sum ${sha.map((s) => s.seconds.toFixed(2)).join('/')} s, validate ${val.map((v) => v.seconds.toFixed(2)).join('/')} s`,
    );
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`Dataset archive validation, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'cpu'}), Node ${process.version}, best of ${ROUNDS}, load average ${load}`);
  console.log('');
  console.log('| archive | MB | entries | sha256sum MB/s | validate MB/s | validate / sha256sum | sha256sum CPU s | validate CPU s | peak RSS growth MB |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(r);
}

if (process.argv[2] === '--child') {
  await child(process.argv[3], process.argv[4] as 'zip' | 'tar.gz');
} else {
  await main();
}
