// The JSON Schemas in schema/ are the single source of truth for job payloads and events; the
// API validates against the same files the Python trainer and the gpu-node are tested with.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsImport from 'ajv-formats';

const schemaDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../schema');
const load = (file: string) => JSON.parse(readFileSync(path.join(schemaDir, file), 'utf8'));

// ajv-formats is CommonJS; its default export arrives wrapped under ESM.
const addFormats = ((addFormatsImport as unknown as { default?: unknown }).default ??
  addFormatsImport) as unknown as (ajv: Ajv2020) => Ajv2020;

let ajv: Ajv2020 | null = null;
function instance(): Ajv2020 {
  if (!ajv) {
    ajv = new Ajv2020({ allErrors: false, strict: false });
    addFormats(ajv);
    ajv.addSchema(load('trainer-events.schema.json'));
    ajv.addSchema(load('run-config.schema.json'));
    ajv.addSchema(load('event-envelope.schema.json'));
    ajv.addSchema(load('job-payload.schema.json'));
  }
  return ajv;
}

function validator(id: string): ValidateFunction {
  const fn = instance().getSchema(id);
  if (!fn) throw new Error(`schema ${id} not found in schema/`);
  return fn;
}

export function describeErrors(errors: ErrorObject[] | null | undefined): string {
  return (errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message}`).join('; ');
}

export const validateEnvelope = (value: unknown) => check('urn:cvtrain:schema:event-envelope:v1', value);
export const validateTrainerEvent = (value: unknown) => check('urn:cvtrain:schema:trainer-events:v1', value);
export const validateJobPayload = (value: unknown) => check('urn:cvtrain:schema:job-payload:v1', value);

function check(id: string, value: unknown): { ok: true } | { ok: false; reason: string } {
  const fn = validator(id);
  return fn(value) ? { ok: true } : { ok: false, reason: describeErrors(fn.errors) };
}
