// Random access to an archive in storage through ranged GETs, which the zip reader needs (its
// index sits at the end). Works the same on local files, S3 and Azure.
import { PassThrough, type Readable } from 'node:stream';
import type { Storage } from '../../storage/types.js';
import type { RandomAccessSource } from './validation/index.js';

export function storageSource(storage: Storage, key: string, size: number): RandomAccessSource {
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
        .get(key, { start, end: end - 1 })
        .then((body) => {
          body.on('error', (err) => out.destroy(err));
          body.pipe(out);
        })
        .catch((err) => out.destroy(err));
      return out;
    },
  };
}
