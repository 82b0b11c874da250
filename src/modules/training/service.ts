import { randomUUID } from 'node:crypto';
import DataLoader from 'dataloader';
import type { GraphQLResolveInfo } from 'graphql';
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
  type ITrainingSession,
  type SessionAttempt,
  type SessionStatus,
} from './entity.js';
import { requeue, TERMINAL_STATUSES, transition } from './lifecycle.js';
import { datasetForJob } from '../../orchestrator/index.js';
import { resolveOrgStorage } from '../storage/service.js';
import {
  SESSION_COLUMNS,
  sessionFromRow,
  jsonMillis,
  sessionJsonColumns,
  sessionsFromJson,
  sessionRecord,
  type ArtifactRecord,
  type EpochMetricRecord,
  type SessionRow,
  type TrainingSessionRecord,
} from './records.js';
export type { ArtifactRecord, EpochMetricRecord, TrainingSessionRecord } from './records.js';
import type { Provider } from '../compute/entity.js';
import { Loader } from '../../lib/loader.js';
import { sessionSelection, type SessionSelection } from './selection.js';

/**
 * The page statement for a selection: the page's rows as a CTE, then one JSON value per part.
 * Parameters: the where clause's, the limit, then the organization once per relation selected.
 * Kept per selection and where clause: the text is the prepared statement's key (src/db/sql.ts).
 */
const statements = new WeakMap<SessionSelection, Map<string, string>>();
function pageStatement(sel: SessionSelection, where: readonly string[], dir: 'asc' | 'desc'): string {
  let bySel = statements.get(sel);
  if (!bySel) statements.set(sel, (bySel = new Map()));
  const key = `${dir} ${where.join(' and ')}`;
  let text = bySel.get(key);
  if (text !== undefined) return text;
  let relations = '';
  if (sel.model) {
    relations += `, (select json_agg(m) from models m where m.organization_id = ? and m.id in (select model_id from p)) as m`;
  }
  if (sel.datasetVersion) {
    relations +=
      `, (select json_agg(v) from dataset_versions v` +
      ` where v.organization_id = ? and v.id in (select dataset_version_id from p)) as v`;
  }
  if (sel.latestEpoch) {
    // One probe per session of the (session_id, epoch) index: the latestEpoch loader's answer, per row.
    relations +=
      `, (select json_agg(json_build_array(p.id, e.id, e.epoch, e.metrics, floor(extract(epoch from e.created_at) * 1000)))` +
      ` from p cross join lateral (select id, epoch, metrics, created_at from epoch_metrics` +
      ` where organization_id = ? and session_id = p.id order by epoch desc limit 1) e) as e`;
  }
  text =
    `with p as (select ${sel.columns.join(', ')} from training_sessions where ${where.join(' and ')}` +
    ` order by created_at ${dir}, id ${dir} limit ?)` +
    ` select (select json_agg(json_build_array(${sessionJsonColumns(sel.columns)}) order by created_at ${dir}, id ${dir})` +
    ` from p) as s${relations}`;
  if (bySel.size < 100) bySel.set(key, text);
  return text;
}

// One converter per selection (selections are kept per query document, see selection.ts).
const converters = new WeakMap<SessionSelection, (values: unknown[]) => TrainingSessionRecord>();
function recordsFor(sel: SessionSelection) {
  let fn = converters.get(sel);
  if (!fn) converters.set(sel, (fn = sessionsFromJson(sel.columns)));
  return fn;
}

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

  readonly latestEpoch = new Loader<string, EpochMetricRecord | null>(async (sessionIds) => {
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

  /**
   * A page of sessions in one statement. Only the columns the query's `edges.node` selection needs
   * are read (selection.ts), and when it asks for model, datasetVersion or latestEpoch those rows
   * come in the same statement and prime this request's loaders, instead of three more round trips.
   * PostgreSQL returns it all as one JSON value: one row to decode instead of a row per session
   * plus a row per relation, and models and dataset versions come once each, not once per session.
   */
  async list(args: PageArgs & { filter?: SessionFilter | null }, info?: GraphQLResolveInfo) {
    const me = await this.ctx.requirePrincipal();
    const req = pageRequest(args);
    const sel = sessionSelection(info);
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
    params.push(req.limit + 1);
    // The relations' subqueries name the organization themselves, like the loaders they stand in for.
    for (const wanted of [sel.model, sel.datasetVersion, sel.latestEpoch]) if (wanted) params.push(me.orgId);
    const text = pageStatement(sel, where, req.backward ? 'asc' : 'desc');
    const [row] = await this.sql.query<{
      s: unknown[][] | null;
      m?: Record<string, unknown>[] | null;
      v?: Record<string, unknown>[] | null;
      e?: [string, string, number, Record<string, unknown>, number][] | null;
    }>(text, params);
    const toRecord = recordsFor(sel);
    const records = (row.s ?? []).map(toRecord);
    // Whole rows only: a partial record in byId would be wrong for a later node(id:) in this request.
    if (sel.full) for (const r of records) this.byId.prime(r.id, r);
    if (sel.model) this.ctx.services.models.primeFromJson(row.m ?? null);
    if (sel.datasetVersion) this.ctx.services.datasets.primeVersionsFromJson(row.v ?? null);
    if (sel.latestEpoch) {
      const latest = new Map<string, EpochMetricRecord>();
      for (const [sessionId, id, epoch, metrics, createdAt] of row.e ?? []) {
        latest.set(sessionId, { id, sessionId, epoch, metrics, createdAt: jsonMillis(createdAt)! });
      }
      for (const r of records) this.latestEpoch.prime(r.id, latest.get(r.id) ?? null);
    }
    return toConnection(req, records, (r) => r, async () => {
      const [count] = await this.sql.query<{ n: string }>(
        `select count(*) as n from training_sessions where ${countWhere}`,
        countParams,
      );
      return Number(count.n);
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

  /** Every stored epoch after `afterEpoch`, in order (the replay of the trainingEpochs subscription). */
  async epochsAfter(sessionId: string, afterEpoch: number): Promise<EpochMetricRecord[]> {
    const me = await this.ctx.requirePrincipal();
    const rows = await this.sql.query<{ id: string; session_id: string; epoch: number; metrics: Record<string, unknown>; created_at: Date }>(
      `select id, session_id, epoch, metrics, created_at from epoch_metrics
       where organization_id = ? and session_id = ? and epoch > ? order by epoch`,
      [me.orgId, sessionId, afterEpoch],
    );
    return rows.map((r) => ({ id: r.id, sessionId: r.session_id, epoch: r.epoch, metrics: r.metrics, createdAt: new Date(r.created_at) }));
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

  /** A fresh presigned GET for an artifact, valid for CVTRAIN_PRESIGN_TTL_S (only members of its organization reach here). */
  async artifactUrl(artifact: ArtifactRecord): Promise<{ url: string; expiresAt: Date }> {
    const me = await this.ctx.requirePrincipal();
    const session = artifact.sessionId ? await this.byId.load(artifact.sessionId) : null;
    const { storage } = await resolveOrgStorage(this.ctx.app, this.ctx.em, me.orgId, session?.storageProfileId ?? null);
    const signed = await storage.presignGet(artifact.storageKey, {
      expiresInSeconds: this.ctx.config.storage.presignTtlSeconds,
      downloadName: artifact.storageKey.split('/').pop(),
    });
    return { url: signed.url, expiresAt: signed.expiresAt };
  }

  /**
   * trainModel: validates everything, then asks the orchestrator where the session runs; it
   * records the session QUEUED on the chosen compute (or FAILED when every submission failed),
   * or refuses with a typed error and stores nothing.
   */
  async create(modelId: string, input: unknown): Promise<TrainingSessionRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Starting training');
    const data = parseInput(trainInput, input);
    const model = await this.ctx.services.models.get(modelId);
    if (!model) throw new NotFoundError('Model', modelId);
    if (model.archivedAt) throw new ConflictError(`Model "${model.name}" is archived; unarchive it to train`);
    // trainModel is the submission hot path (target: hundreds per second), so its reads and the
    // insert are plain SQL; each names organization_id because the ORM filter does not apply.
    const [version] = await this.sql.query<{
      id: string;
      status: string;
      format: string;
      task: string;
      sha256: string | null;
      size_bytes: string | null;
      storage_profile_id: string | null;
    }>(
      // The organization's default storage rides along: checkpoints go there.
      `select v.id, v.status, v.format, v.sha256, v.size_bytes, d.task,
         (select id from storage_profiles where organization_id = v.organization_id and is_default) as storage_profile_id
       from dataset_versions v join datasets d on d.id = v.dataset_id
       where v.organization_id = ? and v.id = ?`,
      [me.orgId, data.datasetVersionId],
    );
    if (!version) throw new NotFoundError('DatasetVersion', data.datasetVersionId);
    if (version.status !== 'READY') {
      throw new ValidationError(
        'input.datasetVersionId',
        `dataset version is ${version.status}; only READY versions can be trained on`,
      );
    }
    if (version.task !== model.task) {
      throw new ValidationError('input.datasetVersionId', `the dataset is for ${version.task} but the model is ${model.task}`);
    }
    if (model.task === 'CLASSIFICATION' !== (version.format === 'IMAGE_FOLDER')) {
      throw new ValidationError(
        'input.datasetVersionId',
        model.task === 'CLASSIFICATION'
          ? 'classification trains on IMAGE_FOLDER datasets'
          : `object detection needs a YOLO or COCO dataset, not ${version.format}`,
      );
    }
    const config = normalizeTrainingConfig(data.config, model);
    // When no candidate can take the session (limits, no capacity, provider unavailable) the
    // caller gets a typed error and no row.
    const placement = await this.ctx.app.orchestrator.place({
      session: {
        id: randomUUID(),
        organizationId: me.orgId,
        createdById: me.userId,
        modelId: model.id,
        datasetVersionId: version.id,
        config,
        storageProfileId: version.storage_profile_id,
        dataset: datasetForJob(version),
      },
      computeProfileId: data.computeProfileId ?? null,
    });
    if (!placement.ok) throw placement.refusal;
    return placement.session;
  }

  /**
   * Waiting sessions are cancelled at once; a running one is asked to stop (its trainer
   * checkpoints and exits) and becomes CANCELLED when its node reports the stop, or when the node
   * is gone. The returned session shows cancelRequested while that happens.
   */
  async cancel(id: string): Promise<TrainingSessionRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Cancelling training');
    const session = await this.byId.load(id);
    if (!session || session.organizationId !== me.orgId) throw new NotFoundError('TrainingSession', id);
    const { orchestrator, publisher } = this.ctx.app;
    if (TERMINAL_STATUSES.includes(session.status)) {
      throw new ConflictError(`The session is already ${session.status}`);
    }
    const updated = await this.sql.transaction(async (tx) => {
      if (session.status === 'RUNNING') {
        const [row] = await tx.query<SessionRow>(
          `update training_sessions set cancel_requested_at = coalesce(cancel_requested_at, now()), updated_at = now()
           where id = ? and status = 'RUNNING' returning ${SESSION_COLUMNS}`,
          [id],
        );
        if (row) return sessionFromRow(row);
      }
      return transition(tx, id, 'CANCELLED', { set: { cancelRequestedAt: new Date() } });
    });
    if (!updated) throw new NotFoundError('TrainingSession', id);
    await orchestrator.cancelAtProvider(updated);
    this.byId.clear(id).prime(id, updated);
    publisher.sessionChanged(updated);
    return updated;
  }

  /** A session paused by its budget, or preempted, runs again from its last checkpoint. */
  async resume(id: string): Promise<TrainingSessionRecord> {
    const me = await this.ctx.requireRole('MEMBER', 'Resuming training');
    const session = await this.byId.load(id);
    if (!session || session.organizationId !== me.orgId) throw new NotFoundError('TrainingSession', id);
    if (session.status !== 'PAUSED_BUDGET' && session.status !== 'PREEMPTED') {
      throw new ConflictError(`Only PAUSED_BUDGET or PREEMPTED sessions can be resumed; this one is ${session.status}`);
    }
    const { orchestrator } = this.ctx.app;
    const requeued = await this.sql.transaction(async (tx) => {
      if (session.status === 'PAUSED_BUDGET') {
        const pre = await transition(tx, id, 'QUEUED', {
          from: ['PAUSED_BUDGET'],
          set: {
            attempt: session.attempt + 1,
            lastEventSeq: 0,
            nodeId: null,
            attempts: [
              ...session.attempts,
              {
                provider: session.provider ?? 'PLATFORM',
                profileId: session.computeProfileId,
                reason: 'resumed by a user after a budget pause',
                at: new Date().toISOString(),
                ok: true,
              },
            ],
          },
        });
        return pre;
      }
      return requeue(tx, session, 'resumed by a user');
    });
    if (!requeued) throw new ConflictError('The session changed meanwhile; look at it again');
    await orchestrator.submitQueued(requeued);
    this.byId.clear(id);
    return (await this.byId.load(id))!;
  }
}
