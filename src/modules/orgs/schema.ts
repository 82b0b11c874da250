import { builder } from '../../graphql/builder.js';
import { E } from '../../graphql/errors.js';
import { TEXT } from '../../graphql/text-guard.js';
import { localId } from '../../graphql/ids.js';
import { LimitExceededError } from '../../lib/errors.js';
import { ROLES } from './entity.js';
import type {
  ApiKeyRecord,
  AuthPayloadRecord,
  MembershipRecord,
  OrganizationRecord,
  UserRecord,
  ViewerRecord,
} from './service.js';

export const RoleEnum = builder.enumType('Role', {
  description: 'OWNER and ADMIN manage members, keys and compute profiles; VIEWER can only read.',
  values: ROLES,
});

export const OrganizationRef = builder.objectRef<OrganizationRecord>('Organization');
export const UserRef = builder.objectRef<UserRecord>('User');
export const ApiKeyRef = builder.objectRef<ApiKeyRecord>('ApiKey');
const MembershipRef = builder.objectRef<MembershipRecord>('Membership');
const ViewerRef = builder.objectRef<ViewerRecord>('Viewer');
const AuthPayloadRef = builder.objectRef<AuthPayloadRecord>('AuthPayload');
const CreatedApiKeyRef = builder.objectRef<{ apiKey: ApiKeyRecord; secret: string }>('CreatedApiKey');

builder.node(OrganizationRef, {
  id: { resolve: (o) => o.id },
  loadOne: async (id, ctx) => {
    const p = await ctx.principal();
    return p && p.orgId === id ? ctx.services.orgs.organization(id) : null;
  },
  fields: (t) => ({
    name: t.exposeString('name'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    members: t.field({ type: [MembershipRef], resolve: (_o, _a, ctx) => ctx.services.orgs.members() }),
  }),
});

builder.node(UserRef, {
  id: { resolve: (u) => u.id },
  // Users are visible only to members of an organization they belong to.
  loadOne: async (id, ctx) => {
    const p = await ctx.principal();
    if (!p) return null;
    const members = await ctx.services.orgs.members();
    return members.some((m) => m.userId === id) ? ctx.services.orgs.user(id) : null;
  },
  fields: (t) => ({
    email: t.exposeString('email'),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

builder.node(ApiKeyRef, {
  id: { resolve: (k) => k.id },
  loadOne: async (id, ctx) => {
    const p = await ctx.principal();
    if (!p) return null;
    const keys = await ctx.services.orgs.apiKeys().catch(() => []);
    return keys.find((k) => k.id === id) ?? null;
  },
  fields: (t) => ({
    name: t.exposeString('name'),
    role: t.expose('role', { type: RoleEnum }),
    hint: t.exposeString('hint', { description: 'The first characters of the key, to tell keys apart.' }),
    persistedOnly: t.exposeBoolean('persistedOnly', {
      description: 'When true the key may only run operations from the persisted-operations manifest.',
    }),
    lastUsedAt: t.expose('lastUsedAt', { type: 'DateTime', nullable: true }),
    revokedAt: t.expose('revokedAt', { type: 'DateTime', nullable: true }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

MembershipRef.implement({
  fields: (t) => ({
    user: t.field({
      type: UserRef,
      resolve: async (m, _a, ctx) => (await ctx.services.orgs.user(m.userId))!,
    }),
    role: t.expose('role', { type: RoleEnum }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

ViewerRef.implement({
  description: 'The caller: a signed-in user, or an API key acting for an organization.',
  fields: (t) => ({
    user: t.field({
      type: UserRef,
      nullable: true,
      description: 'Null when the caller is an API key.',
      resolve: (v, _a, ctx) => (v.principal.userId ? ctx.services.orgs.user(v.principal.userId) : null),
    }),
    apiKey: t.field({
      type: ApiKeyRef,
      nullable: true,
      resolve: (_v, _a, ctx) => ctx.services.orgs.currentApiKey(),
    }),
    organization: t.field({
      type: OrganizationRef,
      resolve: async (v, _a, ctx) => (await ctx.services.orgs.organization(v.principal.orgId))!,
    }),
    role: t.field({ type: RoleEnum, resolve: (v) => v.principal.role }),
  }),
});

AuthPayloadRef.implement({
  fields: (t) => ({
    token: t.exposeString('token', { description: 'Send as "Authorization: Bearer <token>".' }),
    expiresAt: t.expose('expiresAt', { type: 'DateTime' }),
    user: t.expose('user', { type: UserRef }),
    organization: t.expose('organization', { type: OrganizationRef }),
    role: t.expose('role', { type: RoleEnum }),
  }),
});

CreatedApiKeyRef.implement({
  fields: (t) => ({
    apiKey: t.expose('apiKey', { type: ApiKeyRef }),
    secret: t.exposeString('secret', {
      description: 'The key itself. Shown once: only a hash is stored.',
    }),
  }),
});

const SignUpInput = builder.inputType('SignUpInput', {
  fields: (t) => ({
    email: t.string(),
    password: t.string({ description: 'At least 10 characters.', extensions: TEXT.secret }),
    organizationName: t.string(),
  }),
});
const SignInInput = builder.inputType('SignInInput', {
  fields: (t) => ({
    email: t.string(),
    password: t.string({ extensions: TEXT.secret }),
    organizationId: t.id({ required: false, description: 'Which organization to act for; the first joined by default.' }),
  }),
});
const CreateApiKeyInput = builder.inputType('CreateApiKeyInput', {
  fields: (t) => ({
    name: t.string(),
    role: t.field({ type: RoleEnum }),
    persistedOnly: t.boolean({ required: false }),
  }),
});
const AddMemberInput = builder.inputType('AddMemberInput', {
  fields: (t) => ({ email: t.string(), role: t.field({ type: RoleEnum }) }),
});

builder.queryFields((t) => ({
  viewer: t.field({
    type: ViewerRef,
    nullable: true,
    description: 'The caller, or null when the request carries no valid credentials.',
    resolve: (_r, _a, ctx) => ctx.services.orgs.viewer(),
  }),
  apiKeys: t.field({
    type: [ApiKeyRef],
    description: 'OWNER and ADMIN only.',
    resolve: (_r, _a, ctx) => ctx.services.orgs.apiKeys(),
  }),
  members: t.field({ type: [MembershipRef], resolve: (_r, _a, ctx) => ctx.services.orgs.members() }),
}));

builder.mutationFields((t) => ({
  signUp: t.field({
    type: AuthPayloadRef,
    args: { input: t.arg({ type: SignUpInput }) },
    errors: { types: [...E.write, LimitExceededError], dataField: { name: 'authPayload' } },
    resolve: (_r, { input }, ctx) => ctx.services.orgs.signUp(input),
  }),
  signIn: t.field({
    type: AuthPayloadRef,
    args: { input: t.arg({ type: SignInInput }) },
    errors: { types: [...E.write, LimitExceededError], dataField: { name: 'authPayload' } },
    resolve: (_r, { input }, ctx) => {
      const organizationId = input.organizationId
        ? localId(String(input.organizationId), 'Organization', 'input.organizationId')
        : null;
      return ctx.services.orgs.signIn({ ...input, organizationId });
    },
  }),
  createApiKey: t.field({
    type: CreatedApiKeyRef,
    args: { input: t.arg({ type: CreateApiKeyInput }) },
    errors: { types: E.write, dataField: { name: 'createdApiKey' } },
    resolve: (_r, { input }, ctx) => ctx.services.orgs.createApiKey(input),
  }),
  revokeApiKey: t.field({
    type: ApiKeyRef,
    args: { id: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'apiKey' } },
    resolve: (_r, { id }, ctx) => ctx.services.orgs.revokeApiKey(localId(String(id), 'ApiKey', 'id')),
  }),
  addMember: t.field({
    type: MembershipRef,
    args: { input: t.arg({ type: AddMemberInput }) },
    errors: { types: E.write, dataField: { name: 'membership' } },
    resolve: (_r, { input }, ctx) => ctx.services.orgs.addMember(input),
  }),
  removeMember: t.field({
    type: MembershipRef,
    args: { userId: t.arg.id() },
    errors: { types: E.writeById, dataField: { name: 'membership' } },
    resolve: (_r, { userId }, ctx) => ctx.services.orgs.removeMember(localId(String(userId), 'User', 'userId')),
  }),
}));

