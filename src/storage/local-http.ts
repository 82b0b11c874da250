// Serves the local backend's presigned links: GET/HEAD/PUT /storage/<key>?expires=...&sig=...
// Bodies stream straight between the socket and the file in both directions; nothing holds an
// object in memory. Mounted by src/server.ts before GraphQL handling.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createLogger, errorFields } from '../lib/log.js';
import {
  StorageError,
  StorageExistsError,
  StorageInputError,
  StorageKeyError,
  StorageNotFoundError,
  StorageRangeError,
  StorageTooLargeError,
  StorageUploadInProgressError,
} from './errors.js';
import { attachmentDisposition, checkContentType, checkKey } from './keys.js';
import { LOCAL_STORAGE_PATH, type LocalStorage } from './local.js';
import type { GetOptions } from './types.js';

const log = createLogger('storage:http');

const WRITTEN_ONCE = 'Precondition Failed: this upload link writes once and the object exists';

export interface LocalStorageHandlerOptions {
  /** Largest upload accepted; 413 above it, whether announced by Content-Length or found while streaming. */
  maxUploadBytes: number;
  /**
   * An upload or download that moves no byte for this long is dropped. It replaces the server's
   * whole-request timeout for these paths: a multi-gigabyte upload legitimately takes minutes.
   */
  idleTimeoutMs?: number;
}

export type StorageRequestHandler = (req: IncomingMessage, res: ServerResponse) => boolean;

/** Returns a handler that takes requests under /storage/ (returning true) and leaves every other path alone (false). */
export function createLocalStorageHandler(storage: LocalStorage, opts: LocalStorageHandlerOptions): StorageRequestHandler {
  const idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
  return (req, res) => {
    const url = req.url ?? '/';
    if (!url.startsWith(LOCAL_STORAGE_PATH)) return false;
    req.setTimeout(idleTimeoutMs, () => req.destroy(new Error('storage transfer idle')));
    handle(storage, opts.maxUploadBytes, req, res).catch((err: unknown) => {
      log.error('storage request failed', { method: req.method, ...errorFields(err) });
      if (!res.headersSent) send(res, 500, 'Internal error', true);
      else res.destroy();
    });
    return true;
  };
}

async function handle(storage: LocalStorage, maxUploadBytes: number, req: IncomingMessage, res: ServerResponse) {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  const rawPath = url.slice(LOCAL_STORAGE_PATH.length, q < 0 ? undefined : q);
  const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
  const method = req.method ?? 'GET';
  // The signature is the whole authorization and no cookie is involved, so any origin may use a
  // link it was given (a browser uploading a dataset straight from the web app).
  res.setHeader('access-control-allow-origin', '*');
  res.setHeader('access-control-expose-headers', 'etag, content-length, content-range, x-cvtrain-sha256');
  if (method === 'OPTIONS') {
    res.writeHead(204, {
      'access-control-allow-methods': 'GET, HEAD, PUT',
      'access-control-allow-headers': 'content-type, range',
      'access-control-max-age': '600',
    });
    res.end();
    return;
  }
  if (method !== 'GET' && method !== 'HEAD' && method !== 'PUT') {
    res.setHeader('allow', 'GET, HEAD, PUT, OPTIONS');
    return send(res, 405, `Method ${method} not allowed`, true);
  }
  // Decoded by hand, not through new URL(): the WHATWG parser resolves "." and ".." (even as
  // %2e%2e), which would quietly turn the requested key into a different one.
  let key: string;
  try {
    key = rawPath.split('/').map(decodeURIComponent).join('/');
  } catch {
    return send(res, 400, 'Malformed path encoding', true);
  }
  const check = storage.verifyLink(method, key, query);
  if (!check.ok) return send(res, 403, `Forbidden: ${check.reason}`, true);
  try {
    checkKey(key);
  } catch (err) {
    if (err instanceof StorageKeyError) return send(res, 400, err.message, true);
    throw err;
  }
  if (method === 'PUT') {
    // Write-once links (dataset archives): a second upload would silently change validated data.
    // This check only answers early; put() enforces it against concurrent uploads.
    if (check.grant.once && (await storage.head(key))) return send(res, 412, WRITTEN_ONCE, true);
    return upload(storage, maxUploadBytes, key, check.grant.contentType, check.grant.once === true, req, res);
  }
  return download(storage, key, check.grant.filename, method === 'HEAD', req, res);
}

async function upload(
  storage: LocalStorage,
  maxUploadBytes: number,
  key: string,
  signedType: string | null,
  once: boolean,
  req: IncomingMessage,
  res: ServerResponse,
) {
  const sentType = req.headers['content-type'];
  if (signedType !== null && sentType?.trim().toLowerCase() !== signedType.toLowerCase()) {
    return send(res, 403, `Forbidden: this link requires Content-Type: ${signedType}`, true);
  }
  let contentType: string | undefined;
  try {
    contentType = checkContentType(signedType ?? sentType ?? undefined);
  } catch (err) {
    if (err instanceof StorageInputError) return send(res, 400, err.message, true);
    throw err;
  }
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > maxUploadBytes) {
    return send(res, 413, `Upload exceeds the limit of ${maxUploadBytes} bytes`, true);
  }
  try {
    const result = await storage.put(key, requestBody(req), { contentType, maxBytes: maxUploadBytes, onlyIfAbsent: once });
    res.writeHead(200, {
      'content-type': 'application/json',
      etag: `"${result.etag}"`,
      'x-cvtrain-sha256': result.sha256,
    });
    res.end(JSON.stringify({ size: result.size, sha256: result.sha256 }));
  } catch (err) {
    if (err instanceof StorageTooLargeError) return send(res, 413, err.message, true);
    if (err instanceof StorageExistsError) return send(res, 412, WRITTEN_ONCE, true);
    if (err instanceof StorageUploadInProgressError) {
      return send(res, 409, 'Conflict: an upload to this link is in progress; this link writes once', true);
    }
    // The client went away mid-upload: the partial file is already removed, nobody is listening.
    if (req.destroyed && !req.complete) return;
    throw err;
  }
}

async function download(
  storage: LocalStorage,
  key: string,
  filename: string | null,
  headOnly: boolean,
  req: IncomingMessage,
  res: ServerResponse,
) {
  let range: GetOptions | undefined;
  const requested = parseRange(req.headers.range);
  if (requested && 'suffix' in requested) {
    const info = await storage.head(key);
    if (!info) return send(res, 404, 'Not found');
    range = requested.suffix === 0 ? { start: info.size } : { start: Math.max(0, info.size - requested.suffix) };
  } else if (requested) {
    range = requested;
  }
  let opened;
  try {
    opened = await storage.openRead(key, range);
  } catch (err) {
    if (err instanceof StorageNotFoundError) return send(res, 404, 'Not found');
    if (err instanceof StorageRangeError) {
      if (err.size !== null) res.setHeader('content-range', `bytes */${err.size}`);
      return send(res, 416, 'Range not satisfiable');
    }
    if (err instanceof StorageError) return send(res, 400, err.message);
    throw err;
  }
  const { info, stream } = opened;
  const headers: Record<string, string> = {
    'content-type': info.contentType ?? 'application/octet-stream',
    'content-length': String(Math.max(0, opened.range.end - opened.range.start + 1)),
    'accept-ranges': 'bytes',
    'last-modified': info.lastModified.toUTCString(),
    'cache-control': 'private, no-cache',
    // Objects are user uploads served from the API's own origin: never render them as pages.
    'content-disposition': attachmentDisposition(filename),
    'content-security-policy': "default-src 'none'; sandbox",
    'x-content-type-options': 'nosniff',
  };
  if (info.etag) headers.etag = `"${info.etag}"`;
  if (range) headers['content-range'] = `bytes ${opened.range.start}-${opened.range.end}/${info.size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (headOnly) {
    stream.destroy();
    res.end();
    return;
  }
  try {
    await pipeline(stream, res);
  } catch {
    // The client closed the connection; pipeline has already closed the file.
  }
}

/**
 * The request body as a stream put() may destroy on failure without destroying the request
 * itself, which would take the socket and the 413 response with it. A client that disconnects
 * mid-upload fails the stream, so put() removes the partial file.
 */
function requestBody(req: IncomingMessage): Readable {
  const body = new PassThrough();
  req.on('error', (err) => body.destroy(err));
  req.on('close', () => {
    if (!req.complete) body.destroy(new Error('the client closed the connection mid-upload'));
  });
  req.pipe(body);
  return body;
}

/** One "bytes=" range; null for none or for forms we do not serve (several ranges), which get the whole object. */
function parseRange(header: string | undefined): { start: number; end?: number } | { suffix: number } | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') return { suffix: Number(m[2]) };
  const start = Number(m[1]);
  const end = m[2] === '' ? undefined : Number(m[2]);
  if (!Number.isSafeInteger(start) || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) return null;
  return { start, end };
}

function send(res: ServerResponse, status: number, message: string, close = false) {
  res.writeHead(status, {
    'content-type': 'application/json',
    // An upload refused before its body was read: close rather than read the rest of it.
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(JSON.stringify({ error: message }));
}
