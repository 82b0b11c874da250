import { randomUUID } from 'node:crypto';
import DataLoader from 'dataloader';
import { z } from 'zod';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { keysetWhere, pageRequest, toConnection, type PageArgs } from '../../lib/pagination.js';
import { parseInput, trimmedName } from '../../lib/validate.js';
import { saveWithSingleDefault } from '../../db/default-profile.js';
import { selectByIdsInOrg } from '../../db/rows.js';
import { Organization } from '../orgs/entity.js';
import { countUnfinishedOnProfile } from '../training/repository.js';
import { ComputeProfile, PROVIDERS, STRATEGIES, type IComputeProfile, type Provider, type Strategy } from './entity.js';
import { credentialsHint, providerConfigSchemas, providerCredentialSchemas } from './provider-config.js';

export interface ComputeProfileRecord {
  id: string;
  organizationId: string;
  name: string;
  provider: Provider;
  strategy: Strategy;
  config: Record<string, unknown>;
  hasCredentials: boolean;
  credentialsHint: string | null;
  fallbackProfileIds: string[];
  maxConcurrentJobs: number | null;
  maxCostPerSessionUsd: number | null;
  isDefault: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export function computeProfileRecord(p: IComputeProfile): ComputeProfileRecord {
  return {
    id: p.id,
    organizationId: p.organization.id,
    name: p.name,
    provider: p.provider,
    strategy: p.strategy,
    config: p.config,
    hasCredentials: p.credentialsHint != null,
    credentialsHint: p.credentialsHint ?? null,
    fallbackProfileIds: p.fallbackProfileIds,
    maxConcurrentJobs: p.maxConcurrentJobs ?? null,
    maxCostPerSessionUsd: p.maxCostPerSessionUsd == null ? null : Number(p.maxCostPerSessionUsd),
    isDefault: p.isDefault,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  };
}

const jsonObject = z.record(z.string(), z.unknown(), { message: 'must be a JSON object' });
const common = {
  name: trimmedName(),
  strategy: z.enum(STRATEGIES),
  config: jsonObject.nullish(),
  credentials: jsonObject.nullish(),
  fallbackProfileIds: z.array(z.string()).max(10, 'at most 10 fallbacks').nullish(),
  maxConcurrentJobs: z.number().int('must be a whole number').min(1, 'must be at least 1').max(10_000).nullish(),
  maxCostPerSessionUsd: z.number().positive('must be greater than 0').max(1_000_000).nullish(),
  isDefault: z.boolean().nullish(),
};
const createInput = z.object({ ...common, provider: z.enum(PROVIDERS) });
const updateInput = z.object({
  name: common.name.nullish(),
  strategy: common.strategy.nullish(),
  config: common.config,
  credentials: common.credentials,
  fallbackProfileIds: common.fallbackProfileIds,
  maxConcurrentJobs: common.maxConcurrentJobs,
  maxCostPerSessionUsd: common.maxCostPerSessionUsd,
  isDefault: common.isDefault,
});

function aad(orgId: string, id: string) {
  return `compute_profiles:${orgId}:${id}`;
}

export class ComputeService {
  constructor(private readonly ctx: RequestContext) {}

  readonly byId = new DataLoader<string, ComputeProfileRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const rows = await selectByIdsInOrg<ComputeProfileRecord & { credentialsCiphertext?: string | null }>(
      this.ctx.app.sql,
      'compute_profiles',
      me.orgId,
      ids,
    );
    return ids.map((id) => {
      const row = rows.get(id);
      if (!row) return null;
      // The ciphertext never leaves the service in a record.
      const { credentialsCiphertext: _omit, ...rest } = row;
      return { ...rest, hasCredentials: row.credentialsHint != null };
    });
  });

  async get(id: string): Promise<ComputeProfileRecord | null> {
    if (!(await this.ctx.principal())) return null;
    return this.byId.load(id);
  }

  async defaultProfile(): Promise<ComputeProfileRecord | null> {
    await this.ctx.requirePrincipal();
    const p = await this.ctx.em.findOne(ComputeProfile, { isDefault: true });
    return p ? computeProfileRecord(p) : null;
  }

  async list(args: PageArgs & { provider?: Provider | null }) {
    await this.ctx.requirePrincipal();
    const req = pageRequest(args);
    const filter: Record<string, unknown> = args.provider ? { provider: args.provider } : {};
    const { where, orderBy } = keysetWhere(req);
    const rows = await this.ctx.em.find(ComputeProfile, { ...filter, ...where }, { orderBy, limit: req.limit + 1 });
    return toConnection(req, rows, computeProfileRecord, () => this.ctx.em.count(ComputeProfile, filter));
  }

  async create(input: unknown): Promise<ComputeProfileRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Creating compute profiles');
    const data = parseInput(createInput, input);
    // Everything is checked before an entity exists, so a refused request writes nothing.
    const config = parseInput(providerConfigSchemas[data.provider], data.config ?? {}, 'input.config');
    const credentials = this.checkedCredentials(data.provider, data.credentials, true);
    const id = randomUUID();
    const fallbacks = await this.checkedFallbacks(id, data.fallbackProfileIds ?? []);
    const em = this.ctx.em;
    const profile = em.create(ComputeProfile, {
      id,
      organization: em.getReference(Organization, me.orgId),
      name: data.name,
      provider: data.provider,
      strategy: data.strategy,
      config,
      fallbackProfileIds: fallbacks,
      maxConcurrentJobs: data.maxConcurrentJobs ?? null,
      maxCostPerSessionUsd: data.maxCostPerSessionUsd ?? null,
      isDefault: false,
    });
    if (credentials) this.sealCredentials(profile, me.orgId, data.provider, credentials);
    await this.save(profile, me.orgId, data.isDefault ?? false, data.name);
    return computeProfileRecord(profile);
  }

  async update(id: string, input: unknown): Promise<ComputeProfileRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Updating compute profiles');
    const data = parseInput(updateInput, input);
    const profile = await this.ctx.em.findOne(ComputeProfile, { id });
    if (!profile) throw new NotFoundError('ComputeProfile', id);
    const config =
      data.config != null ? parseInput(providerConfigSchemas[profile.provider], data.config, 'input.config') : null;
    const credentials =
      data.credentials !== undefined ? this.checkedCredentials(profile.provider, data.credentials, false) : null;
    const fallbacks = data.fallbackProfileIds != null ? await this.checkedFallbacks(id, data.fallbackProfileIds) : null;
    // Valid: only now does the entity change.
    if (data.name != null) profile.name = data.name;
    if (data.strategy != null) profile.strategy = data.strategy;
    if (config) profile.config = config;
    if (credentials) this.sealCredentials(profile, me.orgId, profile.provider, credentials);
    if (fallbacks) profile.fallbackProfileIds = fallbacks;
    if (data.maxConcurrentJobs !== undefined) profile.maxConcurrentJobs = data.maxConcurrentJobs;
    if (data.maxCostPerSessionUsd !== undefined) profile.maxCostPerSessionUsd = data.maxCostPerSessionUsd;
    await this.save(profile, me.orgId, data.isDefault ?? null, profile.name);
    return computeProfileRecord(profile);
  }

  async delete(id: string): Promise<ComputeProfileRecord> {
    await this.ctx.requireRole('ADMIN', 'Deleting compute profiles');
    const em = this.ctx.em;
    const profile = await em.findOne(ComputeProfile, { id });
    if (!profile) throw new NotFoundError('ComputeProfile', id);
    const active = await countUnfinishedOnProfile(em, id);
    if (active > 0) {
      throw new ConflictError(`${active} unfinished training session(s) use this profile; cancel them or wait`);
    }
    const referencing = (await em.find(ComputeProfile, { id: { $ne: id } })).filter((p) =>
      p.fallbackProfileIds.includes(id),
    );
    if (referencing.length) {
      throw new ConflictError(
        `Profiles ${referencing.map((p) => `"${p.name}"`).join(', ')} fall back to this one; remove it from their fallbacks first`,
      );
    }
    const record = computeProfileRecord(profile);
    em.remove(profile);
    await em.flush();
    return record;
  }

  /**
   * For the orchestrator and provider adapters only (never for a resolver): the decrypted
   * credentials of a profile of the caller's organization.
   */
  async decryptedCredentials(id: string): Promise<Record<string, unknown> | null> {
    const me = await this.ctx.requirePrincipal();
    const profile = await this.ctx.em.findOne(ComputeProfile, { id }, { populate: ['credentialsCiphertext'] });
    if (!profile?.credentialsCiphertext) return null;
    return JSON.parse(this.ctx.app.secretBox.decrypt(profile.credentialsCiphertext, aad(me.orgId, profile.id)));
  }

  /** Parses credentials for a provider; null when there is nothing to store. */
  private checkedCredentials(
    provider: Provider,
    credentials: Record<string, unknown> | null | undefined,
    creating: boolean,
  ): Record<string, unknown> | null {
    const schema = providerCredentialSchemas[provider];
    if (credentials == null) {
      if (creating && schema) throw new ValidationError('input.credentials', `${provider} profiles need credentials`);
      if (!creating && credentials === null && schema) {
        throw new ValidationError('input.credentials', `${provider} profiles cannot drop their credentials`);
      }
      return null;
    }
    if (!schema) throw new ValidationError('input.credentials', `${provider} profiles take no credentials`);
    return parseInput(schema, credentials, 'input.credentials') as Record<string, unknown>;
  }

  private sealCredentials(profile: IComputeProfile, orgId: string, provider: Provider, credentials: Record<string, unknown>) {
    profile.credentialsCiphertext = this.ctx.app.secretBox.encrypt(JSON.stringify(credentials), aad(orgId, profile.id));
    profile.credentialsHint = credentialsHint(provider, credentials);
  }

  /** Fallbacks must be other profiles of this organization, listed once, with no cycle back here. */
  private async checkedFallbacks(selfId: string, ids: string[]): Promise<string[]> {
    if (new Set(ids).size !== ids.length) {
      throw new ValidationError('input.fallbackProfileIds', 'lists a profile twice');
    }
    if (ids.includes(selfId)) throw new ValidationError('input.fallbackProfileIds', 'a profile cannot fall back to itself');
    if (ids.length === 0) return [];
    const all = await this.ctx.em.find(ComputeProfile, {});
    const byId = new Map(all.map((p) => [p.id, p]));
    ids.forEach((id, i) => {
      if (!byId.has(id)) throw new ValidationError(`input.fallbackProfileIds.${i}`, 'no such compute profile');
    });
    // Walk the fallback graph from the new fallbacks; reaching this profile would loop failover forever.
    const seen = new Set<string>();
    const stack = [...ids];
    while (stack.length) {
      const id = stack.pop()!;
      if (id === selfId) throw new ValidationError('input.fallbackProfileIds', 'would create a fallback cycle');
      if (seen.has(id)) continue;
      seen.add(id);
      stack.push(...(byId.get(id)?.fallbackProfileIds ?? []));
    }
    return ids;
  }

  private save(profile: IComputeProfile, orgId: string, isDefault: boolean | null, name: string) {
    return saveWithSingleDefault(this.ctx.em, ComputeProfile, profile, {
      orgId,
      table: 'compute_profiles',
      isDefault,
      nameTaken: `A compute profile named "${name}" already exists in this organization`,
    });
  }
}
