import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { buildManifest, manifestFile } from '../src/graphql/persisted.js';
import { printedSchema, schemaFile } from '../src/graphql/print-schema.js';

describe('schema/ stays in step with the code', () => {
  it('schema/schema.graphql is what the code builds (run `npm run schema:print` after changing types)', () => {
    expect(readFileSync(schemaFile, 'utf8')).toBe(printedSchema());
  });

  it('schema/persisted-operations.json matches schema/operations/*.graphql', () => {
    expect(JSON.parse(readFileSync(manifestFile, 'utf8'))).toEqual(buildManifest());
  });
});
