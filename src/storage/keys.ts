// The key rules, in one place. Every key is "orgs/<organizationId>/..."; callers reach storage
// through orgScoped(), which refuses anything outside their organization, and the backends run
// checkKey() again so a key that bypassed the wrapper still cannot climb out of the local root.
import type { Readable } from 'node:stream';
import { StorageAccessError, StorageInputError, StorageKeyError } from './errors.js';
import type {
  GetOptions,
  ListEntry,
  ObjectInfo,
  PresignGetOptions,
  PresignedRequest,
  PresignPutOptions,
  PutOptions,
  PutResult,
  Storage,
} from './types.js';

export const ORGS_ROOT = 'orgs';
// S3 and Azure both cap keys at 1024 (bytes for S3, characters for Azure; bytes is the stricter).
const MAX_KEY_BYTES = 1024;
// The local backend adds a suffix to the last segment and filesystems cap names at 255 bytes.
const MAX_SEGMENT_BYTES = 200;
const ORG_ID = /^[A-Za-z0-9_-]{1,64}$/;
// C0 controls and DEL: invisible in logs and meaningless in object names.
const CONTROL = /[\u0000-\u001f\u007f]/;
const WINDOWS_DRIVE = /^[A-Za-z]:/;
// With the u flag a surrogate pair reads as one code point, so only lone surrogates match.
const wellFormed = (s: string) => !/\p{Surrogate}/u.test(s);

function segmentProblem(segment: string, last: boolean, allowPartialLast: boolean): string | null {
  if (segment === '') return last && allowPartialLast ? null : 'empty path segment ("//", or a leading or trailing "/")';
  if (segment === '..') return '".." segment';
  if (segment === '.') return '"." segment';
  if (Buffer.byteLength(segment) > MAX_SEGMENT_BYTES) return `a segment longer than ${MAX_SEGMENT_BYTES} bytes`;
  return null;
}

function check(key: unknown, allowPartialLast: boolean): string {
  if (typeof key !== 'string') throw new StorageKeyError(String(key), 'not a string');
  if (key.length === 0) throw new StorageKeyError(key, 'empty');
  if (key.includes('\u0000')) throw new StorageKeyError(key, 'contains a NUL byte');
  if (CONTROL.test(key)) throw new StorageKeyError(key, 'contains a control character');
  if (key.includes('\\')) throw new StorageKeyError(key, 'contains a backslash');
  if (key.startsWith('/') || WINDOWS_DRIVE.test(key)) throw new StorageKeyError(key, 'absolute path');
  // Lone surrogates become U+FFFD when encoded, so two different strings would name one object.
  if (!wellFormed(key)) throw new StorageKeyError(key, 'not well-formed Unicode');
  // Same reason: "é" precomposed and decomposed must not be two objects on S3 and one on macOS.
  if (key.normalize('NFC') !== key) throw new StorageKeyError(key, 'not in Unicode NFC form');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) throw new StorageKeyError(key, `longer than ${MAX_KEY_BYTES} bytes`);
  const segments = key.split('/');
  segments.forEach((segment, i) => {
    const problem = segmentProblem(segment, i === segments.length - 1, allowPartialLast);
    if (problem) throw new StorageKeyError(key, problem);
  });
  if (segments[0] !== ORGS_ROOT || segments.length < 2 || !ORG_ID.test(segments[1])) {
    throw new StorageKeyError(key, `must start with "${ORGS_ROOT}/<organizationId>/"`);
  }
  return key;
}

/** A full object key: "orgs/<orgId>/<at least one more segment>". Returns it unchanged or throws StorageKeyError. */
export function checkKey(key: string): string {
  check(key, false);
  if (key.split('/').length < 3) throw new StorageKeyError(key, `must start with "${ORGS_ROOT}/<organizationId>/"`);
  return key;
}

/** A listing prefix: the same rules, except that the last segment may be partial or empty ("orgs/x/datasets/"). */
export function checkPrefix(prefix: string): string {
  check(prefix, true);
  if (prefix.split('/').length < 3) {
    throw new StorageKeyError(prefix, `a listing prefix must start with "${ORGS_ROOT}/<organizationId>/"`);
  }
  return prefix;
}

export function orgPrefix(organizationId: string): string {
  if (!ORG_ID.test(organizationId)) throw new StorageKeyError(organizationId, 'not an organization id');
  return `${ORGS_ROOT}/${organizationId}/`;
}

/** Builds "orgs/<orgId>/<part>/<part>..."; a part may not contain "/" (pass segments separately). */
export function orgKey(organizationId: string, ...parts: string[]): string {
  for (const part of parts) {
    if (part.includes('/')) throw new StorageKeyError(part, 'a key part may not contain "/"; pass segments separately');
  }
  return checkKey(orgPrefix(organizationId) + parts.join('/'));
}

// Metadata keys that both S3 (lowercased header names) and Azure (C# identifiers) accept unchanged.
const META_KEY = /^[a-z][a-z0-9_]{0,63}$/;
const META_VALUE = /^[\x20-\x7e]*$/;
// S3 caps user metadata at 2 KB in total; keeping every backend to it keeps objects portable.
const MAX_METADATA_BYTES = 2048;

export function checkMetadata(metadata: Record<string, string> | undefined): Record<string, string> {
  if (!metadata) return {};
  let total = 0;
  for (const [k, v] of Object.entries(metadata)) {
    if (!META_KEY.test(k)) throw new StorageInputError(`metadata key "${k}": lowercase letters, digits and "_", starting with a letter`);
    if (typeof v !== 'string' || !META_VALUE.test(v)) throw new StorageInputError(`metadata "${k}": value must be printable ASCII`);
    total += k.length + v.length;
  }
  if (total > MAX_METADATA_BYTES) throw new StorageInputError(`metadata exceeds ${MAX_METADATA_BYTES} bytes`);
  return { ...metadata };
}

// type/subtype with optional parameters; no CR/LF, so it can never split a header.
const CONTENT_TYPE = /^[A-Za-z0-9!#$&^_.+-]{1,127}\/[A-Za-z0-9!#$&^_.+-]{1,127}(\s*;\s*[A-Za-z0-9!#$&^_.+-]+=("[\x20-\x21\x23-\x7e]*"|[A-Za-z0-9!#$&^_.+-]+))*$/;

export function checkContentType(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  if (contentType.length > 255 || !CONTENT_TYPE.test(contentType)) {
    throw new StorageInputError(`content type ${JSON.stringify(contentType.slice(0, 100))} is not a valid media type`);
  }
  return contentType;
}

// SigV4 presigned URLs cannot outlive 7 days; holding every backend to it keeps them interchangeable.
export const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;

export function checkExpiry(expiresInSeconds: number): number {
  if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < 1 || expiresInSeconds > MAX_PRESIGN_SECONDS) {
    throw new StorageInputError(`expiresInSeconds must be a whole number from 1 to ${MAX_PRESIGN_SECONDS}`);
  }
  return expiresInSeconds;
}

export function checkDownloadName(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  if (name.length === 0 || name.length > 255 || CONTROL.test(name) || /[\\/]/.test(name) || !wellFormed(name)) {
    throw new StorageInputError('downloadName must be 1-255 characters with no "/", "\\" or control characters');
  }
  return name;
}

/** Content-Disposition for a download: always an attachment, with an ASCII fallback and the UTF-8 name (RFC 6266). */
export function attachmentDisposition(filename: string | null | undefined): string {
  if (!filename) return 'attachment';
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

/** A Storage confined to one organization's prefix. */
export interface OrgStorage extends Storage {
  readonly organizationId: string;
  readonly prefix: string;
  /** orgKey() for this organization. */
  key(...parts: string[]): string;
}

/**
 * The only way services should reach storage: every key and prefix is checked here, before any
 * backend call, so a key of another organization (or one that escapes the prefix) never leaves
 * the process.
 */
export function orgScoped(storage: Storage, organizationId: string): OrgStorage {
  const prefix = orgPrefix(organizationId);
  const own = (key: string) => {
    checkKey(key);
    if (!key.startsWith(prefix)) throw new StorageAccessError(key, organizationId);
    return key;
  };
  return {
    kind: storage.kind,
    organizationId,
    prefix,
    key: (...parts: string[]) => orgKey(organizationId, ...parts),
    put: (key: string, body: Readable | Uint8Array, opts?: PutOptions): Promise<PutResult> =>
      call(() => storage.put(own(key), body, opts)),
    get: (key: string, opts?: GetOptions): Promise<Readable> => call(() => storage.get(own(key), opts)),
    head: (key: string): Promise<ObjectInfo | null> => call(() => storage.head(own(key))),
    delete: (key: string): Promise<void> => call(() => storage.delete(own(key))),
    async *list(listPrefix: string): AsyncIterable<ListEntry> {
      checkPrefix(listPrefix);
      if (!listPrefix.startsWith(prefix)) throw new StorageAccessError(listPrefix, organizationId);
      yield* storage.list(listPrefix);
    },
    presignGet: (key: string, opts: PresignGetOptions): Promise<PresignedRequest> =>
      call(() => storage.presignGet(own(key), opts)),
    presignPut: (key: string, opts: PresignPutOptions): Promise<PresignedRequest> =>
      call(() => storage.presignPut(own(key), opts)),
    sha256: (key: string): Promise<string> => call(() => storage.sha256(own(key))),
    ...(storage.uploadInProgress
      ? { uploadInProgress: (key: string): Promise<boolean> => call(() => storage.uploadInProgress!(own(key))) }
      : {}),
    // The scoped view does not own the backend: several organizations share the platform's.
    close: async () => {},
  };
}

// Turns a synchronous key refusal into a rejected promise, so callers handle one failure path.
function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}
