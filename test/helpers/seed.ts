// Seeding that the public API cannot do yet: READY dataset versions arrive with the storage issue
// (createDatasetVersion + upload + finalizeDatasetVersion). Until then tests insert them here.
import { randomUUID } from 'node:crypto';
import { decodeGlobalID, encodeGlobalID } from '@pothos/plugin-relay';
import type { TestApi } from './api.js';

export async function seedReadyDatasetVersion(
  api: TestApi,
  datasetGlobalId: string,
  format: 'YOLO' | 'COCO' | 'IMAGE_FOLDER' = 'YOLO',
): Promise<string> {
  const datasetId = decodeGlobalID(datasetGlobalId).id;
  const conn = api.orm.em.getConnection();
  const [ds] = await conn.execute<{ organization_id: string }[]>('select organization_id from datasets where id = ?', [
    datasetId,
  ]);
  const [{ n }] = await conn.execute<{ n: number }[]>(
    'select coalesce(max(version), 0) + 1 as n from dataset_versions where dataset_id = ?',
    [datasetId],
  );
  const id = randomUUID();
  await conn.execute(
    `insert into dataset_versions (id, created_at, updated_at, organization_id, dataset_id, version, format, filename,
       archive_key, sha256, size_bytes, class_names, splits, status, finalized_at)
     values (?, now(), now(), ?, ?, ?, ?, 'shapes.zip', ?, ?, 1024, ?, ?, 'READY', now())`,
    [
      id,
      ds.organization_id,
      datasetId,
      n,
      format,
      `orgs/${ds.organization_id}/datasets/${datasetId}/${id}.zip`,
      'a'.repeat(64),
      JSON.stringify(['circle', 'square']),
      JSON.stringify({ train: { images: 8, boxes: 12 }, val: { images: 2, boxes: 3 } }),
    ],
  );
  return encodeGlobalID('DatasetVersion', id);
}
