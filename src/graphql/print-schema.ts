// npm run schema:print -> schema/schema.graphql (a test fails when the file and the code differ).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { lexicographicSortSchema, printSchema } from 'graphql';
import { buildManifest, manifestFile } from './persisted.js';
import { schema } from './schema.js';

export const schemaFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../schema/schema.graphql');

export function printedSchema(): string {
  return printSchema(lexicographicSortSchema(schema)) + '\n';
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  writeFileSync(schemaFile, printedSchema());
  writeFileSync(manifestFile, JSON.stringify(buildManifest(), null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), schemaFile)} and ${path.relative(process.cwd(), manifestFile)}`);
}
