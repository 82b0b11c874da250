// AWS S3 and S3-compatible services (MinIO, Cloudflare R2, Google Cloud Storage through its S3
// interoperability). The SDK is imported on first use, so a deployment on local storage never
// loads it.
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';
import { StorageBackendError, StorageChangedError, StorageError, StorageNotFoundError, StorageRangeError } from './errors.js';
import { attachmentDisposition, checkContentType, checkDownloadName, checkExpiry, checkKey, checkMetadata, checkPrefix } from './keys.js';
import { HashingCounter, resolveRange, sha256Of, toReadable } from './streams.js';
import type {
  GetOptions,
  ListEntry,
  ObjectInfo,
  PresignedRequest,
  PresignGetOptions,
  PresignPutOptions,
  PutOptions,
  PutResult,
  S3BackendConfig,
  Storage,
} from './types.js';

// Parts uploaded at once per put: memory in flight is about this many parts plus one.
const QUEUE_SIZE = 4;

type Deps = {
  sdk: typeof import('@aws-sdk/client-s3');
  getSignedUrl: typeof import('@aws-sdk/s3-request-presigner').getSignedUrl;
  Upload: typeof import('@aws-sdk/lib-storage').Upload;
  client: S3Client;
};

export class S3Storage implements Storage {
  readonly kind = 's3' as const;
  private deps: Promise<Deps> | null = null;

  constructor(private readonly cfg: S3BackendConfig) {
    if (cfg.partSizeBytes < 5 * 1024 * 1024) throw new Error('S3 multipart parts must be at least 5 MiB');
  }

  private load(): Promise<Deps> {
    this.deps ??= (async () => {
      const [sdk, presigner, lib] = await Promise.all([
        import('@aws-sdk/client-s3'),
        import('@aws-sdk/s3-request-presigner'),
        import('@aws-sdk/lib-storage'),
      ]);
      const client = new sdk.S3Client({
        region: this.cfg.region,
        endpoint: this.cfg.endpoint,
        forcePathStyle: this.cfg.forcePathStyle,
        credentials: this.cfg.credentials,
        // The SDK's default adds CRC32 trailers (aws-chunked bodies) and checksum parameters to
        // presigned PUTs; several S3-compatible services reject those, and a presigned PUT would
        // carry the checksum of an empty body. Integrity is covered by TLS and our own SHA-256.
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 3,
      });
      return { sdk, getSignedUrl: presigner.getSignedUrl, Upload: lib.Upload, client };
    })();
    return this.deps;
  }

  async put(key: string, body: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const contentType = checkContentType(opts.contentType);
    const metadata = checkMetadata(opts.metadata);
    const { Upload, client } = await this.load();
    const source = toReadable(body);
    const counter = new HashingCounter(opts.maxBytes);
    source.on('error', (err) => counter.destroy(err));
    source.pipe(counter);
    // lib-storage sends one PutObject for a small body and a multipart upload otherwise; a
    // failed multipart upload is aborted, so no partial object ever becomes visible.
    const upload = new Upload({
      client,
      params: { Bucket: this.cfg.bucket, Key: key, Body: counter, ContentType: contentType, Metadata: metadata },
      partSize: this.cfg.partSizeBytes,
      queueSize: QUEUE_SIZE,
      leavePartsOnError: false,
    });
    try {
      const out = await upload.done();
      return { key, size: counter.bytes, sha256: counter.sha256(), etag: unquote(out.ETag) };
    } catch (err) {
      source.unpipe(counter);
      source.destroy();
      counter.destroy();
      if (counter.errored instanceof StorageError) throw counter.errored;
      throw translate(err, 'put', key);
    }
  }

  async get(key: string, opts?: GetOptions): Promise<Readable> {
    checkKey(key);
    const ranged = opts?.start !== undefined || opts?.end !== undefined;
    // Validates the numbers; the clamping itself is left to S3.
    resolveRange(Number.MAX_SAFE_INTEGER, opts);
    const { sdk, client } = await this.load();
    try {
      const out = await client.send(
        new sdk.GetObjectCommand({
          Bucket: this.cfg.bucket,
          Key: key,
          Range: ranged ? `bytes=${opts?.start ?? 0}-${opts?.end ?? ''}` : undefined,
          IfMatch: opts?.ifMatch !== undefined ? `"${opts.ifMatch}"` : undefined,
        }),
      );
      return out.Body as Readable;
    } catch (err) {
      if (status(err) === 416) throw new StorageRangeError(key, opts?.start ?? 0);
      if (status(err) === 412 && opts?.ifMatch !== undefined) throw new StorageChangedError(key, opts.ifMatch);
      throw translate(err, 'get', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    checkKey(key);
    const { sdk, client } = await this.load();
    try {
      const out = await client.send(new sdk.HeadObjectCommand({ Bucket: this.cfg.bucket, Key: key }));
      return {
        key,
        size: out.ContentLength ?? 0,
        contentType: out.ContentType ?? null,
        metadata: out.Metadata ?? {},
        lastModified: out.LastModified ?? new Date(0),
        etag: unquote(out.ETag),
      };
    } catch (err) {
      if (status(err) === 404) return null;
      throw translate(err, 'head', key);
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    const { sdk, client } = await this.load();
    try {
      await client.send(new sdk.DeleteObjectCommand({ Bucket: this.cfg.bucket, Key: key }));
    } catch (err) {
      if (status(err) === 404) return;
      throw translate(err, 'delete', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ListEntry> {
    checkPrefix(prefix);
    const { sdk, client } = await this.load();
    let token: string | undefined;
    do {
      let out;
      try {
        out = await client.send(
          new sdk.ListObjectsV2Command({ Bucket: this.cfg.bucket, Prefix: prefix, ContinuationToken: token }),
        );
      } catch (err) {
        throw translate(err, 'list', prefix);
      }
      for (const item of out.Contents ?? []) {
        if (!item.Key) continue;
        yield {
          key: item.Key,
          size: item.Size ?? 0,
          lastModified: item.LastModified ?? new Date(0),
          etag: unquote(item.ETag),
        };
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  async presignGet(key: string, opts: PresignGetOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expiresIn = checkExpiry(opts.expiresInSeconds);
    const filename = checkDownloadName(opts.downloadName);
    const { sdk, client, getSignedUrl } = await this.load();
    const command = new sdk.GetObjectCommand({
      Bucket: this.cfg.bucket,
      Key: key,
      ResponseContentDisposition: filename ? attachmentDisposition(filename) : undefined,
    });
    const url = await getSignedUrl(client, command, { expiresIn });
    return { method: 'GET', url, headers: {}, expiresAt: new Date(Date.now() + expiresIn * 1000) };
  }

  async presignPut(key: string, opts: PresignPutOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expiresIn = checkExpiry(opts.expiresInSeconds);
    const contentType = checkContentType(opts.contentType);
    const { sdk, client, getSignedUrl } = await this.load();
    const once = opts.onlyIfAbsent === true;
    const command = new sdk.PutObjectCommand({
      Bucket: this.cfg.bucket,
      Key: key,
      ContentType: contentType,
      ...(once ? { IfNoneMatch: '*' } : {}),
    });
    // content-type and if-none-match are signed headers, so the upload must send exactly these values.
    const signed = new Set<string>([...(contentType ? ['content-type'] : []), ...(once ? ['if-none-match'] : [])]);
    const url = await getSignedUrl(client, command, {
      expiresIn,
      signableHeaders: signed.size ? signed : undefined,
    });
    return {
      method: 'PUT',
      url,
      headers: { ...(contentType ? { 'content-type': contentType } : {}), ...(once ? { 'if-none-match': '*' } : {}) },
      expiresAt: new Date(Date.now() + expiresIn * 1000),
    };
  }

  async sha256(key: string): Promise<string> {
    return sha256Of(await this.get(key));
  }

  async close(): Promise<void> {
    if (!this.deps) return;
    const { client } = await this.deps;
    client.destroy();
    this.deps = null;
  }
}

function status(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function translate(err: unknown, op: string, key: string): Error {
  if (err instanceof StorageError) return err;
  const code = status(err);
  const name = (err as Error | null)?.name;
  if (code === 404 && (op === 'get' || name === 'NoSuchKey')) return new StorageNotFoundError(key);
  const message = (err as Error | null)?.message ?? String(err);
  return new StorageBackendError(`S3 ${op} of "${key}" failed: ${name ?? 'Error'}${code ? ` (HTTP ${code})` : ''}: ${message}`, {
    cause: err,
  });
}

function unquote(etag: string | undefined): string | null {
  return etag ? etag.replace(/^"|"$/g, '') : null;
}
