// Expansion limits: what an archive may unpack to. Everything counts bytes actually produced
// by the decompressor; sizes declared in headers are only used to refuse early.

export interface ValidationLimits {
  /** Entries of any kind (files, folders, links). Memory grows ~200 bytes per entry. */
  maxEntries: number;
  /** Sum of decompressed file contents. */
  maxTotalUncompressedBytes: number;
  /** Decompressed size of any single entry. */
  maxEntryUncompressedBytes: number;
  /** Decompressed / compressed bytes, per zip entry and over a whole .tar.gz stream. */
  maxCompressionRatio: number;
}

const GiB = 1024 ** 3;

// The lead moves these into src/config.ts; until then finalizeDatasetVersion can pass overrides.
export const DEFAULT_VALIDATION_LIMITS: Readonly<ValidationLimits> = Object.freeze({
  // 500k images with their labels; the per-entry bookkeeping stays near 200 MB there.
  maxEntries: 1_000_000,
  // Larger than any dataset we expect to train on one node's disk after extraction.
  maxTotalUncompressedBytes: 64 * GiB,
  // A COCO instances file for 1M annotations is ~0.5 GB; images are far smaller.
  maxEntryUncompressedBytes: 4 * GiB,
  // JPEG/PNG barely compress, COCO JSON ~10:1, a tar of tiny YOLO labels ~20:1; deflate bombs
  // sit near its 1032:1 maximum, so 100 keeps a wide margin on both sides.
  maxCompressionRatio: 100,
});

// The ratio is judged only past this many output bytes: a 40-byte label file that deflates to
// 20 bytes, or a run of zero padding in a tar, says nothing about a bomb.
export const RATIO_GRACE_BYTES = 1024 * 1024;

// Caps on the problems list: enough to fix a dataset in one go, bounded so a hostile archive
// cannot make the report (stored as JSON on the row) huge.
export const MAX_PROBLEMS = 1000;
export const MAX_PROBLEMS_PER_FILE = 50;

// Files the validator reads whole into memory, and their caps.
export const MAX_DATA_YAML_BYTES = 4 * 1024 * 1024;
// Longest string kept from a COCO JSON value (file names, category names).
export const MAX_JSON_STRING_BYTES = 1024 * 1024;
// Python's json module gives up (RecursionError, which the trainer does not catch) near 1000.
export const MAX_JSON_DEPTH = 512;
// Longest entry name accepted; longer ones fail to extract on common filesystems anyway.
export const MAX_ENTRY_NAME_BYTES = 4096;

export function resolveLimits(partial: Partial<ValidationLimits> | undefined): ValidationLimits {
  const limits = { ...DEFAULT_VALIDATION_LIMITS, ...(partial ?? {}) };
  for (const [key, value] of Object.entries(limits)) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new RangeError(`validation limit ${key} must be a positive number (got ${String(value)})`);
    }
  }
  return limits;
}

export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} bytes` : `${v.toFixed(1)} ${units[u]}`;
}

/**
 * Thrown inside the archive readers to stop expanding the archive; the caller records the
 * problem, stops decompressing and only finishes hashing the raw bytes.
 */
export class StopExpansion extends Error {
  constructor(
    public readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = 'StopExpansion';
  }
}

/** Counts entries and decompressed bytes against the limits, for both archive readers. */
export class ExpansionGuard {
  entries = 0;
  totalBytes = 0;

  constructor(
    readonly limits: ValidationLimits,
    private readonly archiveName: string,
  ) {}

  countEntry(): void {
    this.entries++;
    if (this.entries > this.limits.maxEntries) {
      throw new StopExpansion(this.archiveName, `the archive has more than ${this.limits.maxEntries} entries (the limit); validation stopped`);
    }
  }

  /** Sizes from headers: refusing early is safe because the real bytes are counted as well. */
  checkDeclaredEntrySize(path: string, size: number): void {
    if (size > this.limits.maxEntryUncompressedBytes) {
      throw new StopExpansion(
        path,
        `entry declares ${formatBytes(size)}, more than the ${formatBytes(this.limits.maxEntryUncompressedBytes)} allowed per entry; validation stopped`,
      );
    }
  }

  checkDeclaredTotal(total: number): void {
    if (total > this.limits.maxTotalUncompressedBytes) {
      throw new StopExpansion(
        this.archiveName,
        `the archive declares ${formatBytes(total)} of content, more than the ${formatBytes(this.limits.maxTotalUncompressedBytes)} allowed; validation stopped`,
      );
    }
  }

  /** Decompressed content bytes of one entry, as they are produced. */
  addEntryBytes(path: string, entrySoFar: number, n: number): void {
    this.totalBytes += n;
    if (entrySoFar > this.limits.maxEntryUncompressedBytes) {
      throw new StopExpansion(
        path,
        `entry expands past ${formatBytes(this.limits.maxEntryUncompressedBytes)} (the limit per entry); refused as a likely zip bomb, validation stopped`,
      );
    }
    if (this.totalBytes > this.limits.maxTotalUncompressedBytes) {
      throw new StopExpansion(
        this.archiveName,
        `the archive expands past ${formatBytes(this.limits.maxTotalUncompressedBytes)} (the total limit); refused as a likely zip bomb, validation stopped`,
      );
    }
  }

  checkRatio(path: string, produced: number, consumed: number): void {
    if (produced > RATIO_GRACE_BYTES && produced > this.limits.maxCompressionRatio * Math.max(consumed, 1)) {
      throw new StopExpansion(
        path,
        `compression ratio above ${this.limits.maxCompressionRatio}:1 (${formatBytes(produced)} from ${formatBytes(consumed)}); refused as a likely zip bomb, validation stopped`,
      );
    }
  }
}
