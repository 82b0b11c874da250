// IMAGE_FOLDER layout (classification), as trainers/cvtrain/datasets/formats.py reads it:
//   every top-level folder not starting with "." is a split; <split>/<class>/** holds the images
//   of that class (any depth); classes are the split's sub-folders sorted by code point, which is
//   torchvision's ImageFolder order; the training split (else the first) fixes the class list.
// A class another split lacks: a class of a later split that training does not have is a problem
// (the trainer drops those images and reports it); a training class missing from validation is
// fine (the trainer accepts it; validation just has no samples of it).
// Checked beyond the trainer: files in class folders that are not images (the trainer would skip
// them silently) and class folders without images (an empty class the model can never learn).
import { isImageName } from './images.js';
import type { ProblemList } from './problems.js';
import { join, type DatasetView } from './view.js';
import { notAnImage, trainFirst, type FormatResult } from './yolo.js';

export function imageFolderSplits(view: DatasetView): string[] {
  return view.childDirs(view.root).filter((d) => !d.startsWith('.'));
}

export function checkImageFolder(view: DatasetView, problems: ProblemList): FormatResult {
  const result: FormatResult = { classNames: [], splits: {} };
  const splits = trainFirst(imageFolderSplits(view));
  if (!splits.length) {
    const message = 'no splits found: an IMAGE_FOLDER dataset needs <split>/<class>/<image> folders (e.g. train/cat/1.jpg)';
    if (view.root) problems.add(`${view.root}/`, null, message);
    else problems.archive(message);
    return result;
  }
  let classNames: string[] | null = null;
  let firstSplit = '';
  for (const split of splits) {
    const splitDir = join(view.root, split);
    const found = view.childDirs(splitDir);
    if (!found.length) {
      problems.add(`${splitDir}/`, null, `split '${split}' has no class folders (expected ${split}/<class>/<image>)`);
      continue;
    }
    if (classNames === null) {
      classNames = found;
      firstSplit = split;
    }
    const known = new Set(classNames);
    for (const f of view.childFiles(splitDir)) problems.add(f, null, 'file outside a class folder');
    let images = 0;
    for (const cls of found) {
      const classDir = join(splitDir, cls);
      const files = view.filesUnder(classDir);
      const imgs = files.filter((f) => {
        if (isImageName(f)) return true;
        notAnImage(f, problems);
        return false;
      });
      if (!known.has(cls)) {
        problems.add(`${classDir}/`, null, `class '${cls}' is not in the training classes (those of '${firstSplit}': ${classNames.join(', ')})`);
        continue;
      }
      if (!imgs.length) {
        problems.add(`${classDir}/`, null, `class folder '${cls}' has no images`);
        continue;
      }
      for (const img of imgs) {
        const facts = view.files.get(img);
        if (facts?.damaged) continue;
        if (facts?.image?.error) problems.add(img, null, `image does not decode: ${facts.image.error}`);
        else images++;
      }
    }
    result.splits[split] = { images, boxes: 0 };
  }
  result.classNames = classNames ?? [];
  return result;
}
