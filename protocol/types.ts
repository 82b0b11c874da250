// The contracts between the API (src/), the gpu-node (gpu-node/) and the trainer (trainers/) as
// TypeScript. The JSON Schemas in schema/ are the source of truth and what every message is
// validated against (./validate.ts); these types follow them field by field, and
// test/protocol-drift.test.ts fails when a schema and its type disagree (a field added, dropped,
// made optional, or a value set changed on one side only).

// ---------------------------------------------------------------- job payload (job-payload.schema.json)

export type DatasetFormat = 'yolo' | 'coco' | 'image_folder';

/** What a job needs to know of its dataset version; `sha256` is the node's cache key. */
export interface DatasetRef {
  versionId: string;
  sha256: string;
  format: DatasetFormat;
  sizeBytes: number;
}

/** The trainer's run.json without dataset, output_dir, session_id, resume_from and device. */
export interface JobConfig {
  task: 'object-detection' | 'classification';
  framework: string;
  architecture: string;
  epochs: number;
  [key: string]: unknown;
}

export interface JobRequirements {
  gpus: number;
  gpuType?: string | null;
  timeoutSeconds?: number | null;
}

/** The data of a bee-queue job on the queue `gpu-training` (see ./redis.ts). */
export interface JobPayload {
  v: 1;
  sessionId: string;
  organizationId: string;
  /** Fence: the claim succeeds only while this is the session's current attempt. */
  attempt: number;
  config: JobConfig;
  dataset: DatasetRef;
  resume: { checkpointKey: string } | null;
  requirements: JobRequirements;
  enqueuedAt: string;
}

// ---------------------------------------------------------------- trainer events (trainer-events.schema.json)

export interface TrainerEventBase {
  v: 1;
  ts: string;
  session: string;
}
export interface StartedEvent extends TrainerEventBase {
  type: 'started';
  total_epochs: number;
  start_epoch: number;
  start_step: number;
  device: string;
  torch_version: string;
  resumed_from: string | null;
  train_images: number;
  val_images: number;
  pid: number;
  task: string;
  framework: string;
  architecture: string;
  class_names: string[];
  image_size: number;
  batch_size: number;
  steps_per_epoch: number;
  amp: 'off' | 'bf16' | 'fp16';
  num_workers: number;
}
export interface ProgressEvent extends TrainerEventBase {
  type: 'progress';
  epoch: number;
  step: number;
  steps_per_epoch: number;
  fraction: number;
  loss: number;
  images_per_sec: number;
  lr: number;
  data_wait_fraction?: number;
}
export interface EpochEvent extends TrainerEventBase {
  type: 'epoch';
  epoch: number;
  total_epochs: number;
  train_loss: number;
  losses: Record<string, number>;
  metrics: Record<string, number>;
  lr: number;
  seconds: number;
  images_per_sec: number;
  is_best: boolean;
  data_wait_fraction?: number;
}
export interface CheckpointEvent extends TrainerEventBase {
  type: 'checkpoint';
  epoch: number;
  step: number;
  path: string;
  kind: 'last' | 'best' | 'periodic' | 'stop';
  size_bytes: number;
  sha256: string;
}
export interface ArtifactEvent extends TrainerEventBase {
  type: 'artifact';
  kind: 'weights' | 'onnx' | 'metrics' | 'checkpoint';
  path: string;
  size_bytes: number;
  sha256: string;
  /** verified, runtime and max_abs_diff are required when kind is onnx. */
  verified?: boolean;
  runtime?: string | null;
  max_abs_diff?: number | null;
  opset?: number;
  dynamic_batch?: boolean;
  note?: string | null;
}
export interface WarningEvent extends TrainerEventBase {
  type: 'warning';
  code: string;
  message: string;
  count: number;
}
export interface CompletedEvent extends TrainerEventBase {
  type: 'completed';
  epochs: number;
  best_epoch: number | null;
  best_metric_name: string;
  best_metric: number | null;
  metrics: Record<string, number>;
  early_stopped: boolean;
}
export interface StoppedEvent extends TrainerEventBase {
  type: 'stopped';
  reason: string;
  epoch: number;
  step: number;
  checkpoint: string;
  resumable: true;
}
export interface FailedEvent extends TrainerEventBase {
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

// ---------------------------------------------------------------- envelopes (event-envelope.schema.json)

/** How a trainer process ended when the trainer could not say so itself. */
export interface CrashedEvent {
  type: 'crashed';
  ts: string;
  exitCode: number | null;
  signal: string | null;
  stderrTail: string;
  lastEventType: string | null;
}
export interface TimedOutEvent {
  type: 'timed_out';
  ts: string;
  afterSeconds: number;
  stderrTail: string;
}
export interface GivenBackEvent {
  type: 'given_back';
  ts: string;
  reason: string;
  checkpointKey: string | null;
}
export type NodeEvent = CrashedEvent | TimedOutEvent | GivenBackEvent;

/** A file the node uploaded for the event it travels with (checkpoints, artifacts). */
export interface UploadRef {
  key: string;
  sha256: string;
  sizeBytes: number;
}

/** What a reader that has not looked at `type` yet knows of an event. */
export interface AnyEvent {
  type: string;
  ts: string;
  [key: string]: unknown;
}

/**
 * One entry of the events stream. The gpu-node fills it with its typed events (the default);
 * the API's ingester reads any event the schema accepts (`Envelope<AnyEvent>`).
 */
export interface Envelope<E = TrainerEvent | NodeEvent> {
  v: 1;
  nodeId: string;
  sessionId: string;
  attempt: number;
  /** 1, 2, 3... per (session, attempt); replays repeat a seq. */
  seq: number;
  source: 'trainer' | 'node';
  event: E;
  upload?: UploadRef;
}

/** An envelope as the API's ingester reads it: any event the schema accepts, not yet narrowed. */
export type AnyEnvelope = Envelope<AnyEvent>;
