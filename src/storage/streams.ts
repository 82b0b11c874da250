// Stream helpers shared by the backends: hashing and counting while bytes pass through, so a put
// never needs a second read to learn the size and digest.
import { createHash, type Hash } from 'node:crypto';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StorageInputError, StorageTooLargeError } from './errors.js';

/** Passes bytes through unchanged, counting and hashing them; fails once more than maxBytes pass. */
export class HashingCounter extends Transform {
  // Not "size": lib-storage reads a Body's `size` as its total length.
  bytes = 0;
  private readonly hash: Hash = createHash('sha256');
  private digest: string | null = null;

  constructor(private readonly maxBytes = Number.POSITIVE_INFINITY) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.maxBytes) {
      cb(new StorageTooLargeError(this.maxBytes));
      return;
    }
    this.hash.update(chunk);
    cb(null, chunk);
  }

  /** Hex SHA-256 of everything that passed; only valid once the stream has ended. */
  sha256(): string {
    this.digest ??= this.hash.digest('hex');
    return this.digest;
  }
}

export function toReadable(body: Readable | Uint8Array): Readable {
  if (body instanceof Uint8Array) return Readable.from([Buffer.from(body.buffer, body.byteOffset, body.byteLength)]);
  return body;
}

/** Streams a readable through SHA-256. */
export async function sha256Of(stream: Readable): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(stream, async function (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) hash.update(chunk);
  });
  return hash.digest('hex');
}

/**
 * Clamps an inclusive [start, end] request to an object of `size` bytes. Null when a range was
 * asked for and starts past the end (HTTP 416); an unranged read of an empty object is {0, -1}.
 */
export function resolveRange(size: number, opts: { start?: number; end?: number } | undefined): { start: number; end: number } | null {
  const ranged = opts?.start !== undefined || opts?.end !== undefined;
  const start = opts?.start ?? 0;
  if (!Number.isSafeInteger(start) || start < 0 || (opts?.end !== undefined && (!Number.isSafeInteger(opts.end) || opts.end < start))) {
    throw new StorageInputError(`invalid byte range start=${opts?.start} end=${opts?.end}`);
  }
  if (ranged && start >= size) return null;
  return { start, end: Math.min(opts?.end ?? size - 1, size - 1) };
}
