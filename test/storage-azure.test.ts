// The Azure Blob backend against Microsoft's Azurite emulator on loopback, through the real
// @azure/storage-blob SDK. Azurite checks SAS signatures and expiry, so the SAS tampering cases
// run here too.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { orgScoped, type OrgStorage } from '../src/storage/keys.js';
import { startAzurite, type AzureTarget } from './helpers/storage-servers.js';
import { readAll, storageSuite } from './helpers/storage-suite.js';

// 250 blobs listed 100 a page (see startAzurite): three pages.
storageSuite('azure (Azurite)', startAzurite, { manyObjects: 250 });

describe('azure: SAS URLs', () => {
  let t: AzureTarget;
  let s: OrgStorage;
  beforeAll(async () => {
    t = await startAzurite();
    s = orgScoped(t.storage, randomUUID());
  });
  afterAll(() => t?.close());

  const withParam = (url: string, name: string, value: string) => {
    const u = new URL(url);
    u.searchParams.set(name, value);
    return u.toString();
  };

  it('refuses a SAS with its signature, expiry, permissions or blob changed', async () => {
    const key = s.key('sas', 'weights.pt');
    await s.put(key, Buffer.from('weights'));
    await s.put(s.key('sas', 'other.pt'), Buffer.from('other'));
    const link = await s.presignGet(key, { expiresInSeconds: 600 });
    expect((await fetch(link.url)).status).toBe(200);
    const sig = new URL(link.url).searchParams.get('sig')!;
    const tampered: [string, string][] = [
      ['signature', withParam(link.url, 'sig', (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1))],
      ['expiry', withParam(link.url, 'se', new Date(Date.now() + 86_400_000).toISOString().replace(/\.\d+Z$/, 'Z'))],
      ['permissions', withParam(link.url, 'sp', 'rw')],
      ['blob', link.url.replace('/weights.pt?', '/other.pt?')],
    ];
    for (const [what, url] of tampered) {
      const res = await fetch(url);
      expect(res.status, what).toBe(403);
      expect(await res.text(), what).not.toContain('other');
    }
    // A read SAS cannot write.
    const write = await fetch(link.url, { method: 'PUT', headers: { 'x-ms-blob-type': 'BlockBlob' }, body: 'overwrite' });
    expect(write.status).toBe(403);
    expect((await readAll(await s.get(key))).toString()).toBe('weights');
  });

  it('an upload needs the headers the presigned request names (x-ms-blob-type)', async () => {
    const key = s.key('sas', 'upload.zip');
    const link = await s.presignPut(key, { expiresInSeconds: 600, contentType: 'application/zip' });
    expect(link.headers).toEqual({ 'x-ms-blob-type': 'BlockBlob', 'content-type': 'application/zip' });
    const bare = await fetch(link.url, { method: 'PUT', body: 'PK' });
    expect(bare.status).toBe(400);
    const ok = await fetch(link.url, { method: 'PUT', headers: link.headers, body: 'PK' });
    expect(ok.status).toBe(201);
    expect(await s.head(key)).toMatchObject({ size: 2, contentType: 'application/zip' });
  });
});
