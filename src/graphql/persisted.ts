// The persisted-operations manifest: sha256 of each document -> document. API keys marked
// persistedOnly may run only these, so a leaked integration key cannot explore the API.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const schemaDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../schema');
export const manifestFile = path.join(schemaDir, 'persisted-operations.json');
export const operationsDir = path.join(schemaDir, 'operations');

export function operationHash(document: string): string {
  return createHash('sha256').update(document).digest('hex');
}

/** Builds the manifest from schema/operations/*.graphql (one operation per file). */
export function buildManifest(): Record<string, string> {
  const manifest: Record<string, string> = {};
  if (!existsSync(operationsDir)) return manifest;
  for (const file of readdirSync(operationsDir).filter((f) => f.endsWith('.graphql')).sort()) {
    const document = readFileSync(path.join(operationsDir, file), 'utf8').trim();
    manifest[operationHash(document)] = document;
  }
  return manifest;
}

export function loadPersistedOperations(): Map<string, string> {
  if (!existsSync(manifestFile)) return new Map();
  return new Map(Object.entries(JSON.parse(readFileSync(manifestFile, 'utf8')) as Record<string, string>));
}
