// Where archive bytes come from: a local file, or a stream spooled to a private temp folder
// when a zip (which needs random access) arrives as a plain stream.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { RandomAccessSource } from './types.js';

// Sequential reads of 1 MiB: per-chunk overhead becomes negligible and memory stays flat.
export const READ_CHUNK_BYTES = 1024 * 1024;

/** Random access to a local file (the local storage backend, benchmarks, tests). */
export async function fileSource(file: string): Promise<RandomAccessSource> {
  const { size } = await stat(file);
  return {
    size,
    read(start: number, end: number): Readable {
      // fs ranges are inclusive and cannot express an empty one.
      if (end <= start) return Readable.from([]);
      return createReadStream(file, { start, end: end - 1, highWaterMark: READ_CHUNK_BYTES });
    },
  };
}

export function isRandomAccessSource(input: unknown): input is RandomAccessSource {
  return (
    typeof input === 'object' &&
    input !== null &&
    typeof (input as RandomAccessSource).read === 'function' &&
    typeof (input as RandomAccessSource).size === 'number' &&
    typeof (input as Readable).pipe !== 'function'
  );
}

export interface Spooled {
  source: RandomAccessSource;
  hash: Hash;
  sizeBytes: number;
  cleanup(): Promise<void>;
}

/** Copies a stream into a fresh folder of its own (hashing on the way) and gives random access to it. */
export async function spool(input: Readable, tempDir?: string): Promise<Spooled> {
  const dir = await mkdtemp(path.join(tempDir ?? os.tmpdir(), 'cvtrain-validate-'));
  const cleanup = () => rm(dir, { recursive: true, force: true });
  try {
    const file = path.join(dir, 'archive');
    const hash = createHash('sha256');
    let sizeBytes = 0;
    await pipeline(
      input,
      async function* (src: AsyncIterable<Buffer>) {
        for await (const chunk of src) {
          hash.update(chunk);
          sizeBytes += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(file, { flags: 'wx', mode: 0o600 }),
    );
    return { source: await fileSource(file), hash, sizeBytes, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
