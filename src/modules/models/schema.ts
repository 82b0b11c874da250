import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { TEXT } from '../../graphql/text-guard.js';
import { localId } from '../../graphql/ids.js';
import { CVTRAIN_ARCHITECTURES } from './architectures.js';
import { MODEL_FRAMEWORKS, MODEL_TASKS } from './entity.js';
import type { ModelRecord, ModelVersionRecord } from './service.js';

export const ModelTaskEnum = builder.enumType('ModelTask', { values: MODEL_TASKS });
export const ModelFrameworkEnum = builder.enumType('ModelFramework', {
  values: MODEL_FRAMEWORKS,
  description:
    'What builds and trains the model. TORCHVISION: torchvision detectors and classifiers. ULTRALYTICS: YOLO v8-11 ' +
    '(needs the ultralytics package, AGPL-3.0). TRANSFORMERS: RT-DETR. CUSTOM: a registered trainer. CVTRAIN: the ' +
    `platform's own YOLO-style anchor-free detector (${CVTRAIN_ARCHITECTURES.OBJECT_DETECTION.join(', ')}; ` +
    'OBJECT_DETECTION; needs only PyTorch), the fastest to train from scratch here.',
});

export const ModelRef = builder.objectRef<ModelRecord>('Model');
export const ModelVersionRef = builder.objectRef<ModelVersionRecord>('ModelVersion');

builder.node(ModelRef, {
  id: { resolve: (m) => m.id },
  loadOne: (id, ctx) => ctx.services.models.get(id),
  fields: (t) => ({
    name: t.exposeString('name'),
    description: t.exposeString('description', { nullable: true }),
    task: t.expose('task', { type: ModelTaskEnum }),
    framework: t.expose('framework', { type: ModelFrameworkEnum }),
    architecture: t.exposeString('architecture', {
      description:
        'A name the framework understands, e.g. fasterrcnn_mobilenet_v3_large_320_fpn or resnet18 (TORCHVISION), ' +
        `${CVTRAIN_ARCHITECTURES.OBJECT_DETECTION.join(', ')} (CVTRAIN).`,
    }),
    archived: t.boolean({ resolve: (m) => m.archivedAt !== null }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    versions: t.field({
      type: [ModelVersionRef],
      description: 'One per successful training session, newest first.',
      resolve: (m, _a, ctx) => ctx.services.models.versions(m.id),
    }),
  }),
});

builder.node(ModelVersionRef, {
  id: { resolve: (v) => v.id },
  loadOne: async (id, ctx) => {
    if (!(await ctx.principal())) return null;
    return ctx.services.models.versionById(id);
  },
  fields: (t) => ({
    version: t.exposeInt('version'),
    model: t.field({ type: ModelRef, resolve: async (v, _a, ctx) => (await ctx.services.models.byId.load(v.modelId))! }),
    metrics: t.expose('metrics', { type: 'JSON' }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

const CreateModelInput = builder.inputType('CreateModelInput', {
  fields: (t) => ({
    name: t.string(),
    description: t.string({ required: false, extensions: TEXT.multiline }),
    task: t.field({ type: ModelTaskEnum }),
    framework: t.field({ type: ModelFrameworkEnum }),
    architecture: t.string(),
  }),
});
const UpdateModelInput = builder.inputType('UpdateModelInput', {
  fields: (t) => ({
    name: t.string({ required: false }),
    description: t.string({ required: false, extensions: TEXT.multiline }),
    architecture: t.string({ required: false }),
  }),
});

builder.queryFields((t) => ({
  models: t.connection({
    type: ModelRef,
    args: {
      includeArchived: t.arg.boolean({ required: false, description: 'Archived models are left out by default.' }),
      task: t.arg({ type: ModelTaskEnum, required: false }),
    },
    resolve: (_r, args, ctx) => ctx.services.models.list(args),
  }),
  model: t.field({
    type: ModelRef,
    nullable: true,
    args: { id: t.arg.id() },
    resolve: (_r, { id }, ctx) => ctx.services.models.get(localId(String(id), 'Model', 'id')),
  }),
}));

builder.mutationFields((t) => ({
  createModel: t.field({
    type: ModelRef,
    args: { input: t.arg({ type: CreateModelInput }) },
    errors: { types: E.write, dataField: { name: 'model' } },
    resolve: (_r, { input }, ctx) => ctx.services.models.create(input),
  }),
  updateModel: t.field({
    type: ModelRef,
    args: { id: t.arg.id(), input: t.arg({ type: UpdateModelInput }) },
    errors: { types: E.writeById, dataField: { name: 'model' } },
    resolve: (_r, { id, input }, ctx) => ctx.services.models.update(localId(String(id), 'Model', 'id'), input),
  }),
  archiveModel: t.field({
    type: ModelRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'model' } },
    resolve: (_r, { id }, ctx) => ctx.services.models.setArchived(localId(String(id), 'Model', 'id'), true),
  }),
  unarchiveModel: t.field({
    type: ModelRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'model' } },
    resolve: (_r, { id }, ctx) => ctx.services.models.setArchived(localId(String(id), 'Model', 'id'), false),
  }),
}));

