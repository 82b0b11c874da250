// What every archive entry goes through before its bytes reach a dataset check: name safety,
// entry type, duplicates, and the entry count limit. Shared by the tar and zip readers.
import type { ExpansionGuard } from './limits.js';
import { checkEntryName, printableName } from './paths.js';
import type { ProblemList } from './problems.js';

export interface EntryConsumer {
  write(chunk: Buffer): void;
  end(): void;
  /** The entry turned out corrupt (already reported): its content must not be judged. */
  abort?(): void;
}

/** Receives the accepted entries; the dataset collector implements it. */
export interface DatasetSink {
  addDir(path: string): void;
  /** null: the content is not needed (it is still decompressed and counted by the reader). */
  openFile(path: string, size: number): EntryConsumer | null;
}

export type EntryKind = 'file' | 'dir' | 'symlink' | 'hardlink' | 'device' | 'fifo' | 'socket' | 'unsupported';

export interface EntryInfo {
  rawName: string;
  kind: EntryKind;
  /** Declared content size. */
  size: number;
  linkTarget?: string;
  /** For 'unsupported': what it is (e.g. "GNU sparse file"). */
  detail?: string;
}

export type GateResult = { refused: true } | { refused: false; consumer: EntryConsumer | null };

const REFUSED: GateResult = { refused: true };

export class EntryGate {
  private readonly files = new Set<string>();
  private readonly dirs = new Set<string>();
  /** Accepted regular files. */
  fileCount = 0;

  constructor(
    private readonly guard: ExpansionGuard,
    private readonly problems: ProblemList,
    private readonly sink: DatasetSink,
  ) {}

  open(info: EntryInfo): GateResult {
    this.guard.countEntry();
    const shown = printableName(info.rawName);
    const name = checkEntryName(info.rawName);
    if (!name.ok) {
      this.problems.add(shown, null, `entry refused: ${name.reason}; it would be written outside the extraction folder`);
      return REFUSED;
    }
    const path = name.path;
    switch (info.kind) {
      case 'symlink':
        this.problems.add(shown, null, `symbolic link${target(info)} refused: links can point outside the extraction folder; archive the file itself`);
        return REFUSED;
      case 'hardlink':
        this.problems.add(shown, null, `hard link${target(info)} refused: links can point outside the extraction folder; archive the file itself`);
        return REFUSED;
      case 'device':
      case 'fifo':
      case 'socket':
        this.problems.add(shown, null, `${info.kind === 'device' ? 'device' : info.kind === 'fifo' ? 'FIFO' : 'socket'} entry refused: only files and folders can be extracted`);
        return REFUSED;
      case 'unsupported':
        this.problems.add(shown, null, `entry refused: ${info.detail ?? 'unsupported entry type'}`);
        return REFUSED;
      case 'dir':
        if (path === '') return { refused: false, consumer: null };
        if (this.files.has(path)) {
          this.problems.add(shown, null, 'is both a file and a folder in the archive');
          return REFUSED;
        }
        this.addDirs(path);
        this.sink.addDir(path);
        return { refused: false, consumer: null };
    }
    if (path === '') {
      this.problems.add(shown, null, 'entry refused: a file without a name');
      return REFUSED;
    }
    if (this.files.has(path)) {
      this.problems.add(shown, null, 'appears twice in the archive (extracting would overwrite the first copy with the second)');
      return REFUSED;
    }
    if (this.dirs.has(path) || this.ancestorIsFile(path)) {
      this.problems.add(shown, null, 'is both a file and a folder in the archive');
      return REFUSED;
    }
    this.files.add(path);
    this.fileCount++;
    const slash = path.lastIndexOf('/');
    if (slash > 0) this.addDirs(path.slice(0, slash));
    return { refused: false, consumer: this.sink.openFile(path, info.size) };
  }

  private addDirs(dir: string): void {
    // Ancestors are added once; stop at the first one already known.
    let d = dir;
    while (d && !this.dirs.has(d)) {
      this.dirs.add(d);
      const slash = d.lastIndexOf('/');
      d = slash > 0 ? d.slice(0, slash) : '';
    }
  }

  private ancestorIsFile(path: string): boolean {
    let slash = path.indexOf('/');
    while (slash > 0) {
      if (this.files.has(path.slice(0, slash))) return true;
      slash = path.indexOf('/', slash + 1);
    }
    return false;
  }
}

function target(info: EntryInfo): string {
  return info.linkTarget !== undefined ? ` to "${printableName(info.linkTarget)}"` : '';
}
