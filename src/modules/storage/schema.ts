import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { TEXT } from '../../graphql/text-guard.js';
import { localId } from '../../graphql/ids.js';
import { STORAGE_PROFILE_KINDS } from './entity.js';
import type { StorageProfileRecord } from './service.js';

const StorageKindEnum = builder.enumType('StorageProfileKind', { values: STORAGE_PROFILE_KINDS });

export const StorageProfileRef = builder.objectRef<StorageProfileRecord>('StorageProfile');

builder.node(StorageProfileRef, {
  id: { resolve: (p) => p.id },
  loadOne: async (id, ctx) => ((await ctx.principal()) ? ctx.services.storage.get(id) : null),
  fields: (t) => ({
    name: t.exposeString('name'),
    kind: t.expose('kind', { type: StorageKindEnum }),
    config: t.expose('config', { type: 'JSON', description: 'Bucket or container, region, endpoint: nothing secret.' }),
    credentialsHint: t.exposeString('credentialsHint', { description: 'Credentials are encrypted and never returned.' }),
    isDefault: t.exposeBoolean('isDefault', {
      description: "The default profile receives the organization's new datasets and training files.",
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

const StorageCheckRef = builder.objectRef<{ ok: boolean; reason: string | null }>('StorageCheck').implement({
  fields: (t) => ({ ok: t.exposeBoolean('ok'), reason: t.exposeString('reason', { nullable: true }) }),
});

const CreateStorageProfileInput = builder.inputType('CreateStorageProfileInput', {
  fields: (t) => ({
    name: t.string(),
    kind: t.field({ type: StorageKindEnum }),
    config: t.field({ type: 'JSON', description: 'S3: bucket, region, endpoint?, forcePathStyle?; AZURE: container, accountName, endpoint?' }),
    credentials: t.field({ type: 'JSON', description: 'S3: accessKeyId, secretAccessKey; AZURE: accountKey. Encrypted; never returned.', extensions: TEXT.secret }),
    isDefault: t.boolean({ required: false }),
  }),
});
const UpdateStorageProfileInput = builder.inputType('UpdateStorageProfileInput', {
  fields: (t) => ({
    name: t.string({ required: false }),
    config: t.field({ type: 'JSON', required: false }),
    credentials: t.field({ type: 'JSON', required: false, extensions: TEXT.secret }),
    isDefault: t.boolean({ required: false }),
  }),
});

builder.queryFields((t) => ({
  storageProfiles: t.field({ type: [StorageProfileRef], resolve: (_r, _a, ctx) => ctx.services.storage.list() }),
}));

builder.mutationFields((t) => ({
  createStorageProfile: t.field({
    type: StorageProfileRef,
    args: { input: t.arg({ type: CreateStorageProfileInput }) },
    errors: { types: E.write, dataField: { name: 'storageProfile' } },
    resolve: (_r, { input }, ctx) => ctx.services.storage.create(input),
  }),
  updateStorageProfile: t.field({
    type: StorageProfileRef,
    args: { id: t.arg.id(), input: t.arg({ type: UpdateStorageProfileInput }) },
    errors: { types: E.writeById, dataField: { name: 'storageProfile' } },
    resolve: (_r, { id, input }, ctx) => ctx.services.storage.update(localId(String(id), 'StorageProfile', 'id'), input),
  }),
  deleteStorageProfile: t.field({
    type: StorageProfileRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'storageProfile' } },
    resolve: (_r, { id }, ctx) => ctx.services.storage.delete(localId(String(id), 'StorageProfile', 'id')),
  }),
  checkStorageProfile: t.field({
    type: StorageCheckRef,
    description: 'Writes, reads back and deletes a probe object; reports what went wrong instead of failing.',
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'check' } },
    resolve: (_r, { id }, ctx) => ctx.services.storage.check(localId(String(id), 'StorageProfile', 'id')),
  }),
}));
