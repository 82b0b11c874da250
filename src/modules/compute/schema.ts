import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { TEXT } from '../../graphql/text-guard.js';
import { globalId, localId } from '../../graphql/ids.js';
import { PROVIDERS, STRATEGIES } from './entity.js';
import type { ComputeProfileRecord } from './service.js';

export const ProviderEnum = builder.enumType('Provider', { values: PROVIDERS });
export const StrategyEnum = builder.enumType('Strategy', {
  description:
    'QUEUE: platform GPUs, wait when busy. CHEAPEST: lowest estimated total cost. FASTEST: lowest estimated wall time. PREFERRED: this profile, then its fallbacks in order.',
  values: STRATEGIES,
});

export const ComputeProfileRef = builder.objectRef<ComputeProfileRecord>('ComputeProfile');

builder.node(ComputeProfileRef, {
  id: { resolve: (p) => p.id },
  loadOne: (id, ctx) => ctx.services.compute.get(id),
  fields: (t) => ({
    name: t.exposeString('name'),
    provider: t.expose('provider', { type: ProviderEnum }),
    strategy: t.expose('strategy', { type: StrategyEnum }),
    config: t.expose('config', { type: 'JSON', description: 'Provider settings, with defaults filled in.' }),
    hasCredentials: t.exposeBoolean('hasCredentials', {
      description: 'Credentials are stored encrypted and never returned; this and the hint are all that is shown.',
    }),
    credentialsHint: t.exposeString('credentialsHint', { nullable: true }),
    fallbackProfileIds: t.idList({
      resolve: (p) => p.fallbackProfileIds.map((id) => globalId('ComputeProfile', id)),
    }),
    fallbackProfiles: t.field({
      type: [ComputeProfileRef],
      resolve: async (p, _a, ctx) =>
        (await ctx.services.compute.byId.loadMany(p.fallbackProfileIds)).filter(
          (x): x is ComputeProfileRecord => x !== null && !(x instanceof Error),
        ),
    }),
    maxConcurrentJobs: t.exposeInt('maxConcurrentJobs', { nullable: true }),
    maxCostPerSessionUsd: t.exposeFloat('maxCostPerSessionUsd', { nullable: true }),
    isDefault: t.exposeBoolean('isDefault'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});


const CreateComputeProfileInput = builder.inputType('CreateComputeProfileInput', {
  fields: (t) => ({
    name: t.string(),
    provider: t.field({ type: ProviderEnum }),
    strategy: t.field({ type: StrategyEnum }),
    config: t.field({ type: 'JSON', required: false, description: 'Provider settings (see README).' }),
    credentials: t.field({ type: 'JSON', required: false, description: 'Encrypted at rest; never returned.', extensions: TEXT.secret }),
    fallbackProfileIds: t.idList({ required: false }),
    maxConcurrentJobs: t.int({ required: false }),
    maxCostPerSessionUsd: t.float({ required: false }),
    isDefault: t.boolean({ required: false }),
  }),
});
const UpdateComputeProfileInput = builder.inputType('UpdateComputeProfileInput', {
  fields: (t) => ({
    name: t.string({ required: false }),
    strategy: t.field({ type: StrategyEnum, required: false }),
    config: t.field({ type: 'JSON', required: false }),
    credentials: t.field({ type: 'JSON', required: false, description: 'Replaces the stored credentials.', extensions: TEXT.secret }),
    fallbackProfileIds: t.idList({ required: false }),
    maxConcurrentJobs: t.int({ required: false }),
    maxCostPerSessionUsd: t.float({ required: false }),
    isDefault: t.boolean({ required: false }),
  }),
});

function decodeFallbacks<T extends { fallbackProfileIds?: readonly (string | number)[] | null }>(input: T): T {
  if (!input.fallbackProfileIds) return input;
  return {
    ...input,
    fallbackProfileIds: input.fallbackProfileIds.map((g, i) =>
      localId(String(g), 'ComputeProfile', `input.fallbackProfileIds.${i}`),
    ),
  };
}

builder.queryFields((t) => ({
  computeProfiles: t.connection({
    type: ComputeProfileRef,
    args: { provider: t.arg({ type: ProviderEnum, required: false }) },
    resolve: (_r, args, ctx) => ctx.services.compute.list(args),
  }),
  computeProfile: t.field({
    type: ComputeProfileRef,
    nullable: true,
    args: { id: t.arg.id() },
    resolve: (_r, { id }, ctx) => ctx.services.compute.get(localId(String(id), 'ComputeProfile', 'id')),
  }),
}));

builder.mutationFields((t) => ({
  createComputeProfile: t.field({
    type: ComputeProfileRef,
    args: { input: t.arg({ type: CreateComputeProfileInput }) },
    errors: { types: E.write, dataField: { name: 'computeProfile' } },
    resolve: (_r, { input }, ctx) => ctx.services.compute.create(decodeFallbacks(input)),
  }),
  updateComputeProfile: t.field({
    type: ComputeProfileRef,
    args: { id: t.arg.id(), input: t.arg({ type: UpdateComputeProfileInput }) },
    errors: { types: E.writeById, dataField: { name: 'computeProfile' } },
    resolve: (_r, { id, input }, ctx) =>
      ctx.services.compute.update(localId(String(id), 'ComputeProfile', 'id'), decodeFallbacks(input)),
  }),
  deleteComputeProfile: t.field({
    type: ComputeProfileRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'computeProfile' } },
    resolve: (_r, { id }, ctx) => ctx.services.compute.delete(localId(String(id), 'ComputeProfile', 'id')),
  }),
}));
