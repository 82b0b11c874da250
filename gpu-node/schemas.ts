// The machine-checked contracts of schema/ as compiled validators, plus the TypeScript shapes
// the node relies on. The JSON Schemas stay the single source of truth: every trainer line,
// job payload and envelope goes through the validator before the node trusts its fields.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { ErrorObject, ValidateFunction } from 'ajv';
import type { Envelope as EnvelopeOf, UploadRef } from '../src/events/envelope.js';
import { REPO_ROOT } from './config.js';

// ajv and ajv-formats are CommonJS with `exports.default`; createRequire sidesteps the
// default-import interop differences between tsx, vitest and tsc.
const require = createRequire(import.meta.url);
const Ajv2020 = require('ajv/dist/2020').default as typeof import('ajv/dist/2020.js').default;
const addFormats = require('ajv-formats').default as typeof import('ajv-formats').default;

function readSchema(name: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(REPO_ROOT, 'schema', name), 'utf8')) as Record<string, unknown>;
}

const ajv = new Ajv2020({ allErrors: false, strict: false });
addFormats(ajv);
ajv.addSchema(readSchema('trainer-events.schema.json'));

const validators = {
  trainerEvent: ajv.getSchema('urn:cvtrain:schema:trainer-events:v1') as ValidateFunction,
  jobPayload: ajv.compile(readSchema('job-payload.schema.json')),
  envelope: ajv.compile(readSchema('event-envelope.schema.json')),
};

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  return errors
    .slice(0, 5)
    .map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'invalid'}`)
    .join('; ');
}

export type Validation<T> = { ok: true; value: T } | { ok: false; error: string };

function check<T>(fn: ValidateFunction, value: unknown): Validation<T> {
  if (fn(value)) return { ok: true, value: value as T };
  return { ok: false, error: describeErrors(fn.errors) };
}

export const validateTrainerEvent = (v: unknown) => check<TrainerEvent>(validators.trainerEvent, v);
export const validateJobPayload = (v: unknown) => check<JobPayload>(validators.jobPayload, v);
export const validateEnvelope = (v: unknown) => check<Envelope>(validators.envelope, v);

// ---------------------------------------------------------------- trainer events (protocol v1)

interface EventBase {
  v: 1;
  ts: string;
  session: string;
}
export interface StartedEvent extends EventBase {
  type: 'started';
  total_epochs: number;
  start_epoch: number;
  start_step: number;
  device: string;
  architecture: string;
  task: string;
  framework: string;
  steps_per_epoch: number;
  [k: string]: unknown;
}
export interface ProgressEvent extends EventBase {
  type: 'progress';
  epoch: number;
  step: number;
  steps_per_epoch: number;
  fraction: number;
  loss: number;
  [k: string]: unknown;
}
export interface EpochEvent extends EventBase {
  type: 'epoch';
  epoch: number;
  total_epochs: number;
  train_loss: number;
  metrics: Record<string, number>;
  seconds: number;
  [k: string]: unknown;
}
export interface CheckpointEvent extends EventBase {
  type: 'checkpoint';
  epoch: number;
  step: number;
  path: string;
  kind: 'last' | 'best' | 'periodic' | 'stop';
  size_bytes: number;
  sha256: string;
}
export interface ArtifactEvent extends EventBase {
  type: 'artifact';
  kind: 'weights' | 'onnx' | 'metrics' | 'checkpoint';
  path: string;
  size_bytes: number;
  sha256: string;
  [k: string]: unknown;
}
export interface WarningEvent extends EventBase {
  type: 'warning';
  code: string;
  message: string;
  count: number;
}
export interface CompletedEvent extends EventBase {
  type: 'completed';
  epochs: number;
  best_epoch: number | null;
  best_metric_name: string;
  best_metric: number | null;
  metrics: Record<string, number>;
  early_stopped: boolean;
}
export interface StoppedEvent extends EventBase {
  type: 'stopped';
  reason: string;
  epoch: number;
  step: number;
  checkpoint: string;
  resumable: true;
}
export interface FailedEvent extends EventBase {
  type: 'failed';
  message: string;
  error_type: string;
  traceback_tail: string;
  exit_code: number;
}
export type TrainerEvent =
  | StartedEvent
  | ProgressEvent
  | EpochEvent
  | CheckpointEvent
  | ArtifactEvent
  | WarningEvent
  | CompletedEvent
  | StoppedEvent
  | FailedEvent;
export type FinalEvent = CompletedEvent | StoppedEvent | FailedEvent;

// ---------------------------------------------------------------- job payload and envelopes

export interface JobPayload {
  v: 1;
  sessionId: string;
  organizationId: string;
  attempt: number;
  config: Record<string, unknown> & { task: string; framework: string; architecture: string; epochs: number };
  dataset: { versionId: string; sha256: string; format: 'yolo' | 'coco' | 'image_folder'; sizeBytes: number };
  resume: { checkpointKey: string } | null;
  requirements: { gpus: number; gpuType?: string | null; timeoutSeconds?: number | null };
  enqueuedAt: string;
}

export type NodeEvent =
  | { type: 'crashed'; ts: string; exitCode: number | null; signal: string | null; stderrTail: string; lastEventType: string | null }
  | { type: 'timed_out'; ts: string; afterSeconds: number; stderrTail: string }
  | { type: 'given_back'; ts: string; reason: string; checkpointKey: string | null };

export type { UploadRef };
export type Envelope = EnvelopeOf<TrainerEvent | NodeEvent>;
