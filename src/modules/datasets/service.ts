import { UniqueConstraintViolationException } from '@mikro-orm/core';
import DataLoader from 'dataloader';
import { z } from 'zod';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { keysetWhere, pageRequest, toConnection, type PageArgs } from '../../lib/pagination.js';
import { multilineText, parseInput, trimmedName } from '../../lib/validate.js';
import { Loader } from '../../lib/loader.js';
import { camelJsonRow, camelRow, selectByIdsInOrg, type JsonRowSpec } from '../../db/rows.js';
import { randomUUID } from 'node:crypto';
import { StorageChangedError } from '../../storage/errors.js';
import type { ObjectInfo } from '../../storage/types.js';
import { resolveOrgStorage } from '../storage/service.js';
import { storageSource } from './archive-source.js';
import { archiveContainer, validateDatasetArchive } from './validation/index.js';
import { MODEL_TASKS } from '../models/entity.js';
import { Organization, User } from '../orgs/entity.js';
import { DATASET_FORMATS, Dataset, DatasetVersion, type IDataset, type IDatasetVersion } from './entity.js';

/** dataset_versions rows read back from JSON as versionById's records (see camelJsonRow). */
export const DATASET_VERSION_JSON_ROW: JsonRowSpec = {
  dates: ['createdAt', 'updatedAt', 'finalizedAt'],
  bigints: ['sizeBytes'],
};

export interface DatasetRecord {
  id: string;
  organizationId: string;
  name: string;
  description: string | null;
  task: IDataset['task'];
  createdAt: Date;
  updatedAt: Date;
}

export interface DatasetVersionRecord {
  id: string;
  organizationId: string;
  datasetId: string;
  version: number;
  format: IDatasetVersion['format'];
  filename: string;
  archiveKey: string;
  sha256: string | null;
  sizeBytes: number | null;
  classNames: string[] | null;
  splits: Record<string, { images: number; boxes?: number }> | null;
  status: IDatasetVersion['status'];
  problems: { path: string; line: number | null; message: string }[] | null;
  finalizedAt: Date | null;
  createdAt: Date;
}

export function datasetRecord(d: IDataset): DatasetRecord {
  return {
    id: d.id,
    organizationId: d.organization.id,
    name: d.name,
    description: d.description ?? null,
    task: d.task,
    createdAt: d.createdAt,
    updatedAt: d.updatedAt,
  };
}

export function datasetVersionRecord(v: IDatasetVersion): DatasetVersionRecord {
  return {
    id: v.id,
    organizationId: v.organization.id,
    datasetId: v.dataset.id,
    version: v.version,
    format: v.format,
    filename: v.filename,
    archiveKey: v.archiveKey,
    sha256: v.sha256 ?? null,
    sizeBytes: v.sizeBytes ?? null,
    classNames: v.classNames ?? null,
    splits: v.splits ?? null,
    status: v.status,
    problems: v.problems ?? null,
    finalizedAt: v.finalizedAt ?? null,
    createdAt: v.createdAt,
  };
}

const createVersionInput = z.object({
  datasetId: z.string(),
  format: z.enum(DATASET_FORMATS),
  filename: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(200, 'must be at most 200 characters')
    .regex(/^[A-Za-z0-9][A-Za-z0-9 ._()+-]*$/, 'letters, digits, spaces and . _ ( ) + - only')
    .refine((n) => archiveContainer(n) !== null, 'must end in .zip, .tar.gz, .tgz or .tar'),
});

// A finalize that died mid-way (process restart) leaves VALIDATING; after this long it may run again.
const STALE_VALIDATION_MS = 30 * 60 * 1000;

export interface DatasetVersionUploadRecord {
  version: DatasetVersionRecord;
  uploadUrl: string;
  uploadHeaders: Record<string, string>;
  expiresAt: Date;
}

const createInput = z.object({
  name: trimmedName(),
  description: multilineText(4000).nullish(),
  task: z.enum(MODEL_TASKS),
});

export class DatasetService {
  constructor(private readonly ctx: RequestContext) {}

  readonly byId = new DataLoader<string, DatasetRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const map = await selectByIdsInOrg<DatasetRecord>(this.ctx.app.sql, 'datasets', me.orgId, ids);
    return ids.map((id) => map.get(id) ?? null);
  });

  readonly versionById = new Loader<string, DatasetVersionRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const map = await selectByIdsInOrg<DatasetVersionRecord>(
      this.ctx.app.sql,
      'dataset_versions',
      me.orgId,
      ids,
      DATASET_VERSION_JSON_ROW.bigints,
    );
    return ids.map((id) => map.get(id) ?? null);
  });

  /**
   * Primes versionById with whole rows another query read as JSON (`json_agg(v)` over
   * dataset_versions, in the caller's organization): the session list fetches them itself.
   */
  primeVersionsFromJson(rows: readonly Record<string, unknown>[] | null): void {
    for (const row of rows ?? []) {
      const record = camelJsonRow<DatasetVersionRecord>(row, DATASET_VERSION_JSON_ROW);
      this.versionById.prime(record.id, record);
    }
  }

  async get(id: string): Promise<DatasetRecord | null> {
    if (!(await this.ctx.principal())) return null;
    return this.byId.load(id);
  }

  async getVersion(id: string): Promise<DatasetVersionRecord | null> {
    if (!(await this.ctx.principal())) return null;
    return this.versionById.load(id);
  }

  async list(args: PageArgs & { task?: IDataset['task'] | null }) {
    await this.ctx.requirePrincipal();
    const req = pageRequest(args);
    const filter: Record<string, unknown> = args.task ? { task: args.task } : {};
    const { where, orderBy } = keysetWhere(req);
    const rows = await this.ctx.em.find(Dataset, { ...filter, ...where }, { orderBy, limit: req.limit + 1 });
    return toConnection(req, rows, datasetRecord, () => this.ctx.em.count(Dataset, filter));
  }

  async versions(datasetId: string): Promise<DatasetVersionRecord[]> {
    await this.ctx.requirePrincipal();
    const rows = await this.ctx.em.find(DatasetVersion, { dataset: datasetId }, { orderBy: { version: 'desc' } });
    return rows.map(datasetVersionRecord);
  }

  /**
   * A new version in UPLOADING, and a presigned PUT for its archive. Earlier versions are never
   * touched: every version has its own object key.
   */
  async createVersion(input: unknown): Promise<DatasetVersionUploadRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Uploading datasets');
    const data = parseInput(createVersionInput, input);
    const em = this.ctx.em;
    const dataset = await em.findOne(Dataset, { id: data.datasetId });
    if (!dataset) throw new NotFoundError('Dataset', data.datasetId);
    if ((dataset.task === 'CLASSIFICATION') !== (data.format === 'IMAGE_FOLDER')) {
      throw new ValidationError(
        'input.format',
        dataset.task === 'CLASSIFICATION'
          ? 'classification datasets are IMAGE_FOLDER (<split>/<class>/<image>)'
          : `${data.format} is for classification; object detection datasets are YOLO or COCO`,
      );
    }
    const { storage, profileId } = await resolveOrgStorage(this.ctx.app, em, me.orgId);
    const id = randomUUID();
    const key = storage.key('datasets', dataset.id, 'versions', id, data.filename);
    const version = await em.transactional(async (tx) => {
      // Version numbers per dataset, serialised on the dataset row.
      await tx.getConnection().execute('select id from datasets where id = ? for update', [dataset.id], 'all', tx.getTransactionContext());
      const [{ n }] = await tx
        .getConnection()
        .execute<{ n: number }[]>(
          'select coalesce(max(version), 0) + 1 as n from dataset_versions where dataset_id = ?',
          [dataset.id],
          'all',
          tx.getTransactionContext(),
        );
      const v = tx.create(DatasetVersion, {
        id,
        organization: tx.getReference(Organization, me.orgId),
        dataset: tx.getReference(Dataset, dataset.id),
        version: Number(n),
        format: data.format,
        filename: data.filename,
        archiveKey: key,
        storageProfileId: profileId,
        status: 'UPLOADING',
      });
      await tx.flush();
      return v;
    });
    // Write-once: after finalize nobody can swap the archive under a READY version.
    const put = await storage.presignPut(key, {
      expiresInSeconds: this.ctx.config.storage.presignTtlSeconds,
      onlyIfAbsent: true,
    });
    return { version: datasetVersionRecord(version), uploadUrl: put.url, uploadHeaders: put.headers, expiresAt: put.expiresAt };
  }

  /**
   * Validates the uploaded archive by streaming it from storage (never whole in memory) and
   * records READY with its summary, or INVALID with every problem found.
   */
  async finalizeVersion(id: string): Promise<DatasetVersionRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Finalizing datasets');
    const em = this.ctx.em;
    const version = await em.findOne(DatasetVersion, { id });
    if (!version) throw new NotFoundError('DatasetVersion', id);
    if (version.status === 'READY' || version.status === 'INVALID') {
      throw new ConflictError(`This version is already ${version.status}; upload a new version to change the data`);
    }
    const { storage } = await resolveOrgStorage(this.ctx.app, em, me.orgId, version.storageProfileId ?? null);
    // Local storage knows about uploads it is receiving; S3 and Azure refuse a late conditional PUT instead.
    if (await storage.uploadInProgress?.(version.archiveKey)) {
      throw new ConflictError('An upload to this version is still in progress; finalize once it has finished');
    }
    const info = await storage.head(version.archiveKey);
    if (!info) throw new ValidationError('id', 'nothing has been uploaded for this version yet (PUT the archive to its uploadUrl)');
    // Claim the version: two concurrent finalizes must not both validate and write.
    const claimed = await this.ctx.app.sql.query<{ id: string }>(
      `update dataset_versions set status = 'VALIDATING', updated_at = now()
       where id = ? and organization_id = ? and (status = 'UPLOADING' or (status = 'VALIDATING' and updated_at < now() - (? * interval '1 millisecond')))
       returning id`,
      [id, me.orgId, STALE_VALIDATION_MS],
    );
    if (!claimed.length) throw new ConflictError('This version is being validated by another request');
    try {
      const report = await validateDatasetArchive(storageSource(storage, version.archiveKey, info.size, info.etag), {
        format: version.format,
        archiveName: version.filename,
        tempDir: this.ctx.config.dataDir,
        limits: this.ctx.config.datasetLimits,
      });
      // The sha256 recorded is of the bytes validated; they are the stored object only if it is
      // still the one head() saw (the pinned reads cover the validation, this the time since).
      if (report.sizeBytes !== info.size || !sameObject(info, await storage.head(version.archiveKey))) {
        throw new StorageChangedError(version.archiveKey, info.etag ?? '');
      }
      const [row] = await this.ctx.app.sql.query<Record<string, unknown>>(
        `update dataset_versions set status = ?, sha256 = ?, size_bytes = ?, class_names = ?, splits = ?, problems = ?,
           finalized_at = now(), updated_at = now() where id = ? returning *`,
        [
          report.status,
          report.sha256,
          report.sizeBytes,
          JSON.stringify(report.classNames),
          JSON.stringify(report.splits),
          JSON.stringify(report.problems),
          id,
        ],
      );
      this.versionById.clear(id);
      return camelRow<DatasetVersionRecord>(row, ['sizeBytes']);
    } catch (err) {
      // Reading failed (storage down, or the object changed): back to UPLOADING so the user can finalize again.
      await this.ctx.app.sql.query(`update dataset_versions set status = 'UPLOADING' where id = ? and status = 'VALIDATING'`, [id]);
      if (err instanceof StorageChangedError || (err as { cause?: unknown } | null)?.cause instanceof StorageChangedError) {
        throw new ConflictError(
          'The archive changed while it was being validated, so nothing was recorded; finalize again to validate what is stored now',
        );
      }
      throw err;
    }
  }

  async create(input: unknown): Promise<DatasetRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Creating datasets');
    const data = parseInput(createInput, input);
    const dataset = this.ctx.em.create(Dataset, {
      organization: this.ctx.em.getReference(Organization, me.orgId),
      createdBy: me.userId ? this.ctx.em.getReference(User, me.userId) : null,
      name: data.name,
      description: data.description ?? null,
      task: data.task,
    });
    try {
      await this.ctx.em.flush();
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        this.ctx.em.clear();
        throw new ConflictError(`A dataset named "${data.name}" already exists in this organization`);
      }
      throw err;
    }
    return datasetRecord(dataset);
  }
}

/** The same stored object: a replacement changes the etag (local: the sha256; S3, Azure: per write) or at least the time. */
function sameObject(a: ObjectInfo, b: ObjectInfo | null): boolean {
  return b !== null && a.etag === b.etag && a.size === b.size && a.lastModified.getTime() === b.lastModified.getTime();
}
