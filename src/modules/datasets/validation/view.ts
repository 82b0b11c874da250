// The accepted entries of an archive as a folder tree, for the per-format checks.
import type { CocoFile } from './coco.js';
import type { ImageInfo } from './images.js';
import { compareCodePoints } from './problems.js';
import type { LabelFile } from './yolo.js';

export interface FileFacts {
  size: number;
  image?: ImageInfo;
  label?: LabelFile;
  /** data.yaml content; null when it exceeded MAX_DATA_YAML_BYTES. */
  yaml?: Buffer | null;
  coco?: CocoFile;
  /** The archive entry was corrupt (reported as such); nothing more is said about its content. */
  damaged?: boolean;
}

interface Node {
  dirs: Set<string>;
  files: string[];
}

export class DatasetView {
  private readonly nodes = new Map<string, Node>();

  /**
   * @param files accepted, non-ignored files by archive path
   * @param dirs folders named by entries (others are implied by files)
   * @param root folder holding the dataset, '' for the top of the archive (no trailing slash)
   */
  constructor(
    readonly files: Map<string, FileFacts>,
    dirs: Iterable<string>,
    readonly root = '',
  ) {
    this.dir('');
    for (const d of dirs) this.dir(d);
    for (const f of files.keys()) {
      const slash = f.lastIndexOf('/');
      this.dir(slash < 0 ? '' : f.slice(0, slash)).files.push(f);
    }
    for (const n of this.nodes.values()) n.files.sort(compareCodePoints);
  }

  withRoot(root: string): DatasetView {
    const v = Object.create(DatasetView.prototype) as DatasetView;
    Object.assign(v, this, { root });
    return v;
  }

  /** The folder's node, created with its ancestors and linked to its parent. */
  private dir(d: string): Node {
    let n = this.nodes.get(d);
    if (n) return n;
    n = { dirs: new Set(), files: [] };
    this.nodes.set(d, n);
    if (d !== '') {
      const slash = d.lastIndexOf('/');
      this.dir(slash < 0 ? '' : d.slice(0, slash)).dirs.add(d.slice(slash + 1));
    }
    return n;
  }

  /** A path under the dataset root. */
  at(rel: string): string {
    if (!this.root) return rel;
    return rel ? `${this.root}/${rel}` : this.root;
  }

  isDir(dir: string): boolean {
    return this.nodes.has(dir);
  }

  isFile(path: string): boolean {
    return this.files.has(path);
  }

  /** Names of the sub-folders, sorted like Python's sorted(). */
  childDirs(dir: string): string[] {
    const n = this.nodes.get(dir);
    return n ? [...n.dirs].sort(compareCodePoints) : [];
  }

  /** Files directly in the folder (full paths, sorted). */
  childFiles(dir: string): string[] {
    return this.nodes.get(dir)?.files ?? [];
  }

  /** Files anywhere below the folder (full paths, sorted like the trainer's os.walk + sort). */
  filesUnder(dir: string): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      const n = this.nodes.get(d);
      if (!n) return;
      out.push(...n.files);
      for (const sub of n.dirs) walk(d ? `${d}/${sub}` : sub);
    };
    walk(dir);
    return out.sort(compareCodePoints);
  }
}

export function join(dir: string, name: string): string {
  return dir ? `${dir}/${name}` : name;
}

/** posixpath.normpath of a path relative to the archive top; null when it climbs above it. */
export function normalizeRelative(p: string): string | null {
  if (p.startsWith('/')) return null;
  const out: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (!out.length) return null;
      out.pop();
    } else {
      out.push(seg);
    }
  }
  return out.join('/');
}
