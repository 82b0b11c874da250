// Typed storage failures. Backends translate their SDK's errors into these so callers (services,
// the local HTTP handler) branch on a class, never on an SDK's error code or message.

export class StorageError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The object does not exist (or is not visible to this caller). */
export class StorageNotFoundError extends StorageError {
  constructor(public readonly key: string) {
    super(`No object at "${key}"`);
  }
}

/**
 * A key that breaks the key rules (see keys.ts). Keys are built by the server, so this is a bug or
 * an attack, never a user typo; the message says which rule so the bug is quick to find.
 */
export class StorageKeyError extends StorageError {
  constructor(public readonly key: string, public readonly reason: string) {
    super(`Refused storage key ${JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}...` : key)}: ${reason}`);
  }
}

/** A well-formed key of another organization: the cross-organization case, kept distinct for logs and tests. */
export class StorageAccessError extends StorageKeyError {
  constructor(key: string, public readonly organizationId: string) {
    super(key, `outside the prefix of organization ${organizationId}`);
  }
}

/** A byte range that starts past the end of the object. */
export class StorageRangeError extends StorageError {
  constructor(public readonly key: string, public readonly start: number, public readonly size: number | null = null) {
    super(`Range starting at byte ${start} is outside "${key}"${size === null ? '' : ` (${size} bytes)`}`);
  }
}

/** A body larger than the configured maximum; nothing was stored. */
export class StorageTooLargeError extends StorageError {
  constructor(public readonly maxBytes: number) {
    super(`Upload exceeds the limit of ${maxBytes} bytes`);
  }
}

/** Bad metadata, content type or presign options passed by the caller. */
export class StorageInputError extends StorageError {}

/** The backend refused our credentials or is unreachable/misconfigured. */
export class StorageBackendError extends StorageError {}

/** A write-once put (or upload link) onto a key that already holds an object; nothing was written. */
export class StorageExistsError extends StorageError {
  constructor(public readonly key: string) {
    super(`"${key}" already exists and this upload writes once`);
  }
}

/** A write-once put while another upload to the same key is still being received; nothing was written. */
export class StorageUploadInProgressError extends StorageError {
  constructor(public readonly key: string) {
    super(`another upload to "${key}" is in progress`);
  }
}

/** A read pinned to one version (GetOptions.ifMatch) found the object replaced since. */
export class StorageChangedError extends StorageError {
  constructor(public readonly key: string, public readonly expectedEtag: string) {
    super(`"${key}" changed since it was first read (expected etag ${expectedEtag})`);
  }
}
