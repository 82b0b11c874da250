import { UniqueConstraintViolationException } from '@mikro-orm/core';
import DataLoader from 'dataloader';
import { z } from 'zod';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { keysetWhere, pageRequest, toConnection, type PageArgs } from '../../lib/pagination.js';
import { multilineText, parseInput, trimmedName } from '../../lib/validate.js';
import { Loader } from '../../lib/loader.js';
import { camelJsonRow, selectByIdsInOrg, type JsonRowSpec } from '../../db/rows.js';
import { Organization, User } from '../orgs/entity.js';
import { architectureProblem } from './architectures.js';
import { MODEL_FRAMEWORKS, MODEL_TASKS, Model, ModelVersion, type IModel, type IModelVersion } from './entity.js';

export interface ModelRecord {
  id: string;
  organizationId: string;
  name: string;
  description: string | null;
  task: IModel['task'];
  framework: IModel['framework'];
  architecture: string;
  archivedAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface ModelVersionRecord {
  id: string;
  modelId: string;
  version: number;
  sessionId: string | null;
  metrics: Record<string, number>;
  createdAt: Date;
}

/** models rows read back from JSON as byId's records (see camelJsonRow). */
export const MODEL_JSON_ROW: JsonRowSpec = { dates: ['createdAt', 'updatedAt', 'archivedAt'] };

export function modelRecord(m: IModel): ModelRecord {
  return {
    id: m.id,
    organizationId: m.organization.id,
    name: m.name,
    description: m.description ?? null,
    task: m.task,
    framework: m.framework,
    architecture: m.architecture,
    archivedAt: m.archivedAt ?? null,
    createdAt: m.createdAt,
    updatedAt: m.updatedAt,
  };
}

function versionRecord(v: IModelVersion): ModelVersionRecord {
  return {
    id: v.id,
    modelId: v.model.id,
    version: v.version,
    sessionId: v.sessionId ?? null,
    metrics: v.metrics,
    createdAt: v.createdAt,
  };
}

const description = multilineText(4000).nullish();
const createInput = z.object({
  name: trimmedName(),
  description,
  task: z.enum(MODEL_TASKS),
  framework: z.enum(MODEL_FRAMEWORKS),
  architecture: z.string().trim().min(1, 'must not be empty').max(120, 'must be at most 120 characters'),
});
const updateInput = z.object({
  name: trimmedName().nullish(),
  description,
  architecture: z.string().trim().min(1, 'must not be empty').max(120).nullish(),
});

export class ModelService {
  constructor(private readonly ctx: RequestContext) {}

  /** Batches every model lookup of one request into one query (org-scoped by the ORM filter). */
  readonly byId = new Loader<string, ModelRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const map = await selectByIdsInOrg<ModelRecord>(this.ctx.app.sql, 'models', me.orgId, ids);
    return ids.map((id) => map.get(id) ?? null);
  });

  /**
   * Primes byId with whole rows another query read as JSON (`json_agg(m)` over models, in the
   * caller's organization): the session list fetches the page's models in its own statement.
   */
  primeFromJson(rows: readonly Record<string, unknown>[] | null): void {
    for (const row of rows ?? []) {
      const record = camelJsonRow<ModelRecord>(row, MODEL_JSON_ROW);
      this.byId.prime(record.id, record);
    }
  }

  async get(id: string): Promise<ModelRecord | null> {
    if (!(await this.ctx.principal())) return null;
    return this.byId.load(id);
  }

  async list(args: PageArgs & { includeArchived?: boolean | null; task?: IModel['task'] | null }) {
    await this.ctx.requirePrincipal();
    const req = pageRequest(args);
    const filter: Record<string, unknown> = {};
    if (!args.includeArchived) filter.archivedAt = null;
    if (args.task) filter.task = args.task;
    const { where, orderBy } = keysetWhere(req);
    const rows = await this.ctx.em.find(Model, { ...filter, ...where }, { orderBy, limit: req.limit + 1 });
    return toConnection(req, rows, modelRecord, () => this.ctx.em.count(Model, filter));
  }

  async create(input: unknown): Promise<ModelRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Creating models');
    const data = parseInput(createInput, input);
    const problem = architectureProblem(data.framework, data.task, data.architecture);
    if (problem) throw new ValidationError('input.architecture', problem);
    const model = this.ctx.em.create(Model, {
      organization: this.ctx.em.getReference(Organization, me.orgId),
      createdBy: me.userId ? this.ctx.em.getReference(User, me.userId) : null,
      name: data.name,
      description: data.description ?? null,
      task: data.task,
      framework: data.framework,
      architecture: data.architecture,
    });
    await this.flushUnique(data.name);
    return modelRecord(model);
  }

  async update(id: string, input: unknown): Promise<ModelRecord> {
    await this.ctx.requireRole('MEMBER', 'Updating models');
    const data = parseInput(updateInput, input);
    const model = await this.ctx.em.findOne(Model, { id });
    if (!model) throw new NotFoundError('Model', id);
    if (data.architecture != null) {
      const problem = architectureProblem(model.framework, model.task, data.architecture);
      if (problem) throw new ValidationError('input.architecture', problem);
      model.architecture = data.architecture;
    }
    if (data.name != null) model.name = data.name;
    if (data.description !== undefined) model.description = data.description;
    await this.flushUnique(model.name);
    return modelRecord(model);
  }

  async setArchived(id: string, archived: boolean): Promise<ModelRecord> {
    await this.ctx.requireRole('MEMBER', archived ? 'Archiving models' : 'Restoring models');
    const model = await this.ctx.em.findOne(Model, { id });
    if (!model) throw new NotFoundError('Model', id);
    model.archivedAt = archived ? (model.archivedAt ?? new Date()) : null;
    await this.ctx.em.flush();
    return modelRecord(model);
  }

  async versions(modelId: string): Promise<ModelVersionRecord[]> {
    await this.ctx.requirePrincipal();
    const rows = await this.ctx.em.find(ModelVersion, { model: modelId }, { orderBy: { version: 'desc' } });
    return rows.map(versionRecord);
  }

  async versionById(id: string): Promise<ModelVersionRecord | null> {
    await this.ctx.requirePrincipal();
    const v = await this.ctx.em.findOne(ModelVersion, { id });
    return v ? versionRecord(v) : null;
  }

  private async flushUnique(name: string) {
    try {
      await this.ctx.em.flush();
    } catch (err) {
      if (err instanceof UniqueConstraintViolationException) {
        // The failed entity would be flushed again by a later mutation in the same request.
        this.ctx.em.clear();
        throw new ConflictError(`A model named "${name}" already exists in this organization`);
      }
      throw err;
    }
  }
}
