import DataLoader from 'dataloader';
import { z } from 'zod';
import type { RequestContext } from '../../graphql/context.js';
import { ConflictError, NotFoundError, ValidationError } from '../../lib/errors.js';
import { encodeCursor, pageRequest, toConnection, type PageArgs } from '../../lib/pagination.js';
import { parseInput } from '../../lib/validate.js';
import { ComputeProfile } from '../compute/entity.js';
import { DatasetVersion } from '../datasets/entity.js';
import { Model } from '../models/entity.js';
import { Organization, User } from '../orgs/entity.js';
import { normalizeTrainingConfig, type StoredTrainingConfig } from './config.js';
import {
  Artifact,
  TrainingSession,
  type ArtifactKind,
  type ITrainingSession,
  type SessionAttempt,
  type SessionStatus,
} from './entity.js';
import { applyTransition } from './lifecycle.js';
import type { Provider } from '../compute/entity.js';

export interface TrainingSessionRecord {
  id: string;
  organizationId: string;
  modelId: string;
  datasetVersionId: string;
  computeProfileId: string | null;
  createdById: string | null;
  status: SessionStatus;
  config: StoredTrainingConfig;
  provider: Provider | null;
  externalJobId: string | null;
  attempts: SessionAttempt[];
  currentEpoch: number;
  totalEpochs: number;
  errorMessage: string | null;
  errorExitCode: number | null;
  errorStderrTail: string | null;
  estimatedCostUsd: number | null;
  costUsd: number | null;
  createdAt: Date;
  updatedAt: Date;
  queuedAt: Date | null;
  startedAt: Date | null;
  finishedAt: Date | null;
}

export interface EpochMetricRecord {
  id: string;
  sessionId: string;
  epoch: number;
  metrics: Record<string, unknown>;
  createdAt: Date;
}

export interface ArtifactRecord {
  id: string;
  sessionId: string | null;
  kind: ArtifactKind;
  storageKey: string;
  sizeBytes: number;
  sha256: string;
  createdAt: Date;
}

export function sessionRecord(s: ITrainingSession): TrainingSessionRecord {
  return {
    id: s.id,
    organizationId: s.organization.id,
    modelId: s.model.id,
    datasetVersionId: s.datasetVersion.id,
    computeProfileId: s.computeProfile?.id ?? null,
    createdById: s.createdBy?.id ?? null,
    status: s.status,
    config: s.config as unknown as StoredTrainingConfig,
    provider: s.provider ?? null,
    externalJobId: s.externalJobId ?? null,
    attempts: s.attempts,
    currentEpoch: s.currentEpoch,
    totalEpochs: s.totalEpochs,
    errorMessage: s.errorMessage ?? null,
    errorExitCode: s.errorExitCode ?? null,
    errorStderrTail: s.errorStderrTail ?? null,
    estimatedCostUsd: s.estimatedCostUsd == null ? null : Number(s.estimatedCostUsd),
    costUsd: s.costUsd == null ? null : Number(s.costUsd),
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    queuedAt: s.queuedAt ?? null,
    startedAt: s.startedAt ?? null,
    finishedAt: s.finishedAt ?? null,
  };
}

// Raw rows of training_sessions, for the hot list path below.
interface SessionRow {
  id: string;
  organization_id: string;
  model_id: string;
  dataset_version_id: string;
  compute_profile_id: string | null;
  created_by_id: string | null;
  status: SessionStatus;
  config: StoredTrainingConfig;
  provider: Provider | null;
  external_job_id: string | null;
  attempts: SessionAttempt[];
  current_epoch: number;
  total_epochs: number;
  error_message: string | null;
  error_exit_code: number | null;
  error_stderr_tail: string | null;
  estimated_cost_usd: number | null;
  cost_usd: number | null;
  created_at: Date;
  updated_at: Date;
  queued_at: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
}

function sessionFromRow(r: SessionRow): TrainingSessionRecord {
  return {
    id: r.id,
    organizationId: r.organization_id,
    modelId: r.model_id,
    datasetVersionId: r.dataset_version_id,
    computeProfileId: r.compute_profile_id,
    createdById: r.created_by_id,
    status: r.status,
    config: r.config,
    provider: r.provider,
    externalJobId: r.external_job_id,
    attempts: r.attempts,
    currentEpoch: r.current_epoch,
    totalEpochs: r.total_epochs,
    errorMessage: r.error_message,
    errorExitCode: r.error_exit_code,
    errorStderrTail: r.error_stderr_tail,
    estimatedCostUsd: r.estimated_cost_usd,
    costUsd: r.cost_usd,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
    queuedAt: r.queued_at && new Date(r.queued_at),
    startedAt: r.started_at && new Date(r.started_at),
    finishedAt: r.finished_at && new Date(r.finished_at),
  };
}

const SESSION_COLUMNS =
  'id, organization_id, model_id, dataset_version_id, compute_profile_id, created_by_id, status, config, provider, ' +
  'external_job_id, attempts, current_epoch, total_epochs, error_message, error_exit_code, error_stderr_tail, ' +
  'estimated_cost_usd, cost_usd, created_at, updated_at, queued_at, started_at, finished_at';

const trainInput = z.object({
  datasetVersionId: z.string(),
  computeProfileId: z.string().nullish(),
  config: z.unknown(),
});

export interface SessionFilter {
  status?: readonly SessionStatus[] | null;
  modelId?: string | null;
}

export class TrainingService {
  constructor(private readonly ctx: RequestContext) {}

  private get sql() {
    return this.ctx.app.sql;
  }

  /*
   * The session list, its latest-epoch loader and byId are the API's hottest reads (dashboards poll
   * them). They use raw SQL rather than the ORM's unit of work, which measured several times
   * slower per row here; each query names organization_id itself because the ORM filter does not
   * apply to raw SQL.
   */
  readonly byId = new DataLoader<string, TrainingSessionRecord | null>(async (ids) => {
    const me = await this.ctx.requirePrincipal();
    const rows = await this.sql.query<SessionRow>(
      `select ${SESSION_COLUMNS} from training_sessions where organization_id = ? and id = any(?::uuid[])`,
      [me.orgId, ids],
    );
    const map = new Map(rows.map((r) => [r.id, sessionFromRow(r)]));
    return ids.map((id) => map.get(id) ?? null);
  });

  readonly latestEpoch = new DataLoader<string, EpochMetricRecord | null>(async (sessionIds) => {
    const me = await this.ctx.requirePrincipal();
    const rows = await this.sql.query<
      { id: string; session_id: string; epoch: number; metrics: Record<string, unknown>; created_at: Date }
    >(
      `select distinct on (session_id) id, session_id, epoch, metrics, created_at from epoch_metrics
       where organization_id = ? and session_id = any(?::uuid[])
       order by session_id, epoch desc`,
      [me.orgId, sessionIds],
    );
    const map = new Map(
      rows.map((r) => [
        r.session_id,
        { id: r.id, sessionId: r.session_id, epoch: r.epoch, metrics: r.metrics, createdAt: new Date(r.created_at) },
      ]),
    );
    return sessionIds.map((id) => map.get(id) ?? null);
  });

  async get(id: string): Promise<TrainingSessionRecord | null> {
    if (!(await this.ctx.principal())) return null;
    return this.byId.load(id);
  }

  async list(args: PageArgs & { filter?: SessionFilter | null }) {
    const me = await this.ctx.requirePrincipal();
    const req = pageRequest(args);
    const where: string[] = ['organization_id = ?'];
    const params: unknown[] = [me.orgId];
    const status = args.filter?.status;
    if (status?.length) {
      where.push(`status in (${status.map(() => '?').join(',')})`);
      params.push(...status);
    }
    if (args.filter?.modelId) {
      where.push('model_id = ?');
      params.push(args.filter.modelId);
    }
    const countWhere = where.join(' and ');
    const countParams = [...params];
    if (req.cursor) {
      where.push(`(created_at, id) ${req.backward ? '>' : '<'} (?, ?)`);
      params.push(req.cursor.createdAt, req.cursor.id);
    }
    const dir = req.backward ? 'asc' : 'desc';
    const rows = await this.sql.query<SessionRow>(
      `select ${SESSION_COLUMNS} from training_sessions where ${where.join(' and ')}
       order by created_at ${dir}, id ${dir} limit ?`,
      [...params, req.limit + 1],
    );
    const records = rows.map(sessionFromRow);
    // Prime byId so a node(id:) in the same request does not read the row again.
    for (const r of records) this.byId.prime(r.id, r);
    return toConnection(req, records, (r) => r, async () => {
      const [row] = await this.sql.query<{ n: string }>(
        `select count(*) as n from training_sessions where ${countWhere}`,
        countParams,
      );
      return Number(row.n);
    });
  }

  async epochs(sessionId: string, args: { first?: number | null; after?: string | null }) {
    const me = await this.ctx.requirePrincipal();
    const limit = args.first ?? 100;
    if (!Number.isInteger(limit) || limit < 0 || limit > 1000) {
      throw new ValidationError('first', 'must be between 0 and 1000');
    }
    let afterEpoch = 0;
    if (args.after) {
      afterEpoch = Number(Buffer.from(args.after, 'base64url').toString('utf8').replace(/^epoch:/, ''));
      if (!Number.isInteger(afterEpoch)) throw new ValidationError('after', 'is not a cursor from this connection');
    }
    const rows = await this.sql.query<
      { id: string; session_id: string; epoch: number; metrics: Record<string, unknown>; created_at: Date }
    >(
      `select id, session_id, epoch, metrics, created_at from epoch_metrics
       where organization_id = ? and session_id = ? and epoch > ? order by epoch asc limit ?`,
      [me.orgId, sessionId, afterEpoch, limit + 1],
    );
    const page = rows.slice(0, limit).map((r) => ({
      id: r.id,
      sessionId: r.session_id,
      epoch: r.epoch,
      metrics: r.metrics,
      createdAt: new Date(r.created_at),
    }));
    const cursor = (epoch: number) => Buffer.from(`epoch:${epoch}`).toString('base64url');
    return {
      edges: page.map((node) => ({ cursor: cursor(node.epoch), node })),
      pageInfo: {
        hasNextPage: rows.length > limit,
        hasPreviousPage: afterEpoch > 0,
        startCursor: page.length ? cursor(page[0].epoch) : null,
        endCursor: page.length ? cursor(page[page.length - 1].epoch) : null,
      },
      totalCount: async () => {
        const [row] = await this.sql.query<{ n: string }>(
          'select count(*) as n from epoch_metrics where organization_id = ? and session_id = ?',
          [me.orgId, sessionId],
        );
        return Number(row.n);
      },
    };
  }

  async artifacts(sessionId: string): Promise<ArtifactRecord[]> {
    await this.ctx.requirePrincipal();
    const rows = await this.ctx.em.find(Artifact, { session: sessionId }, { orderBy: { createdAt: 'asc' } });
    return rows.map((a) => ({
      id: a.id,
      sessionId: a.session?.id ?? null,
      kind: a.kind,
      storageKey: a.storageKey,
      sizeBytes: Number(a.sizeBytes),
      sha256: a.sha256,
      createdAt: a.createdAt,
    }));
  }

  /** trainModel: validates everything, then records a PENDING session. Running it is the orchestrator's. */
  async create(modelId: string, input: unknown): Promise<TrainingSessionRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Starting training');
    const data = parseInput(trainInput, input);
    const em = this.ctx.em;
    const model = await this.ctx.services.models.get(modelId);
    if (!model) throw new NotFoundError('Model', modelId);
    if (model.archivedAt) throw new ConflictError(`Model "${model.name}" is archived; unarchive it to train`);
    const version = await em.findOne(DatasetVersion, { id: data.datasetVersionId }, { populate: ['dataset'] });
    if (!version) throw new NotFoundError('DatasetVersion', data.datasetVersionId);
    if (version.status !== 'READY') {
      throw new ValidationError(
        'input.datasetVersionId',
        `dataset version is ${version.status}; only READY versions can be trained on`,
      );
    }
    if (version.dataset.task !== model.task) {
      throw new ValidationError(
        'input.datasetVersionId',
        `the dataset is for ${version.dataset.task} but the model is ${model.task}`,
      );
    }
    if (model.task === 'CLASSIFICATION' !== (version.format === 'IMAGE_FOLDER')) {
      throw new ValidationError(
        'input.datasetVersionId',
        model.task === 'CLASSIFICATION'
          ? 'classification trains on IMAGE_FOLDER datasets'
          : `object detection needs a YOLO or COCO dataset, not ${version.format}`,
      );
    }
    let profileId: string | null = data.computeProfileId ?? null;
    if (profileId) {
      if (!(await this.ctx.services.compute.get(profileId))) throw new NotFoundError('ComputeProfile', profileId);
    } else {
      profileId = (await this.ctx.services.compute.defaultProfile())?.id ?? null;
    }
    const config = normalizeTrainingConfig(data.config, model);
    const session = em.create(TrainingSession, {
      organization: em.getReference(Organization, me.orgId),
      createdBy: me.userId ? em.getReference(User, me.userId) : null,
      model: em.getReference(Model, model.id),
      datasetVersion: version,
      computeProfile: profileId ? em.getReference(ComputeProfile, profileId) : null,
      status: 'PENDING',
      config: config as unknown as Record<string, unknown>,
      attempts: [],
      totalEpochs: config.epochs,
    });
    await em.flush();
    return sessionRecord(session);
  }

  async cancel(id: string): Promise<TrainingSessionRecord> {
    await this.ctx.requireRole('MEMBER', 'Cancelling training');
    const em = this.ctx.em;
    const session = await em.findOne(TrainingSession, { id });
    if (!session) throw new NotFoundError('TrainingSession', id);
    if (session.status !== 'PENDING') {
      // Queued and running sessions are stopped through their provider, which needs the
      // orchestrator; until then only sessions that have not left PENDING can be cancelled here.
      throw new ConflictError(`A ${session.status} session cannot be cancelled yet`);
    }
    applyTransition(session, 'CANCELLED');
    await em.flush();
    this.byId.clear(id);
    return sessionRecord(session);
  }
}

