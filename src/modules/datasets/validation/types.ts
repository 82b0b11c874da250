// The validator's public types. The report is what finalizeDatasetVersion stores on the
// DatasetVersion row (status, problems, classNames, splits, sha256, sizeBytes).
import type { Readable } from 'node:stream';
import type { ValidationLimits } from './limits.js';

export type DatasetFormat = 'YOLO' | 'COCO' | 'IMAGE_FOLDER';

export interface ValidationProblem {
  /** The entry inside the archive (as named in the archive); the archive's own name for problems of the archive as a whole. */
  path: string;
  /** 1-based line inside that file, where the problem has one. */
  line: number | null;
  message: string;
}

export interface SplitSummary {
  /** Images the trainer would use (readable, with readable labels). */
  images: number;
  /** Boxes on those images; 0 for IMAGE_FOLDER. */
  boxes: number;
}

export interface ValidationReport {
  status: 'READY' | 'INVALID';
  format: DatasetFormat;
  problems: ValidationProblem[];
  classNames: string[];
  splits: Record<string, SplitSummary>;
  /** Hex SHA-256 of the archive's bytes, always over the whole archive (also when validation stopped early). */
  sha256: string;
  sizeBytes: number;
  /** Every entry of the archive: files, folders, links, refused ones. */
  entries: number;
  /** Bytes of file content actually decompressed (not what headers claim). */
  uncompressedBytes: number;
  /**
   * Folder inside the archive that holds the dataset: '' when it lies at the top, or e.g.
   * 'mydata/' when the archive wraps everything in one folder. The extractor on the gpu-node
   * hands the trainer `<extract dir>/<root>`.
   */
  root: string;
}

/**
 * Random access to the archive bytes, which a zip needs (its index is at the end, and
 * symlink flags, sizes of streamed entries and the authoritative names live only there).
 * `read(start, end)` streams the half-open byte range [start, end); a local file
 * (fs.createReadStream with end = end - 1) and an S3 ranged GET (Range: bytes=start-(end-1))
 * both provide it.
 */
export interface RandomAccessSource {
  size: number;
  read(start: number, end: number): Readable;
}

export type ArchiveInput = Readable | RandomAccessSource;

export interface ValidateOptions {
  format: DatasetFormat;
  /** The uploaded file name; its ending picks the container: .zip, .tar.gz / .tgz, .tar. */
  archiveName: string;
  limits?: Partial<ValidationLimits>;
  /**
   * Only used when a zip arrives as a plain stream: it is spooled to a private folder made
   * under this one (default os.tmpdir()) and deleted afterwards. Tar archives are never spooled.
   */
  tempDir?: string;
  signal?: AbortSignal;
  /**
   * Zip only: inflate entries on two worker threads ('auto': when there are more than 32 MiB of
   * mid-sized deflated entries; otherwise on zlib's thread pool).
   */
  inflateWorkers?: 'auto' | 'always' | 'never';
}
