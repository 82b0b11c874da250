// Streaming validation of an uploaded dataset archive (issue 3).
//
//   validateDatasetArchive(input, { format, archiveName, limits? }) -> ValidationReport
//
// `input` is a Readable of the archive bytes, or a RandomAccessSource ({ size, read(start, end) }).
// tar / tar.gz / tgz are read from either in one sequential pass. A zip needs random access (see
// zip.ts for why); given a plain stream it is first spooled to a private temp folder.
// Nothing is ever extracted: entries are checked as their bytes stream past, and the archive
// is never held in memory. Everything wrong with the archive becomes a problem in the report;
// the promise rejects only when the bytes cannot be read (I/O errors, `signal` aborted).
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { DatasetCollector } from './dataset.js';
import { EntryGate } from './entries.js';
import { ExpansionGuard, resolveLimits } from './limits.js';
import { printableName } from './paths.js';
import { ProblemList } from './problems.js';
import { isRandomAccessSource, spool } from './source.js';
import { TarParser, walkTar } from './tar.js';
import type { ArchiveInput, ValidateOptions, ValidationReport } from './types.js';
import { walkZip } from './zip.js';

export { DEFAULT_VALIDATION_LIMITS, type ValidationLimits } from './limits.js';
export { fileSource, isRandomAccessSource } from './source.js';
export { isIgnoredEntry } from './paths.js';
export { IMAGE_EXTENSIONS } from './images.js';
export type {
  ArchiveInput,
  DatasetFormat,
  RandomAccessSource,
  SplitSummary,
  ValidateOptions,
  ValidationProblem,
  ValidationReport,
} from './types.js';

export type ArchiveContainer = 'zip' | 'tar.gz' | 'tar';

/** The container an upload's file name announces, or null when it is none we read. */
export function archiveContainer(name: string): ArchiveContainer | null {
  const lower = name.toLowerCase();
  if (lower.endsWith('.zip')) return 'zip';
  if (lower.endsWith('.tar.gz') || lower.endsWith('.tgz')) return 'tar.gz';
  if (lower.endsWith('.tar')) return 'tar';
  return null;
}

export async function validateDatasetArchive(input: ArchiveInput, opts: ValidateOptions): Promise<ValidationReport> {
  const limits = resolveLimits(opts.limits);
  const problems = new ProblemList(opts.archiveName);
  const guard = new ExpansionGuard(limits, opts.archiveName);
  const collector = new DatasetCollector(opts.format);
  const gate = new EntryGate(guard, problems, collector);
  const container = archiveContainer(opts.archiveName);
  const randomAccess = isRandomAccessSource(input);

  let sha256: string;
  let sizeBytes: number;
  let entries = 0;
  let complete = false;

  if (container === null) {
    problems.archive(`unsupported archive type "${opts.archiveName}": upload a .zip, .tar.gz (.tgz) or .tar file`);
    const hash = createHash('sha256');
    sizeBytes = 0;
    const stream = randomAccess ? input.read(0, input.size) : (input as Readable);
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      sizeBytes += chunk.length;
    }
    sha256 = hash.digest('hex');
  } else if (container === 'zip') {
    if (randomAccess) {
      const hash = createHash('sha256');
      const r = await walkZip({ source: input, hash, gate, guard, problems, archiveName: opts.archiveName, signal: opts.signal, inflateWorkers: opts.inflateWorkers });
      sha256 = hash.digest('hex');
      sizeBytes = input.size;
      entries = r.entries;
      complete = r.complete;
    } else {
      const spooled = await spool(input as Readable, opts.tempDir);
      try {
        const r = await walkZip({
          source: spooled.source,
          hash: null,
          gate,
          guard,
          problems,
          archiveName: opts.archiveName,
          signal: opts.signal,
          inflateWorkers: opts.inflateWorkers,
        });
        entries = r.entries;
        complete = r.complete;
      } finally {
        await spooled.cleanup();
      }
      sha256 = spooled.hash.digest('hex');
      sizeBytes = spooled.sizeBytes;
    }
  } else {
    const hash = createHash('sha256');
    const stream = randomAccess ? input.read(0, input.size) : (input as Readable);
    const parser = new TarParser(gate, guard, problems);
    const r = await walkTar({
      input: stream,
      gzip: container === 'tar.gz',
      hash,
      parser,
      guard,
      problems,
      archiveName: opts.archiveName,
      signal: opts.signal,
    });
    sha256 = hash.digest('hex');
    sizeBytes = r.sizeBytes;
    entries = r.entries;
    complete = r.complete;
  }

  // A partly read archive would only add noise (files "missing" because they were never reached).
  const dataset = complete ? collector.finish(problems) : { classNames: [], splits: {}, root: '' };
  // Class names label every metric and prediction: single-line text, like every name in the API.
  // What is stored is escaped, since an INVALID report keeps them too.
  const classNames = dataset.classNames.map((name, i) => {
    const shown = printableName(name);
    if (shown !== name) problems.archive(`class name ${i} ("${shown}") must not contain control characters`);
    return shown;
  });
  return {
    status: problems.count === 0 ? 'READY' : 'INVALID',
    format: opts.format,
    // Messages quote what the archive holds (YAML values, JSON strings).
    problems: problems.list().map((p) => ({ ...p, message: printableName(p.message) })),
    classNames,
    splits: dataset.splits,
    sha256,
    sizeBytes,
    entries,
    uncompressedBytes: guard.totalBytes,
    root: dataset.root,
  };
}
