// Routes accepted archive entries to the checks that need their bytes, remembers what each file
// turned out to be, and once the archive is read, judges the layout of the declared format.
import { checkCoco, CocoParser, cocoSplitFiles } from './coco.js';
import type { DatasetSink, EntryConsumer } from './entries.js';
import { checkImageFolder } from './image-folder.js';
import { ImageChecker, isImageName } from './images.js';
import { MAX_DATA_YAML_BYTES } from './limits.js';
import { isIgnoredEntry } from './paths.js';
import type { ProblemList } from './problems.js';
import type { DatasetFormat } from './types.js';
import { DatasetView, join, type FileFacts } from './view.js';
import { checkYolo, LabelParser, type FormatResult } from './yolo.js';

// Only these paths (relative to the top or to one wrapping folder) have content the YOLO/COCO checks read.
const COCO_JSON = /^(?:[^/]+\/)?annotations\/instances_[^/]*\.json$/;
const YOLO_YAML = /^(?:[^/]+\/)?data\.yaml$/;
const YOLO_LABEL = /^(?:[^/]+\/)?labels\/.+\.txt$/;

export class DatasetCollector implements DatasetSink {
  readonly files = new Map<string, FileFacts>();
  private readonly dirs = new Set<string>();

  constructor(private readonly format: DatasetFormat) {}

  addDir(path: string): void {
    if (!isIgnoredEntry(path)) this.dirs.add(path);
  }

  openFile(path: string, size: number): EntryConsumer | null {
    if (isIgnoredEntry(path)) return null;
    const facts: FileFacts = { size };
    this.files.set(path, facts);
    const inner = this.consumerFor(path, facts);
    if (!inner) return null;
    return {
      write: (chunk) => inner.write(chunk),
      end: () => inner.end(),
      abort: () => {
        facts.damaged = true;
      },
    };
  }

  private consumerFor(path: string, facts: FileFacts): EntryConsumer | null {
    if (isImageName(path)) {
      const checker = new ImageChecker();
      return {
        write: (chunk) => checker.write(chunk),
        end: () => {
          facts.image = checker.end();
        },
      };
    }
    if (this.format === 'YOLO' && YOLO_YAML.test(path)) return bufferUpTo(MAX_DATA_YAML_BYTES, (buf) => (facts.yaml = buf));
    if (this.format === 'YOLO' && YOLO_LABEL.test(path)) return new LabelParser((file) => (facts.label = file));
    if (this.format === 'COCO' && COCO_JSON.test(path)) return new CocoParser((file) => (facts.coco = file));
    return null;
  }

  /** The dataset checks; `problems` gets everything found. */
  finish(problems: ProblemList): FormatResult & { root: string } {
    const empty: FormatResult & { root: string } = { classNames: [], splits: {}, root: '' };
    if (this.files.size === 0) {
      problems.archive(this.dirs.size ? 'the archive holds no files (only folders)' : 'the archive is empty');
      return empty;
    }
    const top = new DatasetView(this.files, this.dirs);
    const root = chooseRoot(top);
    const view = top.withRoot(root);
    const rootShown = root ? `${root}/` : '';
    const layout = detect(view);
    const looksLike = (what: string) => `this looks like ${what}`;
    const yoloHint = `a YOLO dataset (${rootShown}data.yaml found)`;
    const cocoHint = () => `a COCO dataset (${layout.coco} found)`;
    const folderHint = `an IMAGE_FOLDER dataset (<split>/<class>/<image> folders found, e.g. ${layout.folderExample})`;
    let result: FormatResult;
    switch (this.format) {
      case 'YOLO':
        // COCO datasets have images/<split>/ too; their annotation files give them away.
        if (!layout.yolo && layout.coco) {
          problems.archive(`no data.yaml found; ${looksLike(cocoHint())}`);
          return { ...empty, root };
        }
        if (!layout.yolo && !view.isDir(view.at('images')) && layout.folderExample) {
          problems.archive(`no data.yaml or images/ folder found; ${looksLike(folderHint)}`);
          return { ...empty, root };
        }
        result = checkYolo(view, problems);
        break;
      case 'COCO':
        if (!layout.coco) {
          const hint = layout.yolo ? `; ${looksLike(yoloHint)}` : layout.folderExample ? `; ${looksLike(folderHint)}` : '';
          problems.archive(
            `no annotations/instances_*.json found${hint || ': a COCO dataset needs annotations/instances_<split>.json (e.g. instances_train.json) and its images'}`,
          );
          return { ...empty, root };
        }
        result = checkCoco(view, problems);
        break;
      case 'IMAGE_FOLDER':
        if (layout.yolo || layout.coco) {
          problems.archive(`${looksLike(layout.yolo ? yoloHint : cocoHint())}, not IMAGE_FOLDER (<split>/<class>/<image>)`);
          return { ...empty, root };
        }
        result = checkImageFolder(view, problems);
        break;
    }
    return { ...result, root: rootShown };
  }
}

function bufferUpTo(max: number, done: (buf: Buffer | null) => void): EntryConsumer {
  const parts: Buffer[] = [];
  let size = 0;
  return {
    write(chunk) {
      size += chunk.length;
      if (size <= max) parts.push(Buffer.from(chunk));
    },
    end() {
      done(size <= max ? Buffer.concat(parts) : null);
    },
  };
}

interface Layout {
  yolo: boolean;
  coco: string | null;
  /** e.g. "train/cat/" when some folder pair holds images directly. */
  folderExample: string | null;
}

function detect(view: DatasetView): Layout {
  const coco = cocoSplitFiles(view)[0]?.path ?? null;
  return { yolo: view.isFile(view.at('data.yaml')), coco, folderExample: folderExample(view, view.root) };
}

/** A <split>/<class>/ pair under `root` holding images directly, if any. */
function folderExample(view: DatasetView, root: string): string | null {
  for (const split of view.childDirs(root)) {
    if (split.startsWith('.') || split === 'images' || split === 'labels' || split === 'annotations') continue;
    for (const cls of view.childDirs(join(root, split))) {
      if (view.childFiles(join(root, join(split, cls))).some(isImageName)) return `${join(root, join(split, cls))}/`;
    }
  }
  return null;
}

/**
 * The dataset sits at the top of the archive, or inside the one folder that wraps everything
 * (what "compress this folder" produces). Same rule as the gpu-node's extractor
 * (gpu-node/dataset-cache.ts datasetRoot): after skipping OS clutter, a top level holding a single
 * folder and no files means that folder is the root. No dataset can be trained from such a top
 * level itself (YOLO needs data.yaml beside images/, COCO annotations/ beside its images,
 * IMAGE_FOLDER two split folders), so the rule never misreads a real layout.
 */
function chooseRoot(view: DatasetView): string {
  const topDirs = view.childDirs('');
  return topDirs.length === 1 && view.childFiles('').length === 0 ? topDirs[0] : '';
}
