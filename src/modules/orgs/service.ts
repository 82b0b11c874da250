import { UniqueConstraintViolationException } from '@mikro-orm/core';
import { z } from 'zod';
import { limits } from '../../config.js';
import type { RequestContext } from '../../graphql/context.js';
import { AuthenticationError, ConflictError, ForbiddenError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { email, parseInput, trimmedName } from '../../lib/validate.js';
import { ApiKey, Membership, Organization, ROLES, User, type IApiKey, type Role } from './entity.js';
import {
  hashPassword,
  newApiKeySecret,
  signSessionToken,
  timingDummyHash,
  verifyPassword,
} from './credentials.js';
import { hasRole } from './roles.js';
import type { Principal } from './principal.js';
import { throttleAuthAttempt } from './throttle.js';

export interface OrganizationRecord {
  id: string;
  name: string;
  createdAt: Date;
}
export interface UserRecord {
  id: string;
  email: string;
  createdAt: Date;
}
export interface MembershipRecord {
  id: string;
  organizationId: string;
  userId: string;
  role: Role;
  createdAt: Date;
}
export interface ApiKeyRecord {
  id: string;
  organizationId: string;
  name: string;
  role: Role;
  hint: string;
  persistedOnly: boolean;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
  createdAt: Date;
}
export interface ViewerRecord {
  principal: Principal;
}
export interface AuthPayloadRecord {
  token: string;
  expiresAt: Date;
  user: UserRecord;
  organization: OrganizationRecord;
  role: Role;
}

const password = z
  .string()
  .min(limits.passwordMinLength, `must be at least ${limits.passwordMinLength} characters`)
  .max(limits.passwordMaxLength, `must be at most ${limits.passwordMaxLength} characters`);
const role = z.enum(ROLES);

const signUpInput = z.object({ email, password, organizationName: trimmedName() });
const signInInput = z.object({
  email,
  password: z.string().min(1, 'must not be empty').max(limits.passwordMaxLength),
  organizationId: z.string().nullish(),
});
const createApiKeyInput = z.object({ name: trimmedName(), role, persistedOnly: z.boolean().nullish() });
const addMemberInput = z.object({ email, role });

function apiKeyRecord(k: IApiKey): ApiKeyRecord {
  return {
    id: k.id,
    organizationId: k.organization.id,
    name: k.name,
    role: k.role,
    hint: k.hint,
    persistedOnly: k.persistedOnly,
    lastUsedAt: k.lastUsedAt ?? null,
    revokedAt: k.revokedAt ?? null,
    createdAt: k.createdAt,
  };
}

export class OrgService {
  constructor(private readonly ctx: RequestContext) {}

  private get em() {
    return this.ctx.em;
  }

  async signUp(input: unknown): Promise<AuthPayloadRecord> {
    const data = parseInput(signUpInput, input);
    const attempt = await throttleAuthAttempt(this.ctx, data.email);
    const passwordHash = await hashPassword(data.password);
    const em = this.em.fork({ clear: true });
    try {
      const result = await em.transactional(async (tx) => {
        const org = tx.create(Organization, { name: data.organizationName });
        const user = tx.create(User, { email: data.email, passwordHash });
        tx.create(Membership, { organization: org, user, role: 'OWNER' });
        await tx.flush();
        return { org, user };
      });
      await attempt.succeeded();
      return this.authPayload(result.user, result.org, 'OWNER');
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        throw new ValidationError('input.email', 'is already registered; sign in instead');
      }
      throw err;
    }
  }

  async signIn(input: unknown): Promise<AuthPayloadRecord> {
    const data = parseInput(signInInput, input);
    const attempt = await throttleAuthAttempt(this.ctx, data.email);
    const user = await this.em.findOne(User, { email: data.email }, { populate: ['passwordHash'] });
    const ok = await verifyPassword(data.password, user?.passwordHash ?? (await timingDummyHash()));
    if (!user || !ok) throw new AuthenticationError('Wrong email or password');
    await attempt.succeeded();
    // Membership lookup across organizations: the caller has no organization scope yet.
    const memberships = await this.em.find(
      Membership,
      { user: user.id },
      { filters: false, populate: ['organization'], orderBy: { createdAt: 'asc' } },
    );
    let membership = memberships[0];
    if (data.organizationId) {
      membership = memberships.find((m) => m.organization.id === data.organizationId)!;
      if (!membership) throw new ForbiddenError('You are not a member of that organization');
    }
    if (!membership) throw new AuthenticationError('This account belongs to no organization any more');
    user.lastSignInAt = new Date();
    await this.em.flush();
    return this.authPayload(user, membership.organization, membership.role);
  }

  private async authPayload(
    user: { id: string; email: string; createdAt: Date },
    org: { id: string; name: string; createdAt: Date },
    r: Role,
  ): Promise<AuthPayloadRecord> {
    const { token, expiresAt } = await signSessionToken(
      { userId: user.id, orgId: org.id },
      this.ctx.config.jwtSecret,
      this.ctx.config.jwtTtlSeconds,
    );
    return {
      token,
      expiresAt,
      user: { id: user.id, email: user.email, createdAt: user.createdAt },
      organization: { id: org.id, name: org.name, createdAt: org.createdAt },
      role: r,
    };
  }

  async viewer(): Promise<ViewerRecord | null> {
    const principal = await this.ctx.principal();
    return principal ? { principal } : null;
  }

  async organization(id: string): Promise<OrganizationRecord | null> {
    const org = await this.em.findOne(Organization, { id });
    return org ? { id: org.id, name: org.name, createdAt: org.createdAt } : null;
  }

  async user(id: string): Promise<UserRecord | null> {
    const user = await this.em.findOne(User, { id });
    return user ? { id: user.id, email: user.email, createdAt: user.createdAt } : null;
  }

  async members(): Promise<MembershipRecord[]> {
    await this.ctx.requirePrincipal();
    const rows = await this.em.find(Membership, {}, { orderBy: { createdAt: 'asc' } });
    return rows.map((m) => ({
      id: m.id,
      organizationId: m.organization.id,
      userId: m.user.id,
      role: m.role,
      createdAt: m.createdAt,
    }));
  }

  async addMember(input: unknown): Promise<MembershipRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Adding members');
    const data = parseInput(addMemberInput, input);
    if (data.role === 'OWNER' && me.role !== 'OWNER') {
      throw new ForbiddenError('Only an OWNER can make someone an OWNER');
    }
    const user = await this.em.findOne(User, { email: data.email });
    if (!user) throw new ValidationError('input.email', 'no account uses this email; they sign up first');
    const existing = await this.em.findOne(Membership, { user: user.id });
    if (existing) throw new ConflictError(`${data.email} is already a member (${existing.role})`);
    const m = this.em.create(Membership, {
      organization: this.em.getReference(Organization, me.orgId),
      user,
      role: data.role,
    });
    try {
      await this.em.flush();
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        throw new ConflictError(`${data.email} is already a member`);
      }
      throw err;
    }
    return { id: m.id, organizationId: me.orgId, userId: user.id, role: m.role, createdAt: m.createdAt };
  }

  async removeMember(userId: string): Promise<MembershipRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Removing members');
    const removed = await this.em.transactional(async (tx) => {
      const m = await tx.findOne(Membership, { user: userId }, { lockMode: 4 /* PESSIMISTIC_WRITE */ });
      if (!m) throw new NotFoundError('User', userId);
      if (m.role === 'OWNER') {
        if (me.role !== 'OWNER') throw new ForbiddenError('Only an OWNER can remove an OWNER');
        const owners = await tx.count(Membership, { role: 'OWNER' });
        if (owners <= 1) throw new ConflictError('An organization keeps at least one OWNER');
      }
      const record: MembershipRecord = {
        id: m.id,
        organizationId: m.organization.id,
        userId: m.user.id,
        role: m.role,
        createdAt: m.createdAt,
      };
      tx.remove(m);
      return record;
    });
    // Committed: their open websocket connections in this organization close on every replica.
    this.ctx.app.publisher.credentialRevoked({ orgId: removed.organizationId, userId: removed.userId });
    return removed;
  }

  /** The key the caller authenticated with: any key may see itself, whatever its role. */
  async currentApiKey(): Promise<ApiKeyRecord | null> {
    const principal = await this.ctx.principal();
    if (!principal?.apiKeyId) return null;
    const key = await this.em.findOne(ApiKey, { id: principal.apiKeyId });
    return key ? apiKeyRecord(key) : null;
  }

  async apiKeys(): Promise<ApiKeyRecord[]> {
    await this.ctx.requireRole('ADMIN', 'Listing API keys');
    const keys = await this.em.find(ApiKey, {}, { orderBy: { createdAt: 'desc' } });
    return keys.map(apiKeyRecord);
  }

  async createApiKey(input: unknown): Promise<{ apiKey: ApiKeyRecord; secret: string }> {
    const me = await this.ctx.requireRole('ADMIN', 'Creating API keys');
    const data = parseInput(createApiKeyInput, input);
    if (!hasRole(me.role, data.role)) {
      throw new ForbiddenError(`You cannot create a key with role ${data.role}, above your own (${me.role})`);
    }
    const key = this.em.create(ApiKey, {
      organization: this.em.getReference(Organization, me.orgId),
      createdBy: me.userId ? this.em.getReference(User, me.userId) : null,
      name: data.name,
      role: data.role,
      persistedOnly: data.persistedOnly ?? false,
      secretHash: '',
      hint: '',
    });
    const { token, secretHash, hint } = newApiKeySecret(key.id);
    key.secretHash = secretHash;
    key.hint = hint;
    await this.em.flush();
    return { apiKey: apiKeyRecord(key), secret: token };
  }

  async revokeApiKey(id: string): Promise<ApiKeyRecord> {
    await this.ctx.requireRole('ADMIN', 'Revoking API keys');
    const key = await this.em.findOne(ApiKey, { id });
    if (!key) throw new NotFoundError('ApiKey', id);
    key.revokedAt ??= new Date();
    await this.em.flush();
    // Also when it was revoked before: a signal lost then (Redis down) is sent again.
    this.ctx.app.publisher.credentialRevoked({ apiKeyId: key.id });
    return apiKeyRecord(key);
  }
}
