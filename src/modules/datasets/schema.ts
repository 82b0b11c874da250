import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { TEXT } from '../../graphql/text-guard.js';
import { localId } from '../../graphql/ids.js';
import { ModelTaskEnum } from '../models/schema.js';
import { DATASET_FORMATS, DATASET_VERSION_STATUSES } from './entity.js';
import type { DatasetRecord, DatasetVersionRecord, DatasetVersionUploadRecord } from './service.js';

export const DatasetFormatEnum = builder.enumType('DatasetFormat', {
  description: 'YOLO (data.yaml, images/, labels/), COCO (annotations/instances_<split>.json), IMAGE_FOLDER (<split>/<class>/image).',
  values: DATASET_FORMATS,
});
export const DatasetVersionStatusEnum = builder.enumType('DatasetVersionStatus', { values: DATASET_VERSION_STATUSES });

export const DatasetRef = builder.objectRef<DatasetRecord>('Dataset');
export const DatasetVersionRef = builder.objectRef<DatasetVersionRecord>('DatasetVersion');

const DatasetProblemRef = builder
  .objectRef<{ path: string; line: number | null; message: string }>('DatasetProblem')
  .implement({
    fields: (t) => ({
      path: t.exposeString('path', { description: 'The file inside the archive.' }),
      line: t.exposeInt('line', { nullable: true }),
      message: t.exposeString('message'),
    }),
  });

const DatasetSplitRef = builder
  .objectRef<{ name: string; images: number; boxes: number | null }>('DatasetSplit')
  .implement({
    fields: (t) => ({
      name: t.exposeString('name'),
      images: t.exposeInt('images'),
      boxes: t.exposeInt('boxes', { nullable: true }),
    }),
  });

builder.node(DatasetRef, {
  id: { resolve: (d) => d.id },
  loadOne: (id, ctx) => ctx.services.datasets.get(id),
  fields: (t) => ({
    name: t.exposeString('name'),
    description: t.exposeString('description', { nullable: true }),
    task: t.expose('task', { type: ModelTaskEnum }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    versions: t.field({
      type: [DatasetVersionRef],
      description: 'Newest first.',
      resolve: (d, _a, ctx) => ctx.services.datasets.versions(d.id),
    }),
  }),
});

builder.node(DatasetVersionRef, {
  id: { resolve: (v) => v.id },
  loadOne: (id, ctx) => ctx.services.datasets.getVersion(id),
  fields: (t) => ({
    dataset: t.field({
      type: DatasetRef,
      resolve: async (v, _a, ctx) => (await ctx.services.datasets.byId.load(v.datasetId))!,
    }),
    version: t.exposeInt('version'),
    format: t.expose('format', { type: DatasetFormatEnum }),
    filename: t.exposeString('filename'),
    status: t.expose('status', { type: DatasetVersionStatusEnum }),
    sha256: t.exposeString('sha256', { nullable: true }),
    sizeBytes: t.float({ nullable: true, resolve: (v) => v.sizeBytes }),
    classNames: t.exposeStringList('classNames', { nullable: true }),
    splits: t.field({
      type: [DatasetSplitRef],
      resolve: (v) =>
        Object.entries(v.splits ?? {}).map(([name, s]) => ({ name, images: s.images, boxes: s.boxes ?? null })),
    }),
    problems: t.field({ type: [DatasetProblemRef], resolve: (v) => v.problems ?? [] }),
    finalizedAt: t.expose('finalizedAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const DatasetVersionUploadRef = builder.objectRef<DatasetVersionUploadRecord>('DatasetVersionUpload').implement({
  description: 'PUT the archive (.zip, .tar.gz or .tar) to uploadUrl with uploadHeaders, then call finalizeDatasetVersion.',
  fields: (t) => ({
    version: t.expose('version', { type: DatasetVersionRef }),
    uploadUrl: t.exposeString('uploadUrl', { description: 'Presigned HTTP PUT; expires at expiresAt.' }),
    uploadHeaders: t.expose('uploadHeaders', { type: 'JSON', description: 'Headers the PUT must send exactly as given.' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
  }),
});

const CreateDatasetVersionInput = builder.inputType('CreateDatasetVersionInput', {
  fields: (t) => ({
    datasetId: t.id(),
    format: t.field({ type: DatasetFormatEnum }),
    filename: t.string({ description: 'The archive name; its ending (.zip, .tar.gz, .tgz, .tar) tells how to read it.' }),
  }),
});

const CreateDatasetInput = builder.inputType('CreateDatasetInput', {
  fields: (t) => ({
    name: t.string(),
    description: t.string({ required: false, extensions: TEXT.multiline }),
    task: t.field({ type: ModelTaskEnum }),
  }),
});

builder.queryFields((t) => ({
  datasets: t.connection({
    type: DatasetRef,
    args: { task: t.arg({ type: ModelTaskEnum, required: false }) },
    resolve: (_r, args, ctx) => ctx.services.datasets.list(args),
  }),
  dataset: t.field({
    type: DatasetRef,
    nullable: true,
    args: { id: t.arg.id() },
    resolve: (_r, { id }, ctx) => ctx.services.datasets.get(localId(String(id), 'Dataset', 'id')),
  }),
}));

builder.mutationFields((t) => ({
  createDatasetVersion: t.field({
    type: DatasetVersionUploadRef,
    args: { input: t.arg({ type: CreateDatasetVersionInput }) },
    errors: { types: E.writeById, dataField: { name: 'datasetVersionUpload' } },
    resolve: (_r, { input }, ctx) =>
      ctx.services.datasets.createVersion({
        ...input,
        datasetId: localId(String(input.datasetId), 'Dataset', 'input.datasetId'),
      }),
  }),
  finalizeDatasetVersion: t.field({
    type: DatasetVersionRef,
    description: 'Validates the uploaded archive: READY, or INVALID with every problem (path, line, message).',
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'datasetVersion' } },
    resolve: (_r, { id }, ctx) => ctx.services.datasets.finalizeVersion(localId(String(id), 'DatasetVersion', 'id')),
  }),
  createDataset: t.field({
    type: DatasetRef,
    args: { input: t.arg({ type: CreateDatasetInput }) },
    errors: { types: E.write, dataField: { name: 'dataset' } },
    resolve: (_r, { input }, ctx) => ctx.services.datasets.create(input),
  }),
}));
