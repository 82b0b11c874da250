// The one validator of schema/*.json, used by the API and the gpu-node alike: a job payload,
// an envelope or a trainer line is trusted only after it passed here. The API needs a yes or
// no and why (`check`); the node then works on the fields (`validate*`, narrowed to the types).
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';
import type { Envelope, JobPayload, TrainerEvent } from './types.js';

const SCHEMA_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../schema');

/** The `$id` of each schema a message is checked against. */
const SCHEMA_IDS = {
  trainerEvent: 'urn:cvtrain:schema:trainer-events:v1',
  jobPayload: 'urn:cvtrain:schema:job-payload:v1',
  envelope: 'urn:cvtrain:schema:event-envelope:v1',
} as const;
export type SchemaName = keyof typeof SCHEMA_IDS;

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = ((addFormatsImport as unknown as { default?: unknown }).default ??
  addFormatsImport) as unknown as (ajv: Ajv2020) => Ajv2020;

/** Reads one of schema/*.json. */
export function readSchema(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path.join(SCHEMA_DIR, file), 'utf8')) as Record<string, unknown>;
}

// Compiled on first use, so importing the types costs no file reads.
let ajv: Ajv2020 | null = null;
function validator(name: SchemaName): ValidateFunction {
  if (!ajv) {
    ajv = new Ajv2020({ allErrors: false, strict: false });
    addFormats(ajv);
    // Every schema, so the $refs between them (the envelope's trainer event) resolve.
    for (const file of readdirSync(SCHEMA_DIR).filter((f) => f.endsWith('.schema.json')).sort()) ajv.addSchema(readSchema(file));
  }
  const fn = ajv.getSchema(SCHEMA_IDS[name]);
  if (!fn) throw new Error(`schema ${SCHEMA_IDS[name]} not found in schema/`);
  return fn;
}

function describeErrors(errors: ErrorObject[] | null | undefined): string {
  if (!errors || errors.length === 0) return 'invalid';
  return errors
    .slice(0, 5)
    .map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'invalid'}`)
    .join('; ');
}

export type Checked = { ok: true } | { ok: false; error: string };
export type Validation<T> = { ok: true; value: T } | { ok: false; error: string };

/** Whether `value` satisfies the schema, and if not, why (at most five reasons). */
export function check(name: SchemaName, value: unknown): Checked {
  const fn = validator(name);
  return fn(value) ? { ok: true } : { ok: false, error: describeErrors(fn.errors) };
}

function narrowing<T>(name: SchemaName): (value: unknown) => Validation<T> {
  return (value) => {
    const checked = check(name, value);
    return checked.ok ? { ok: true, value: value as T } : checked;
  };
}

export const validateTrainerEvent = narrowing<TrainerEvent>('trainerEvent');
export const validateJobPayload = narrowing<JobPayload>('jobPayload');
export const validateEnvelope = narrowing<Envelope>('envelope');
