// What a storage profile's `config` and `credentials` hold per kind, and how they become a
// backend configuration. Unknown keys are refused so a misspelt option fails at creation.
import { z } from 'zod';
import type { BackendConfig } from '../../storage/types.js';
import type { StorageProfileKind } from './entity.js';

const endpoint = z
  .string()
  .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'must be an http(s) URL without query or fragment')
  .transform((u) => u.replace(/\/+$/, ''))
  .optional();

export const storageConfigSchemas = {
  S3: z.strictObject({
    bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'must be an S3 bucket name'),
    region: z.string().regex(/^[a-z0-9-]{2,32}$/, 'must be a region such as us-east-1 (or "auto" for R2)').default('us-east-1'),
    endpoint: endpoint.describe('For S3-compatible services: MinIO, R2, https://storage.googleapis.com'),
    forcePathStyle: z.boolean().default(false),
  }),
  AZURE: z.strictObject({
    accountName: z.string().regex(/^[a-z0-9]{3,24}$/, 'must be a storage account name'),
    container: z.string().regex(/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/, 'must be a container name'),
    endpoint: endpoint.describe('Defaults to https://<accountName>.blob.core.windows.net'),
  }),
} satisfies Record<StorageProfileKind, z.ZodType>;

export const storageCredentialSchemas = {
  S3: z.strictObject({
    // Not only AWS's format: MinIO, R2 and GCS HMAC keys look different.
    accessKeyId: z.string().regex(/^[\x21-\x7e]{3,128}$/, 'must be an access key id'),
    secretAccessKey: z.string().min(8).max(256),
    sessionToken: z.string().min(16).max(4096).optional(),
  }),
  AZURE: z.strictObject({
    accountKey: z.string().regex(/^[A-Za-z0-9+/=]{16,256}$/, 'must be the base64 account key'),
  }),
} satisfies Record<StorageProfileKind, z.ZodType>;

export type StorageConfigOf<K extends StorageProfileKind> = z.output<(typeof storageConfigSchemas)[K]>;

const mask = (s: string) => (s.length <= 8 ? '…' : `${s.slice(0, 4)}…${s.slice(-4)}`);

/** Tells credentials apart without revealing them: identifiers only, never secrets. */
export function storageCredentialsHint(kind: StorageProfileKind, credentials: Record<string, unknown>): string {
  return kind === 'S3' ? `access key ${mask(String(credentials.accessKeyId))}` : 'account key';
}

/** The backend a profile describes; config and credentials must already have passed the schemas. */
export function backendFromProfile(
  kind: StorageProfileKind,
  config: Record<string, unknown>,
  credentials: Record<string, unknown>,
  partSizeBytes: number,
): BackendConfig {
  if (kind === 'S3') {
    const c = storageConfigSchemas.S3.parse(config);
    const k = storageCredentialSchemas.S3.parse(credentials);
    return { kind: 's3', bucket: c.bucket, region: c.region, endpoint: c.endpoint, forcePathStyle: c.forcePathStyle, credentials: k, partSizeBytes };
  }
  const c = storageConfigSchemas.AZURE.parse(config);
  const k = storageCredentialSchemas.AZURE.parse(credentials);
  return { kind: 'azure', accountName: c.accountName, accountKey: k.accountKey, container: c.container, endpoint: c.endpoint };
}

// Literal addresses of this host, private networks and cloud metadata services: an
// organization's endpoint must not turn the API into a proxy into the platform's own network.
const PRIVATE_HOST =
  /^(localhost|.*\.localhost|127\.\d+\.\d+\.\d+|10\.\d+\.\d+\.\d+|192\.168\.\d+\.\d+|172\.(1[6-9]|2\d|3[01])\.\d+\.\d+|169\.254\.\d+\.\d+|0\.0\.0\.0|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+|\[.*\])$/i;

/**
 * In production an organization's endpoint must be https and must not name a loopback, private,
 * link-local or IPv6-literal host. (A public name that resolves to a private address is not
 * caught here; deployments that need that guarantee filter egress at the network.)
 */
export function endpointProblem(url: string | undefined, production: boolean): string | null {
  if (!url || !production) return null;
  const parsed = new URL(url);
  if (parsed.protocol !== 'https:') return 'must use https';
  if (PRIVATE_HOST.test(parsed.hostname)) return 'must not point at a loopback, private or link-local address';
  return null;
}
