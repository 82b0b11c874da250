// Picks a backend from configuration, and keeps one client per organization-owned storage
// profile so each request does not build (and handshake) a new SDK client.
import path from 'node:path';
import { AzureStorage } from './azure.js';
import { LocalStorage } from './local.js';
import { S3Storage } from './s3.js';
import type { BackendConfig, Storage, StorageSettings } from './types.js';

export * from './errors.js';
export * from './keys.js';
export type * from './types.js';
export { LocalStorage, LOCAL_STORAGE_PATH } from './local.js';
export { createLocalStorageHandler } from './local-http.js';

/** Builds the backend `backend` names. Local storage also needs the link secret and public URL. */
export function createStorage(backend: BackendConfig, local?: { secret: Buffer; publicUrl: string }): Storage {
  switch (backend.kind) {
    case 'local':
      if (!local) throw new Error('local storage needs a link secret and a public URL');
      return new LocalStorage({ root: backend.root, ...local });
    case 's3':
      return new S3Storage(backend);
    case 'azure':
      return new AzureStorage(backend);
  }
}

// Profiles kept warm at once; an evicted one is rebuilt on its next use.
const MAX_CACHED_PROFILES = 256;

export class StorageRegistry {
  /** The platform's own storage: organizations without a storage profile of their own use it. */
  readonly platform: Storage;
  private readonly profiles = new Map<string, { stamp: string; storage: Storage }>();

  constructor(settings: StorageSettings, fallbackPublicUrl: string) {
    this.platform = createStorage(settings.backend, {
      secret: settings.secret,
      publicUrl: settings.publicUrl ?? fallbackPublicUrl,
    });
  }

  /** The platform storage when it is the local backend (its links are served by the API). */
  get local(): LocalStorage | null {
    return this.platform instanceof LocalStorage ? this.platform : null;
  }

  /**
   * The backend of one storage profile. `stamp` changes whenever the profile does (its
   * updatedAt), so edited credentials take effect on the next call.
   */
  forProfile(profileId: string, stamp: string, build: () => BackendConfig): Storage {
    const cached = this.profiles.get(profileId);
    if (cached && cached.stamp === stamp) {
      // Re-insert: Map order doubles as least-recently-used order.
      this.profiles.delete(profileId);
      this.profiles.set(profileId, cached);
      return cached.storage;
    }
    const backend = build();
    if (backend.kind === 'local') throw new Error('a storage profile cannot use the local backend');
    const storage = createStorage(backend);
    this.profiles.set(profileId, { stamp, storage });
    // Replaced and evicted clients are not closed: a request may still be streaming through
    // them. Their idle sockets time out on their own.
    if (this.profiles.size > MAX_CACHED_PROFILES) {
      const oldest = this.profiles.keys().next().value;
      if (oldest !== undefined) this.profiles.delete(oldest);
    }
    return storage;
  }

  async close(): Promise<void> {
    const all = [this.platform, ...[...this.profiles.values()].map((p) => p.storage)];
    this.profiles.clear();
    await Promise.all(all.map((s) => s.close()));
  }
}

/** Where the local backend keeps its files by default. */
export function defaultLocalRoot(dataDir: string): string {
  return path.join(dataDir, 'storage');
}
