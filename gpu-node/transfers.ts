// Moving bytes through presigned URLs: downloads hashed while they stream (a file is trusted
// only when its sha256 matches what the API recorded), uploads streamed from disk with a
// Content-Length (S3 presigned PUTs refuse chunked bodies).
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export class DownloadError extends Error {
  constructor(message: string, public readonly status: number | null = null) {
    super(message);
    this.name = 'DownloadError';
  }
}
/** The bytes arrived but are not the ones the API recorded: never retried into use. */
export class IntegrityError extends Error {
  constructor(
    public readonly expected: string,
    public readonly actual: string,
    what: string,
  ) {
    super(`${what}: sha256 mismatch (expected ${expected}, got ${actual})`);
    this.name = 'IntegrityError';
  }
}
export class UploadError extends Error {
  constructor(message: string, public readonly status: number | null = null) {
    super(message);
    this.name = 'UploadError';
  }
}

/** Downloads `url` to `dest`, verifying sha256 on the way; a mismatch deletes the file. */
export async function downloadVerified(
  url: string,
  dest: string,
  expectedSha256: string,
  opts: { signal?: AbortSignal; what?: string; headers?: Record<string, string> } = {},
): Promise<{ sizeBytes: number }> {
  const what = opts.what ?? 'download';
  let res: Response;
  try {
    res = await fetch(url, { signal: opts.signal, headers: opts.headers });
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    const cause = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
    throw new DownloadError(`${what}: ${cause}`);
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel().catch(() => {});
    throw new DownloadError(`${what}: HTTP ${res.status}`, res.status);
  }
  const hash = createHash('sha256');
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      size += chunk.length;
      cb(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), tap, createWriteStream(dest), {
      signal: opts.signal,
    });
  } catch (err) {
    await rm(dest, { force: true });
    if (opts.signal?.aborted) throw err;
    throw new DownloadError(`${what}: ${(err as Error).message}`);
  }
  const actual = hash.digest('hex');
  if (actual !== expectedSha256) {
    await rm(dest, { force: true });
    throw new IntegrityError(expectedSha256, actual, what);
  }
  return { sizeBytes: size };
}

/** sha256 and size of a file on disk. */
export async function hashFile(file: string): Promise<{ sha256: string; sizeBytes: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file)) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), sizeBytes: size };
}

/**
 * PUTs a file to a presigned URL, streamed, with the headers the API handed out exactly as given
 * (a signed Content-Type must match; Azure needs x-ms-blob-type) plus Content-Length.
 */
export async function putFile(url: string, file: string, opts: { signal?: AbortSignal; headers?: Record<string, string> } = {}): Promise<void> {
  const size = statSync(file).size;
  const target = new URL(url);
  const mod = target.protocol === 'https:' ? https : http;
  await new Promise<void>((resolve, reject) => {
    const req = mod.request(
      target,
      {
        method: 'PUT',
        headers: { ...opts.headers, 'content-length': String(size) },
        signal: opts.signal,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (body.length < 2000) body += c;
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve();
          else reject(new UploadError(`PUT ${target.host}${target.pathname}: HTTP ${status} ${body.slice(0, 300)}`.trim(), status));
        });
        res.on('error', reject);
      },
    );
    req.on('error', (err) => reject(opts.signal?.aborted ? err : new UploadError(`PUT ${target.host}${target.pathname}: ${err.message}`)));
    const source = createReadStream(file);
    source.on('error', (err) => req.destroy(err));
    source.pipe(req);
  });
}
