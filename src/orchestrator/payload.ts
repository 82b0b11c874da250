// The job a provider receives (protocol/ JobPayload): the session's config without unset fields,
// its dataset, where to resume from, and what the profile asks of the hardware.
import type { SqlQuery } from '../db/sql.js';
import type { StoredTrainingConfig } from '../modules/training/config.js';
import type { ProfileForAdapter } from '../providers/types.js';
import type { DatasetRef, JobPayload } from '../../protocol/index.js';

export function jobPayload(
  session: { id: string; organizationId: string; attempt: number; config: StoredTrainingConfig },
  dataset: DatasetRef,
  profile: ProfileForAdapter,
  checkpointKey: string | null,
): JobPayload {
  const { task, framework, architecture, epochs, ...rest } = session.config;
  const config: JobPayload['config'] = { task, framework, architecture, epochs };
  for (const [k, v] of Object.entries(rest)) if (v !== null && v !== undefined) config[k] = v;
  const timeoutMinutes = profile.config.timeoutMinutes as number | undefined;
  return {
    v: 1,
    sessionId: session.id,
    organizationId: session.organizationId,
    attempt: session.attempt,
    config,
    dataset,
    resume: checkpointKey ? { checkpointKey } : null,
    requirements: {
      gpus: Number(profile.config.gpus ?? 1),
      gpuType: (profile.config.gpuType as string | undefined) ?? null,
      timeoutSeconds: timeoutMinutes ? timeoutMinutes * 60 : null,
    },
    enqueuedAt: new Date().toISOString(),
  };
}

/** A job's dataset, from a dataset_versions row. */
export function datasetForJob(dv: { id: string; sha256: string | null; format: string; size_bytes: string | number | null }): DatasetRef {
  return {
    versionId: dv.id,
    sha256: dv.sha256 ?? '',
    format: dv.format.toLowerCase() as DatasetRef['format'],
    sizeBytes: Number(dv.size_bytes ?? 0),
  };
}

/** The dataset of a session queued again (its first placement read it with the version). */
export async function datasetFor(sql: SqlQuery, datasetVersionId: string): Promise<DatasetRef> {
  const [dv] = await sql.query<{ id: string; sha256: string | null; format: string; size_bytes: string | null }>(
    'select id, sha256, format, size_bytes from dataset_versions where id = ?',
    [datasetVersionId],
  );
  if (!dv?.sha256) throw new Error('the dataset version has no archive checksum (not finalized)');
  return datasetForJob(dv);
}
