import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { globalId, localId } from '../../graphql/ids.js';
import { ComputeProfileRef, ProviderEnum } from '../compute/schema.js';
import { DatasetVersionRef } from '../datasets/schema.js';
import { ModelRef } from '../models/schema.js';
import type { ModelRecord } from '../models/service.js';
import type { DatasetVersionRecord } from '../datasets/service.js';
import { AMP_MODES, EXPORT_FORMATS, OPTIMIZERS } from './config.js';
import { ARTIFACT_KINDS, SESSION_STATUSES, type SessionAttempt } from './entity.js';
import type { ArtifactRecord, EpochMetricRecord, TrainingSessionRecord } from './service.js';
import { epochUpdates, logLines, sessionUpdates, type LogLine } from './subscriptions.js';
import { ValidationError } from '../../lib/errors.js';

export const SessionStatusEnum = builder.enumType('TrainingSessionStatus', { values: SESSION_STATUSES });
const ArtifactKindEnum = builder.enumType('ArtifactKind', { values: ARTIFACT_KINDS });
const OptimizerEnum = builder.enumType('Optimizer', { values: OPTIMIZERS });
const AmpModeEnum = builder.enumType('AmpMode', {
  description: 'Mixed precision on CUDA: AUTO picks bf16 where the GPU supports it, else fp16.',
  values: AMP_MODES,
});
const ExportFormatEnum = builder.enumType('ExportFormat', { values: EXPORT_FORMATS });

export const TrainingSessionRef = builder.objectRef<TrainingSessionRecord>('TrainingSession');
export const EpochMetricRef = builder.objectRef<EpochMetricRecord>('EpochMetric');
const ArtifactRef = builder.objectRef<ArtifactRecord>('Artifact');

const AttemptRef = builder.objectRef<SessionAttempt>('TrainingAttempt').implement({
  description: 'One try to place the session on a provider, successful or not.',
  fields: (t) => ({
    provider: t.expose('provider', { type: ProviderEnum }),
    computeProfileId: t.id({
      nullable: true,
      resolve: (a) => (a.profileId ? globalId('ComputeProfile', a.profileId) : null),
    }),
    reason: t.exposeString('reason'),
    ok: t.exposeBoolean('ok'),
    at: t.field({ type: 'DateTime', resolve: (a) => a.at }),
  }),
});

const ProgressRef = builder
  .objectRef<{ epoch: number; totalEpochs: number; fraction: number }>('TrainingProgress')
  .implement({
    fields: (t) => ({
      epoch: t.exposeInt('epoch', { description: 'Epochs completed.' }),
      totalEpochs: t.exposeInt('totalEpochs'),
      fraction: t.float({
        description: 'Share of all training batches done (moves within an epoch too).',
        resolve: (p) => Math.min(1, Math.max(p.fraction, p.totalEpochs > 0 ? p.epoch / p.totalEpochs : 0)),
      }),
    }),
  });

const SessionErrorRef = builder
  .objectRef<{ message: string; exitCode: number | null; stderrTail: string | null }>('TrainingSessionError')
  .implement({
    fields: (t) => ({
      message: t.exposeString('message'),
      exitCode: t.exposeInt('exitCode', { nullable: true }),
      stderrTail: t.exposeString('stderrTail', { nullable: true }),
    }),
  });

builder.node(EpochMetricRef, {
  id: { resolve: (e) => e.id },
  // Epoch rows are reached through their session; a direct node lookup is not offered.
  loadOne: () => null,
  fields: (t) => ({
    epoch: t.exposeInt('epoch'),
    metrics: t.expose('metrics', { type: 'JSON', description: 'Train losses, validation metrics, lr, timings.' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

ArtifactRef.implement({
  fields: (t) => ({
    id: t.id({ resolve: (a) => globalId('Artifact', a.id) }),
    kind: t.expose('kind', { type: ArtifactKindEnum }),
    name: t.string({ resolve: (a) => a.storageKey.split('/').slice(-2).join('/') }),
    url: t.string({
      description: 'A presigned download link, made fresh for each request; it expires (CVTRAIN_PRESIGN_TTL_S, 1 hour by default).',
      resolve: async (a, _args, ctx) => (await ctx.services.training.artifactUrl(a)).url,
    }),
    sizeBytes: t.float({ resolve: (a) => a.sizeBytes }),
    sha256: t.exposeString('sha256'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.node(TrainingSessionRef, {
  id: { resolve: (s) => s.id },
  loadOne: (id, ctx) => ctx.services.training.get(id),
  fields: (t) => ({
    status: t.expose('status', { type: SessionStatusEnum }),
    model: t.field({
      type: ModelRef,
      // A value, not a promise, when the list primed the page's models.
      resolve: (s, _a, ctx) => ctx.services.models.byId.get(s.modelId) as ModelRecord | Promise<ModelRecord>,
    }),
    datasetVersion: t.field({
      type: DatasetVersionRef,
      resolve: (s, _a, ctx) =>
        ctx.services.datasets.versionById.get(s.datasetVersionId) as DatasetVersionRecord | Promise<DatasetVersionRecord>,
    }),
    computeProfile: t.field({
      type: ComputeProfileRef,
      nullable: true,
      resolve: (s, _a, ctx) => (s.computeProfileId ? ctx.services.compute.byId.load(s.computeProfileId) : null),
    }),
    provider: t.expose('provider', { type: ProviderEnum, nullable: true }),
    externalJobId: t.exposeString('externalJobId', { nullable: true }),
    config: t.expose('config', { type: 'JSON', description: 'The validated configuration with every default filled in.' }),
    attempts: t.field({ type: [AttemptRef], resolve: (s) => s.attempts }),
    progress: t.field({
      type: ProgressRef,
      resolve: (s) => ({ epoch: s.currentEpoch, totalEpochs: s.totalEpochs, fraction: s.progressFraction }),
    }),
    epochs: t.connection({
      type: EpochMetricRef,
      description: 'Per-epoch metrics in epoch order.',
      resolve: (s, args, ctx) => ctx.services.training.epochs(s.id, args),
    }),
    latestEpoch: t.field({
      type: EpochMetricRef,
      nullable: true,
      resolve: (s, _a, ctx) => ctx.services.training.latestEpoch.get(s.id),
    }),
    artifacts: t.field({ type: [ArtifactRef], resolve: (s, _a, ctx) => ctx.services.training.artifacts(s.id) }),
    error: t.field({
      type: SessionErrorRef,
      nullable: true,
      resolve: (s) =>
        s.errorMessage ? { message: s.errorMessage, exitCode: s.errorExitCode, stderrTail: s.errorStderrTail } : null,
    }),
    cancelRequested: t.boolean({ resolve: (s) => s.cancelRequestedAt !== null }),
    attempt: t.exposeInt('attempt', { description: 'How many times the session has been handed to a provider.' }),
    estimatedCostUsd: t.exposeFloat('estimatedCostUsd', { nullable: true }),
    costUsd: t.exposeFloat('costUsd', { nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    queuedAt: t.expose('queuedAt', { type: 'DateTime', nullable: true }),
    startedAt: t.expose('startedAt', { type: 'DateTime', nullable: true }),
    finishedAt: t.expose('finishedAt', { type: 'DateTime', nullable: true }),
  }),
});

const TrainingSessionFilter = builder.inputType('TrainingSessionFilter', {
  fields: (t) => ({
    status: t.field({ type: [SessionStatusEnum], required: false }),
    modelId: t.id({ required: false }),
  }),
});

const TrainingConfigInput = builder.inputType('TrainingConfigInput', {
  description: 'Unset fields get defaults that suit the model\'s task; the stored config shows them all.',
  fields: (t) => ({
    epochs: t.int(),
    batchSize: t.int({ required: false }),
    imageSize: t.int({ required: false, description: 'Pixels; a multiple of 32.' }),
    learningRate: t.float({ required: false }),
    optimizer: t.field({ type: OptimizerEnum, required: false }),
    weightDecay: t.float({ required: false }),
    warmupEpochs: t.int({ required: false }),
    architecture: t.string({ required: false, description: "Overrides the model's architecture for this session." }),
    seed: t.int({ required: false, description: 'Random when unset; always recorded.' }),
    checkpointEvery: t.int({ required: false, description: 'Epochs between checkpoints (1 by default).' }),
    earlyStoppingPatience: t.int({ required: false }),
    amp: t.field({ type: AmpModeEnum, required: false }),
    exportFormats: t.field({ type: [ExportFormatEnum], required: false }),
    maxBatchesPerEpoch: t.int({ required: false, description: 'Caps batches per epoch (quick trials).' }),
  }),
});

const TrainModelInput = builder.inputType('TrainModelInput', {
  fields: (t) => ({
    datasetVersionId: t.id(),
    computeProfileId: t.id({ required: false, description: "The organization's default profile when unset." }),
    config: t.field({ type: TrainingConfigInput }),
  }),
});

builder.queryFields((t) => ({
  trainingSessions: t.connection({
    type: TrainingSessionRef,
    description: 'Newest first.',
    args: { filter: t.arg({ type: TrainingSessionFilter, required: false }) },
    resolve: (_r, args, ctx, info) => {
      const modelId = args.filter?.modelId ? localId(String(args.filter.modelId), 'Model', 'filter.modelId') : null;
      return ctx.services.training.list({ ...args, filter: { status: args.filter?.status, modelId } }, info);
    },
  }),
  trainingSession: t.field({
    type: TrainingSessionRef,
    nullable: true,
    args: { id: t.arg.id() },
    resolve: (_r, { id }, ctx) => ctx.services.training.get(localId(String(id), 'TrainingSession', 'id')),
  }),
}));

builder.objectField(ModelRef, 'trainingSessions', (t) =>
  t.connection({
    type: TrainingSessionRef,
    resolve: (m, args, ctx, info) => ctx.services.training.list({ ...args, filter: { modelId: m.id } }, info),
  }),
);

builder.mutationFields((t) => ({
  trainModel: t.field({
    type: TrainingSessionRef,
    args: { modelId: t.arg.id(), input: t.arg({ type: TrainModelInput }) },
    errors: { types: E.writeById, dataField: { name: 'trainingSession' } },
    resolve: (_r, { modelId, input }, ctx) =>
      ctx.services.training.create(localId(String(modelId), 'Model', 'modelId'), {
        ...input,
        datasetVersionId: localId(String(input.datasetVersionId), 'DatasetVersion', 'input.datasetVersionId'),
        computeProfileId: input.computeProfileId
          ? localId(String(input.computeProfileId), 'ComputeProfile', 'input.computeProfileId')
          : null,
      }),
  }),
  resumeTrainingSession: t.field({
    type: TrainingSessionRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'trainingSession' } },
    resolve: (_r, { id }, ctx) => ctx.services.training.resume(localId(String(id), 'TrainingSession', 'id')),
  }),
  cancelTrainingSession: t.field({
    type: TrainingSessionRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'trainingSession' } },
    resolve: (_r, { id }, ctx) => ctx.services.training.cancel(localId(String(id), 'TrainingSession', 'id')),
  }),
}));

const LogStreamEnum = builder.enumType('LogStream', { values: ['stdout', 'stderr'] as const });
const TrainingLogLineRef = builder.objectRef<LogLine>('TrainingLogLine').implement({
  fields: (t) => ({
    stream: t.expose('stream', { type: LogStreamEnum }),
    line: t.exposeString('line'),
    attempt: t.exposeInt('attempt'),
    at: t.field({ type: 'DateTime', resolve: (l) => l.ts }),
  }),
});

builder.subscriptionFields((t) => ({
  trainingLogs: t.field({
    type: TrainingLogLineRef,
    description: "The trainer's stdout and stderr lines while it runs (live only; the session's error keeps the stderr tail).",
    args: { sessionId: t.arg.id() },
    subscribe: (_r, { sessionId }, ctx) => logLines(ctx, localId(String(sessionId), 'TrainingSession', 'sessionId')),
    resolve: (line) => line,
  }),
  trainingSessionUpdated: t.field({
    type: TrainingSessionRef,
    description: 'The session now, then each change (status, progress, attempts, cost) until it ends.',
    args: { id: t.arg.id() },
    subscribe: (_r, { id }, ctx) => sessionUpdates(ctx, localId(String(id), 'TrainingSession', 'id')),
    resolve: (session) => session,
  }),
  trainingEpochs: t.field({
    type: EpochMetricRef,
    description:
      'Stored epochs after sinceEpoch (all when null), then live ones as they finish: no gap, no duplicate. Ends when the session does.',
    args: { sessionId: t.arg.id(), sinceEpoch: t.arg.int({ required: false }) },
    subscribe: (_r, { sessionId, sinceEpoch }, ctx) => {
      if (sinceEpoch != null && sinceEpoch < 0) throw new ValidationError('sinceEpoch', 'must be at least 0');
      return epochUpdates(ctx, localId(String(sessionId), 'TrainingSession', 'sessionId'), sinceEpoch ?? 0);
    },
    resolve: (epoch) => epoch,
  }),
}));
