// Problems are collected, never thrown: a user fixes a dataset in one round trip.
import { MAX_PROBLEMS, MAX_PROBLEMS_PER_FILE } from './limits.js';
import type { ValidationProblem } from './types.js';

/** Python's str.__lt__ compares code points; JS '<' compares UTF-16 units. Same for the BMP. */
export function compareCodePoints(a: string, b: string): number {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

export class ProblemList {
  private readonly archiveLevel: ValidationProblem[] = [];
  private readonly fileLevel: ValidationProblem[] = [];
  /** Problems found per file, listed or not. */
  private readonly perFile = new Map<string, number>();
  private droppedArchive = 0;

  constructor(
    private readonly archiveName: string,
    private readonly max = MAX_PROBLEMS,
    private readonly maxPerFile = MAX_PROBLEMS_PER_FILE,
  ) {}

  get count(): number {
    let files = 0;
    for (const n of this.perFile.values()) files += n;
    return this.archiveLevel.length + this.droppedArchive + files;
  }

  private get full(): boolean {
    return this.archiveLevel.length + this.fileLevel.length >= this.max;
  }

  /** A problem of the archive as a whole (empty, not a zip, limits...). */
  archive(message: string): void {
    if (this.full) this.droppedArchive++;
    else this.archiveLevel.push({ path: this.archiveName, line: null, message });
  }

  add(path: string, line: number | null, message: string): void {
    const seen = this.perFile.get(path) ?? 0;
    this.perFile.set(path, seen + 1);
    if (seen < this.maxPerFile && !this.full) this.fileLevel.push({ path, line, message });
  }

  /**
   * Archive-level problems first, then by file and line, so the order does not depend on the
   * archive's entry order. A file with unlisted problems gets an "and N more in this file" note;
   * what belongs to files not listed at all is summed in a final "and N more problems".
   */
  list(): ValidationProblem[] {
    const files = this.fileLevel
      .map((p, i) => ({ p, i }))
      .sort((a, b) => compareCodePoints(a.p.path, b.p.path) || (a.p.line ?? 0) - (b.p.line ?? 0) || a.i - b.i)
      .map((x) => x.p);
    const out = [...this.archiveLevel];
    const shown = new Set<string>();
    let i = 0;
    while (i < files.length) {
      const path = files[i].path;
      let listed = 0;
      while (i < files.length && files[i].path === path) {
        out.push(files[i++]);
        listed++;
      }
      shown.add(path);
      const more = (this.perFile.get(path) ?? 0) - listed;
      if (more > 0) out.push({ path, line: null, message: `and ${more} more problem${more === 1 ? '' : 's'} in this file` });
    }
    let rest = this.droppedArchive;
    for (const [path, n] of this.perFile) if (!shown.has(path)) rest += n;
    if (rest) out.push({ path: this.archiveName, line: null, message: `and ${rest} more problem${rest === 1 ? '' : 's'}` });
    return out;
  }
}
