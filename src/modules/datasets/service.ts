import { UniqueConstraintViolationException } from '@mikro-orm/core';
import DataLoader from 'dataloader';
import { z } from 'zod';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError } from '../../lib/errors.js';
import { keysetWhere, pageRequest, toConnection, type PageArgs } from '../../lib/pagination.js';
import { parseInput, trimmedName } from '../../lib/validate.js';
import { selectByIdsInOrg } from '../../db/rows.js';
import { MODEL_TASKS } from '../models/entity.js';
import { Organization, User } from '../orgs/entity.js';
import { Dataset, DatasetVersion, type IDataset, type IDatasetVersion } from './entity.js';

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

const createInput = z.object({
  name: trimmedName(),
  description: z.string().trim().max(4000, 'must be at most 4000 characters').nullish(),
  task: z.enum(MODEL_TASKS),
});

export class DatasetService {
  constructor(private readonly ctx: RequestContext) {}

  readonly byId = new DataLoader<string, DatasetRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const map = await selectByIdsInOrg<DatasetRecord>(this.ctx.app.sql, 'datasets', me.orgId, ids);
    return ids.map((id) => map.get(id) ?? null);
  });

  readonly versionById = new DataLoader<string, DatasetVersionRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const map = await selectByIdsInOrg<DatasetVersionRecord>(this.ctx.app.sql, 'dataset_versions', me.orgId, ids, [
      'sizeBytes',
    ]);
    return ids.map((id) => map.get(id) ?? null);
  });

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
