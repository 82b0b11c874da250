// Azure Blob Storage, with SAS URLs signed by the account's shared key. The SDK is imported on
// first use, so a deployment on local storage never loads it.
import type { Readable } from 'node:stream';
import type { ContainerClient, StorageSharedKeyCredential } from '@azure/storage-blob';
import { StorageBackendError, StorageChangedError, StorageError, StorageNotFoundError, StorageRangeError } from './errors.js';
import {
  attachmentDisposition,
  checkContentType,
  checkDownloadName,
  checkExpiry,
  checkKey,
  checkMetadata,
  checkPrefix,
} from './keys.js';
import { HashingCounter, resolveRange, sha256Of, toReadable } from './streams.js';
import type {
  AzureBackendConfig,
  GetOptions,
  ListEntry,
  ObjectInfo,
  PresignedRequest,
  PresignGetOptions,
  PresignPutOptions,
  PutOptions,
  PutResult,
  Storage,
} from './types.js';

// Block size and blocks in flight per upload: memory is about their product.
const BLOCK_BYTES = 8 * 1024 * 1024;
const CONCURRENCY = 4;

type Deps = {
  sdk: typeof import('@azure/storage-blob');
  credential: StorageSharedKeyCredential;
  container: ContainerClient;
};

export class AzureStorage implements Storage {
  readonly kind = 'azure' as const;
  private deps: Promise<Deps> | null = null;

  constructor(
    private readonly cfg: AzureBackendConfig,
    // Tests lower this to reach a second page without writing 5,000 blobs.
    private readonly listPageSize = 5000,
  ) {}

  private load(): Promise<Deps> {
    this.deps ??= (async () => {
      const sdk = await import('@azure/storage-blob');
      const credential = new sdk.StorageSharedKeyCredential(this.cfg.accountName, this.cfg.accountKey);
      const endpoint = this.cfg.endpoint ?? `https://${this.cfg.accountName}.blob.core.windows.net`;
      const service = new sdk.BlobServiceClient(endpoint, credential, { retryOptions: { maxTries: 3 } });
      return { sdk, credential, container: service.getContainerClient(this.cfg.container) };
    })();
    return this.deps;
  }

  async put(key: string, body: Readable | Uint8Array, opts: PutOptions = {}): Promise<PutResult> {
    checkKey(key);
    const contentType = checkContentType(opts.contentType);
    const metadata = checkMetadata(opts.metadata);
    const { container } = await this.load();
    const source = toReadable(body);
    const counter = new HashingCounter(opts.maxBytes);
    source.on('error', (err) => counter.destroy(err));
    source.pipe(counter);
    try {
      // Staged blocks stay invisible until the final commit; a failed upload leaves no blob
      // (Azure discards uncommitted blocks after a week).
      const out = await container.getBlockBlobClient(key).uploadStream(counter, BLOCK_BYTES, CONCURRENCY, {
        blobHTTPHeaders: contentType ? { blobContentType: contentType } : undefined,
        metadata,
      });
      return { key, size: counter.bytes, sha256: counter.sha256(), etag: unquote(out.etag) };
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
    resolveRange(Number.MAX_SAFE_INTEGER, opts);
    const { container } = await this.load();
    const start = opts?.start ?? 0;
    const count = opts?.end !== undefined ? opts.end - start + 1 : undefined;
    try {
      const out = await container
        .getBlobClient(key)
        .download(ranged ? start : 0, ranged ? count : undefined, opts?.ifMatch !== undefined ? { conditions: { ifMatch: `"${opts.ifMatch}"` } } : {});
      const body = out.readableStreamBody as Readable;
      // Azurite answers a range starting exactly at the end with an empty 206 ("bytes 10-9/10")
      // where Azure answers 416; hold every service to the 416.
      const total = Number(/\/(\d+)$/.exec(out.contentRange ?? '')?.[1] ?? NaN);
      if (ranged && start >= total) {
        body.destroy();
        throw new StorageRangeError(key, start, total);
      }
      return body;
    } catch (err) {
      if (status(err) === 416) throw new StorageRangeError(key, start);
      if (status(err) === 412 && opts?.ifMatch !== undefined) throw new StorageChangedError(key, opts.ifMatch);
      throw translate(err, 'get', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | null> {
    checkKey(key);
    const { container } = await this.load();
    try {
      const p = await container.getBlobClient(key).getProperties();
      return {
        key,
        size: p.contentLength ?? 0,
        contentType: p.contentType ?? null,
        metadata: p.metadata ?? {},
        lastModified: p.lastModified ?? new Date(0),
        etag: unquote(p.etag),
      };
    } catch (err) {
      if (status(err) === 404) return null;
      throw translate(err, 'head', key);
    }
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    const { container } = await this.load();
    try {
      await container.getBlobClient(key).deleteIfExists({ deleteSnapshots: 'include' });
    } catch (err) {
      throw translate(err, 'delete', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ListEntry> {
    checkPrefix(prefix);
    const { container } = await this.load();
    try {
      for await (const page of container.listBlobsFlat({ prefix }).byPage({ maxPageSize: this.listPageSize })) {
        for (const item of page.segment.blobItems) {
          yield {
            key: item.name,
            size: item.properties.contentLength ?? 0,
            lastModified: item.properties.lastModified,
            etag: unquote(item.properties.etag),
          };
        }
      }
    } catch (err) {
      throw translate(err, 'list', prefix);
    }
  }

  async presignGet(key: string, opts: PresignGetOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expiresIn = checkExpiry(opts.expiresInSeconds);
    const filename = checkDownloadName(opts.downloadName);
    const expiresAt = new Date(Date.now() + expiresIn * 1000);
    const url = await this.sasUrl(key, 'r', expiresAt, filename ? attachmentDisposition(filename) : undefined);
    return { method: 'GET', url, headers: {}, expiresAt };
  }

  async presignPut(key: string, opts: PresignPutOptions): Promise<PresignedRequest> {
    checkKey(key);
    const expiresIn = checkExpiry(opts.expiresInSeconds);
    const contentType = checkContentType(opts.contentType);
    const expiresAt = new Date(Date.now() + expiresIn * 1000);
    // A SAS cannot bind the Content-Type or If-None-Match; they are only passed on as headers to
    // send. Write-once links get create permission alone, which Azure refuses for a blob that
    // exists (403), so a client that drops If-None-Match still cannot overwrite a stored blob;
    // the header is what settles two uploads racing to create it.
    const url = await this.sasUrl(key, opts.onlyIfAbsent ? 'c' : 'cw', expiresAt);
    return {
      method: 'PUT',
      url,
      headers: {
        'x-ms-blob-type': 'BlockBlob',
        ...(contentType ? { 'content-type': contentType } : {}),
        ...(opts.onlyIfAbsent ? { 'if-none-match': '*' } : {}),
      },
      expiresAt,
    };
  }

  async sha256(key: string): Promise<string> {
    return sha256Of(await this.get(key));
  }

  async close(): Promise<void> {
    this.deps = null;
  }

  private async sasUrl(key: string, permissions: string, expiresOn: Date, contentDisposition?: string): Promise<string> {
    const { sdk, credential, container } = await this.load();
    const blob = container.getBlobClient(key);
    const sas = sdk.generateBlobSASQueryParameters(
      {
        containerName: this.cfg.container,
        blobName: key,
        permissions: sdk.BlobSASPermissions.parse(permissions),
        expiresOn,
        contentDisposition,
        protocol: blob.url.startsWith('https:') ? sdk.SASProtocol.Https : sdk.SASProtocol.HttpsAndHttp,
      },
      credential,
    );
    return `${blob.url}?${sas.toString()}`;
  }
}

function status(err: unknown): number | undefined {
  return (err as { statusCode?: number } | null)?.statusCode;
}

function translate(err: unknown, op: string, key: string): Error {
  if (err instanceof StorageError) return err;
  const code = status(err);
  if (code === 404 && op === 'get') return new StorageNotFoundError(key);
  const e = err as { code?: string; message?: string } | null;
  return new StorageBackendError(
    `Azure ${op} of "${key}" failed: ${e?.code ?? 'Error'}${code ? ` (HTTP ${code})` : ''}: ${e?.message ?? String(err)}`,
    { cause: err },
  );
}

function unquote(etag: string | undefined): string | null {
  return etag ? etag.replace(/^"|"$/g, '') : null;
}
