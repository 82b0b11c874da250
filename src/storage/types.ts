// The one storage interface every backend implements (local filesystem, S3 and S3-compatible,
// Azure Blob). Callers get it through orgScoped() (keys.ts), which refuses keys outside the
// caller's organization before a backend sees them.
import type { Readable } from 'node:stream';

export type StorageKind = 'local' | 's3' | 'azure';

export interface PutOptions {
  /** Stored and served back as Content-Type; application/octet-stream when absent. */
  contentType?: string;
  /** Keys: lowercase letters, digits, "_" (the intersection of what S3 and Azure accept); values: printable ASCII. */
  metadata?: Record<string, string>;
  /** Refuse with StorageTooLargeError, storing nothing, once the body passes this many bytes. */
  maxBytes?: number;
}

export interface PutResult {
  key: string;
  size: number;
  /** Hex SHA-256 of the bytes written, computed while streaming them. */
  sha256: string;
  etag: string | null;
}

/** Inclusive byte offsets, as in an HTTP Range header; `end` past the object is clamped. */
export interface GetOptions {
  start?: number;
  end?: number;
  /**
   * The etag head() (or put()) reported: the read fails with StorageChangedError if the object
   * was replaced since, so several ranged reads of one object all see the same bytes.
   */
  ifMatch?: string;
}

export interface ObjectInfo {
  key: string;
  size: number;
  contentType: string | null;
  metadata: Record<string, string>;
  lastModified: Date;
  etag: string | null;
}

/** What a listing returns: S3 listings carry no content type or metadata, so no backend promises them. */
export interface ListEntry {
  key: string;
  size: number;
  lastModified: Date;
  etag: string | null;
}

export interface PresignGetOptions {
  expiresInSeconds: number;
  /** Served as Content-Disposition: attachment; filename=... */
  downloadName?: string;
}

export interface PresignPutOptions {
  expiresInSeconds: number;
  /**
   * Write-once: the upload is refused when the object already exists, and (local, S3, Azure with
   * the header sent) when another upload lands first. Local: signed, and enforced by the server
   * with an exclusive claim and an exclusive commit (409 while one is in flight, 412 after); S3:
   * a signed If-None-Match: * (412 from the service); Azure: a create-only SAS plus
   * If-None-Match: * among the headers to send (409). The README says what each guarantees.
   */
  onlyIfAbsent?: boolean;
  /** Bound into the signature where the backend can (local, S3): the upload must send exactly this Content-Type. */
  contentType?: string;
}

/**
 * A presigned request. Not just a URL: Azure's Put Blob needs `x-ms-blob-type: BlockBlob`, and a
 * signed Content-Type must be sent as signed, so the client has to be told which headers to send.
 */
export interface PresignedRequest {
  method: 'GET' | 'PUT';
  url: string;
  headers: Record<string, string>;
  expiresAt: Date;
}

export interface Storage {
  readonly kind: StorageKind;
  /** Streams the body (never buffering it whole), hashing while writing; the object appears whole or not at all. */
  put(key: string, body: Readable | Uint8Array, opts?: PutOptions): Promise<PutResult>;
  /** Throws StorageNotFoundError (missing) or StorageRangeError (start past the end) before returning a stream. */
  get(key: string, opts?: GetOptions): Promise<Readable>;
  head(key: string): Promise<ObjectInfo | null>;
  /** Idempotent: deleting a missing object succeeds. */
  delete(key: string): Promise<void>;
  /** Every object whose key starts with `prefix`, in ascending key order (UTF-8 bytes). */
  list(prefix: string): AsyncIterable<ListEntry>;
  presignGet(key: string, opts: PresignGetOptions): Promise<PresignedRequest>;
  presignPut(key: string, opts: PresignPutOptions): Promise<PresignedRequest>;
  /** Hex SHA-256 of the stored bytes, read back by streaming. */
  sha256(key: string): Promise<string>;
  /**
   * Whether a write-once upload to `key` is being received right now. Only backends that receive
   * uploads themselves (local) can know; on S3 and Azure the service refuses the later of two
   * conditional PUTs instead, so they leave this out.
   */
  uploadInProgress?(key: string): Promise<boolean>;
  /** Releases sockets and clients; the instance is unusable afterwards. */
  close(): Promise<void>;
}

export interface LocalBackendConfig {
  kind: 'local';
  /** Directory holding the objects (CVTRAIN_DATA_DIR/storage by default). */
  root: string;
}

export interface S3BackendConfig {
  kind: 's3';
  bucket: string;
  region: string;
  /** For S3-compatible services (MinIO, R2, GCS interoperability); absent for AWS itself. */
  endpoint?: string;
  forcePathStyle: boolean;
  /** Absent: the AWS SDK's default chain (environment, shared config, instance or task role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Multipart part size; memory in flight is about partSize x queueSize per upload. */
  partSizeBytes: number;
}

export interface AzureBackendConfig {
  kind: 'azure';
  accountName: string;
  /** Shared key: needed to sign SAS URLs. */
  accountKey: string;
  container: string;
  /** Absent: https://<account>.blob.core.windows.net; Azurite: http://127.0.0.1:10000/devstoreaccount1. */
  endpoint?: string;
}

export type BackendConfig = LocalBackendConfig | S3BackendConfig | AzureBackendConfig;

/** The storage part of the server configuration (src/config.ts). */
export interface StorageSettings {
  backend: BackendConfig;
  /** Base of absolute URLs the API hands out (local presigned links); null: http://HOST:PORT as listening. */
  publicUrl: string | null;
  /** HMAC key of local presigned links. */
  secret: Buffer;
  presignTtlSeconds: number;
  maxUploadBytes: number;
  /** Multipart part size for every S3 client, the platform's and organizations' own. */
  s3PartSizeBytes: number;
}
