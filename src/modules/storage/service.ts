// Storage profiles (an organization's own bucket or container) and the one answer to "which
// storage holds organization X's objects": its default profile, or else the platform's storage.
import { randomBytes } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { z } from 'zod';
import type { App } from '../../app.js';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { parseInput, trimmedName } from '../../lib/validate.js';
import { saveWithSingleDefault } from '../../db/default-profile.js';
import { orgScoped, type OrgStorage } from '../../storage/keys.js';
import { Organization } from '../orgs/entity.js';
import { countInStorageProfile } from '../training/repository.js';
import { STORAGE_PROFILE_KINDS, StorageProfile, type IStorageProfile, type StorageProfileKind } from './entity.js';
import {
  backendFromProfile,
  endpointProblem,
  storageConfigSchemas,
  storageCredentialSchemas,
  storageCredentialsHint,
} from './profile-config.js';

export interface StorageProfileRecord {
  id: string;
  organizationId: string;
  name: string;
  kind: StorageProfileKind;
  config: Record<string, unknown>;
  credentialsHint: string;
  isDefault: boolean;
  createdAt: Date;
  updatedAt: Date;
}

export function storageProfileRecord(p: IStorageProfile): StorageProfileRecord {
  return {
    id: p.id,
    organizationId: p.organization.id,
    name: p.name,
    kind: p.kind,
    config: p.config,
    credentialsHint: p.credentialsHint,
    isDefault: p.isDefault,
    createdAt: p.createdAt,
    updatedAt: p.updatedAt,
  };
}

/** Where an organization's objects go: `profileId` null means the platform's storage. */
export interface ResolvedStorage {
  profileId: string | null;
  storage: OrgStorage;
}

function aad(orgId: string, id: string) {
  return `storage_profiles:${orgId}:${id}`;
}

/**
 * Resolves storage for system code as well as requests (it takes the organization explicitly and
 * bypasses the request filter): `profileId` undefined picks the organization's default profile,
 * null the platform's storage, an id that profile (which must belong to the organization).
 */
export async function resolveOrgStorage(
  app: App,
  em: EntityManager,
  organizationId: string,
  profileId?: string | null,
): Promise<ResolvedStorage> {
  if (profileId === null) return { profileId: null, storage: orgScoped(app.storage.platform, organizationId) };
  const where = profileId === undefined ? { organization: organizationId, isDefault: true } : { organization: organizationId, id: profileId };
  const profile = await em.findOne(StorageProfile, where, { filters: false, populate: ['credentialsCiphertext'] });
  if (!profile) {
    if (profileId !== undefined) throw new NotFoundError('StorageProfile', profileId);
    return { profileId: null, storage: orgScoped(app.storage.platform, organizationId) };
  }
  const backend = app.storage.forProfile(profile.id, profile.updatedAt.toISOString(), () => {
    const credentials = JSON.parse(app.secretBox.decrypt(profile.credentialsCiphertext!, aad(organizationId, profile.id)));
    return backendFromProfile(profile.kind, profile.config, credentials, app.config.storage.s3PartSizeBytes);
  });
  return { profileId: profile.id, storage: orgScoped(backend, organizationId) };
}

const createInput = z.object({
  name: trimmedName(),
  kind: z.enum(STORAGE_PROFILE_KINDS),
  config: z.record(z.string(), z.unknown(), { message: 'must be a JSON object' }),
  credentials: z.record(z.string(), z.unknown(), { message: 'must be a JSON object' }),
  isDefault: z.boolean().nullish(),
});
const updateInput = z.object({
  name: trimmedName().nullish(),
  config: z.record(z.string(), z.unknown(), { message: 'must be a JSON object' }).nullish(),
  credentials: z.record(z.string(), z.unknown(), { message: 'must be a JSON object' }).nullish(),
  isDefault: z.boolean().nullish(),
});

export class StorageProfileService {
  constructor(private readonly ctx: RequestContext) {}

  /** The caller's organization's storage for new objects. */
  async storage(): Promise<ResolvedStorage> {
    const me = await this.ctx.requirePrincipal();
    return resolveOrgStorage(this.ctx.app, this.ctx.em, me.orgId);
  }

  /** The storage an existing object was written to (its recorded profile id; null for the platform's). */
  async storageAt(profileId: string | null): Promise<ResolvedStorage> {
    const me = await this.ctx.requirePrincipal();
    return resolveOrgStorage(this.ctx.app, this.ctx.em, me.orgId, profileId);
  }

  async list(): Promise<StorageProfileRecord[]> {
    await this.ctx.requirePrincipal();
    const rows = await this.ctx.em.find(StorageProfile, {}, { orderBy: { createdAt: 'asc', id: 'asc' } });
    return rows.map(storageProfileRecord);
  }

  async get(id: string): Promise<StorageProfileRecord | null> {
    await this.ctx.requirePrincipal();
    const p = await this.ctx.em.findOne(StorageProfile, { id });
    return p ? storageProfileRecord(p) : null;
  }

  async create(input: unknown): Promise<StorageProfileRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Creating storage profiles');
    const data = parseInput(createInput, input);
    const config = this.checkedConfig(data.kind, data.config);
    parseInput(storageCredentialSchemas[data.kind], data.credentials, 'input.credentials');
    const em = this.ctx.em;
    const profile = em.create(StorageProfile, {
      organization: em.getReference(Organization, me.orgId),
      name: data.name,
      kind: data.kind,
      config,
      credentialsCiphertext: '',
      credentialsHint: '',
      isDefault: false,
    });
    this.setCredentials(profile, me.orgId, data.credentials);
    await this.save(profile, data.isDefault ?? false);
    return storageProfileRecord(profile);
  }

  async update(id: string, input: unknown): Promise<StorageProfileRecord> {
    const me = await this.ctx.requireRole('ADMIN', 'Updating storage profiles');
    const data = parseInput(updateInput, input);
    const profile = await this.ctx.em.findOne(StorageProfile, { id }, { populate: ['credentialsCiphertext'] });
    if (!profile) throw new NotFoundError('StorageProfile', id);
    // Check everything before the entity changes, so a refused update writes nothing.
    const config = data.config != null ? this.checkedConfig(profile.kind, data.config) : null;
    const credentials =
      data.credentials != null
        ? (parseInput(storageCredentialSchemas[profile.kind], data.credentials, 'input.credentials') as Record<string, unknown>)
        : null;
    if (data.name != null) profile.name = data.name;
    if (config) profile.config = config;
    if (credentials) this.setCredentials(profile, me.orgId, credentials);
    await this.save(profile, data.isDefault ?? null);
    return storageProfileRecord(profile);
  }

  /**
   * Objects already written there stay where they are and become unreachable through the
   * platform; a caller that records profile ids on its rows should refuse while any refer to it.
   */
  async delete(id: string): Promise<StorageProfileRecord> {
    await this.ctx.requireRole('ADMIN', 'Deleting storage profiles');
    const profile = await this.ctx.em.findOne(StorageProfile, { id });
    if (!profile) throw new NotFoundError('StorageProfile', id);
    // Dataset archives and session files recorded there would become unreachable.
    const [versions] = await this.ctx.app.sql.query<{ n: string }>(
      'select count(*) as n from dataset_versions where storage_profile_id = ?',
      [id],
    );
    const used = Number(versions.n) + (await countInStorageProfile(this.ctx.app.sql, id));
    if (used > 0) {
      throw new ConflictError(`${used} dataset version(s) or training session(s) keep files in this storage profile`);
    }
    const record = storageProfileRecord(profile);
    this.ctx.em.remove(profile);
    await this.ctx.em.flush();
    return record;
  }

  /**
   * Writes, reads back and deletes a small probe object, reporting instead of throwing (like the
   * provider adapters' checkCredentials), so a wrong key or bucket shows before real data goes there.
   */
  async check(id: string): Promise<{ ok: boolean; reason: string | null }> {
    await this.ctx.requireRole('ADMIN', 'Checking storage profiles');
    const { storage } = await this.storageAt(id);
    const key = storage.key('.cvtrain-check', randomBytes(8).toString('hex'));
    const body = Buffer.from('cvtrain storage check\n');
    try {
      const put = await storage.put(key, body, { contentType: 'text/plain' });
      const read = await storage.sha256(key);
      await storage.delete(key);
      if (read !== put.sha256) return { ok: false, reason: 'the object read back differs from the one written' };
      return { ok: true, reason: null };
    } catch (err) {
      return { ok: false, reason: err instanceof Error ? err.message : String(err) };
    }
  }

  private checkedConfig(kind: StorageProfileKind, config: Record<string, unknown>): Record<string, unknown> {
    const parsed = parseInput(storageConfigSchemas[kind], config, 'input.config') as Record<string, unknown>;
    const problem = endpointProblem(parsed.endpoint as string | undefined, this.ctx.config.env === 'production');
    if (problem) throw new ValidationError('input.config.endpoint', problem);
    return parsed;
  }

  private setCredentials(profile: IStorageProfile, orgId: string, credentials: Record<string, unknown>) {
    const parsed = parseInput(storageCredentialSchemas[profile.kind], credentials, 'input.credentials') as Record<string, unknown>;
    profile.credentialsCiphertext = this.ctx.app.secretBox.encrypt(JSON.stringify(parsed), aad(orgId, profile.id));
    profile.credentialsHint = storageCredentialsHint(profile.kind, parsed);
  }

  private save(profile: IStorageProfile, isDefault: boolean | null) {
    return saveWithSingleDefault(this.ctx.em, StorageProfile, profile, {
      orgId: profile.organization.id,
      table: 'storage_profiles',
      isDefault,
      nameTaken: `A storage profile named "${profile.name}" already exists`,
    });
  }
}
