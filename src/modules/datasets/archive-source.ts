// Random access to an archive in storage through ranged GETs, which the zip reader needs (its
// index sits at the end). Works the same on local files, S3 and Azure.
import { PassThrough, type Readable } from 'node:stream';
import type { Storage } from '../../storage/types.js';
import type { RandomAccessSource } from './validation/index.js';

/**
 * `etag` pins every read to the object head() described: should it be replaced between two reads
 * (a zip is read three times), the later read fails with StorageChangedError instead of handing
 * the validator bytes of another object than the one it hashed.
 */
export function storageSource(storage: Storage, key: string, size: number, etag?: string | null): RandomAccessSource {
  return {
    size,
    read(start: number, end: number): Readable {
      const out = new PassThrough();
      if (end <= start) {
        out.end();
        return out;
      }
      // The interface is synchronous; the ranged GET is not, so its stream is piped in once open.
      storage
        .get(key, { start, end: end - 1, ...(etag ? { ifMatch: etag } : {}) })
        .then((body) => {
          body.on('error', (err) => out.destroy(err));
          body.pipe(out);
        })
        .catch((err) => out.destroy(err));
      return out;
    },
  };
}
