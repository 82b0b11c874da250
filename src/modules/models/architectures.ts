// Which architectures each framework accepts, so a typo fails at createModel instead of an hour
// later on a GPU. TORCHVISION names are the trainers' builders (trainers/cvtrain/models).
import type { ModelFramework, ModelTask } from './entity.js';

export const TORCHVISION_ARCHITECTURES: Record<ModelTask, readonly string[]> = {
  OBJECT_DETECTION: [
    'ssdlite320_mobilenet_v3_large',
    'fasterrcnn_mobilenet_v3_large_320_fpn',
    'fasterrcnn_mobilenet_v3_large_fpn',
    'fasterrcnn_resnet50_fpn',
    'fcos_resnet50_fpn',
    'retinanet_resnet50_fpn',
    'ssd300_vgg16',
  ],
  CLASSIFICATION: [
    'resnet18',
    'resnet34',
    'resnet50',
    'mobilenet_v3_small',
    'mobilenet_v3_large',
    'efficientnet_b0',
  ],
};

// The trainers' own YOLO-style detector (trainers/cvtrain/families/cvdet), by size.
export const CVTRAIN_ARCHITECTURES: Record<ModelTask, readonly string[]> = {
  OBJECT_DETECTION: ['cvdet_n', 'cvdet_s', 'cvdet_m'],
  CLASSIFICATION: [],
};

const ULTRALYTICS_RE = /^yolo(v8|v9|v10|11|12)[nsmlx](-cls)?(\.pt|\.yaml)?$/;

/** Returns a problem description, or null when the architecture is acceptable. */
export function architectureProblem(framework: ModelFramework, task: ModelTask, architecture: string): string | null {
  switch (framework) {
    case 'TORCHVISION': {
      const known = TORCHVISION_ARCHITECTURES[task];
      if (known.includes(architecture)) return null;
      const other = task === 'OBJECT_DETECTION' ? 'CLASSIFICATION' : 'OBJECT_DETECTION';
      if (TORCHVISION_ARCHITECTURES[other].includes(architecture)) {
        return `"${architecture}" is a ${other} architecture, not ${task}`;
      }
      return `unknown torchvision ${task} architecture "${architecture}"; one of: ${known.join(', ')}`;
    }
    case 'ULTRALYTICS':
      if (!ULTRALYTICS_RE.test(architecture)) {
        return `"${architecture}" is not an Ultralytics YOLO name such as yolov8n or yolo11s`;
      }
      if (task === 'CLASSIFICATION' !== architecture.includes('-cls')) {
        return task === 'CLASSIFICATION'
          ? 'Ultralytics classification models end in "-cls", e.g. yolo11n-cls'
          : 'a "-cls" model is for CLASSIFICATION';
      }
      return null;
    case 'TRANSFORMERS':
      if (task !== 'OBJECT_DETECTION') return 'the TRANSFORMERS family trains object detectors (RT-DETR)';
      return /^[\w.-]+(\/[\w.-]+)?$/.test(architecture) ? null : 'must be a model name or local path such as rtdetr_r18vd';
    case 'CVTRAIN': {
      const known = CVTRAIN_ARCHITECTURES[task];
      if (!known.length) return `the CVTRAIN family trains OBJECT_DETECTION models only, not ${task}`;
      if (known.includes(architecture)) return null;
      return `unknown CVTRAIN ${task} architecture "${architecture}"; one of: ${known.join(', ')}`;
    }
    case 'CUSTOM':
      return /^[\w.:-]+$/.test(architecture)
        ? null
        : 'must be a registered trainer name or import path (letters, digits, ".", ":", "_" or "-")';
  }
}
