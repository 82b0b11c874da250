// The training configuration a user sends (camelCase, GraphQL) and what is stored and handed to
// the trainer (snake_case keys of run.json, schema/run-config.schema.json).
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { ValidationError } from '../../lib/errors.js';
import { parseInput } from '../../lib/validate.js';
import { architectureProblem } from '../models/architectures.js';
import type { IModel } from '../models/entity.js';

/** What a config is checked against (a ModelRecord fits); not the service's type, which would tie records to the service layer. */
interface ModelForConfig {
  task: IModel['task'];
  framework: IModel['framework'];
  architecture: string;
}

export const OPTIMIZERS = ['SGD', 'ADAM', 'ADAMW'] as const;
export const AMP_MODES = ['AUTO', 'OFF', 'BF16', 'FP16'] as const;
export const EXPORT_FORMATS = ['ONNX'] as const;

const int = (min: number, max: number) =>
  z.number().int('must be a whole number').min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);

export const trainingConfigInput = z
  .object({
    epochs: int(1, 1000),
    batchSize: int(1, 1024).nullish(),
    imageSize: int(32, 4096)
      .refine((v) => v % 32 === 0, 'must be a multiple of 32 (detector strides)')
      .nullish(),
    learningRate: z.number().gt(0, 'must be greater than 0').max(10, 'must be at most 10').nullish(),
    optimizer: z.enum(OPTIMIZERS).nullish(),
    weightDecay: z.number().min(0, 'must be at least 0').max(1, 'must be at most 1').nullish(),
    warmupEpochs: int(0, 1000).nullish(),
    architecture: z.string().trim().min(1, 'must not be empty').max(120).nullish(),
    seed: int(0, 2 ** 31 - 1).nullish(),
    checkpointEvery: int(1, 1000).nullish(),
    earlyStoppingPatience: int(1, 1000).nullish(),
    amp: z.enum(AMP_MODES).nullish(),
    exportFormats: z.array(z.enum(EXPORT_FORMATS)).max(1).nullish(),
    maxBatchesPerEpoch: int(1, 1_000_000).nullish(),
  })
  .superRefine((c, ctx) => {
    if (c.checkpointEvery != null && c.checkpointEvery > c.epochs) {
      ctx.addIssue({ code: 'custom', path: ['checkpointEvery'], message: `must be at most epochs (${c.epochs})` });
    }
    if (c.warmupEpochs != null && c.warmupEpochs >= c.epochs) {
      ctx.addIssue({ code: 'custom', path: ['warmupEpochs'], message: `must be less than epochs (${c.epochs})` });
    }
    if (c.earlyStoppingPatience != null && c.earlyStoppingPatience > c.epochs) {
      ctx.addIssue({ code: 'custom', path: ['earlyStoppingPatience'], message: `must be at most epochs (${c.epochs})` });
    }
  });

export type TrainingConfigInput = z.input<typeof trainingConfigInput>;

/** The stored, fully defaulted configuration: snake_case, as the trainer reads it. */
export interface StoredTrainingConfig {
  task: 'object-detection' | 'classification';
  framework: string;
  architecture: string;
  epochs: number;
  batch_size: number;
  image_size: number;
  learning_rate: number;
  optimizer: 'sgd' | 'adam' | 'adamw';
  weight_decay: number;
  warmup_epochs: number;
  seed: number;
  checkpoint_every: number;
  early_stopping_patience: number | null;
  amp: 'auto' | 'off' | 'bf16' | 'fp16';
  export: string[];
  max_batches_per_epoch: number | null;
}

export function normalizeTrainingConfig(raw: unknown, model: ModelForConfig): StoredTrainingConfig {
  const c = parseInput(trainingConfigInput, raw, 'input.config');
  const architecture = c.architecture ?? model.architecture;
  if (c.architecture) {
    const problem = architectureProblem(model.framework, model.task, c.architecture);
    if (problem) throw new ValidationError('input.config.architecture', problem);
  }
  const detection = model.task === 'OBJECT_DETECTION';
  const optimizer = (c.optimizer ?? (detection ? 'SGD' : 'ADAMW')).toLowerCase() as StoredTrainingConfig['optimizer'];
  return {
    task: detection ? 'object-detection' : 'classification',
    framework: model.framework.toLowerCase(),
    architecture,
    epochs: c.epochs,
    batch_size: c.batchSize ?? (detection ? 8 : 32),
    image_size: c.imageSize ?? (detection ? 640 : 224),
    learning_rate: c.learningRate ?? (optimizer === 'sgd' ? 0.01 : 0.001),
    optimizer,
    weight_decay: c.weightDecay ?? (optimizer === 'adamw' ? 0.05 : 0.0005),
    warmup_epochs: c.warmupEpochs ?? 0,
    // A seed is always recorded, so any session can be reproduced exactly.
    seed: c.seed ?? randomInt(0, 2 ** 31 - 1),
    checkpoint_every: c.checkpointEvery ?? 1,
    early_stopping_patience: c.earlyStoppingPatience ?? null,
    amp: (c.amp ?? 'AUTO').toLowerCase() as StoredTrainingConfig['amp'],
    export: (c.exportFormats ?? ['ONNX']).map((f) => f.toLowerCase()),
    max_batches_per_epoch: c.maxBatchesPerEpoch ?? null,
  };
}
