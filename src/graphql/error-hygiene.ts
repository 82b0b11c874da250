// What errors may say, to clients and to the log.
//
// - No error message quotes a request variable's value (a password typed into the wrong field, an
//   API key): graphql-js's coercion messages are rebuilt from their structure, and any other error
//   message has the variables' string values cut out (HTTP and websocket, every environment).
// - Database errors never show their SQL, parameter values, `detail` or ciphertext: MikroORM's
//   message is "<the SQL with its values> - <PostgreSQL's message>", and PostgreSQL's own message and
//   detail quote values too ("Key (email)=(...)", "invalid input syntax for type uuid: ...").
// - Clients' mistakes are logged below ERROR, which is kept for the server's own faults.
import { DriverException } from '@mikro-orm/core';
import { GraphQLError, type ExecutionResult } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { AppError } from '../lib/errors.js';

const REDACTED = '[redacted]';
// Shorter strings are not secrets, and cutting them would garble messages ("id", "YOLO").
const MIN_SECRET_LENGTH = 6;
// Bounds the work on a request with a huge variables object (the body limit bounds it anyway).
const MAX_SECRETS = 1000;

/** The string values in the variables, with the forms messages quote them in (JSON-escaped). */
function secretsOf(variables: unknown): string[] {
  const found = new Set<string>();
  const stack: unknown[] = [variables];
  while (stack.length && found.size < MAX_SECRETS) {
    const value = stack.pop();
    if (typeof value === 'string') {
      if (value.length >= MIN_SECRET_LENGTH) {
        found.add(value);
        const escaped = JSON.stringify(value).slice(1, -1);
        if (escaped !== value) found.add(escaped);
      }
    } else if (value !== null && typeof value === 'object') {
      stack.push(...(Array.isArray(value) ? value : Object.values(value)));
    }
  }
  // Longest first, so a value containing another is cut whole.
  return [...found].sort((a, b) => b.length - a.length);
}

function scrub(message: string, secrets: string[]): string {
  let out = message;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  return out;
}

const NAME = '[_A-Za-z][_0-9A-Za-z]*';
const TYPE = '[_A-Za-z][_0-9A-Za-z!\\[\\] ]*';
const SUGGESTION = '(?: Did you mean [_0-9A-Za-z", ]*\\?)?';

/**
 * Reasons whose text ends the message with "." or "?", where the value (printed by graphql-js's
 * or graphql-jit's inspect, ending in }, ], a quote, a digit or a keyword) cannot end it: matched
 * at the end, their names come from the schema, never from the value.
 */
const TRAILING_REASONS: [RegExp, (m: RegExpExecArray) => string][] = [
  [new RegExp(`; Field "(${NAME})" of required type "(${TYPE})" was not provided\\.$`), (m) => `Field "${m[1]}" of required type "${m[2]}" was not provided.`],
  [new RegExp(`; Field "(${NAME})" is not defined by type "?(${NAME})"?\\.${SUGGESTION}$`), (m) => `Field "${m[1]}" is not defined by type "${m[2]}".`],
  [/; Field ".*" is not defined by type "?([_A-Za-z][_0-9A-Za-z]*)"?\.(?: Did you mean [_0-9A-Za-z", ]*\?)?$/s, (m) => `A field is not defined by type "${m[1]}".`],
  [new RegExp(`; Expected type "?(${NAME})"? to be an object\\.$`), (m) => `Expected type "${m[1]}" to be an object.`],
  [new RegExp(`; Value .* does not exist in "(${NAME})" enum\\.${SUGGESTION}$`, 's'), (m) => `The value is not one of the "${m[1]}" enum's values.`],
  [new RegExp(`; Expected type "?(${NAME})"?\\.$`), (m) => `Expected type "${m[1]}".`],
];
// Reasons that end with the value: only the built-in scalar's name is kept.
// graphql-js's fixed wording before the ": <value>" is kept, so the client learns what was wrong.
const SCALAR_REASON =
  /; (?:Expected type "?[_A-Za-z][_0-9A-Za-z]*"?; )?(Int|Float|String|Boolean|ID) cannot represent (non-integer value|non 32-bit signed integer value|non numeric value|a non string value|a non boolean value)?/;

const FIELD_PATH = new RegExp(`^${NAME}(?:\\.(?:${NAME}|\\d+))*$`);
const COERCION = new RegExp(`^Variable "\\$(${NAME})" got invalid value `);

/**
 * A variable-coercion message (graphql-js's or graphql-jit's: `Variable "$x" got invalid value
 * <the value>; <reason>`, the value printed whole, possibly again at the end) rebuilt from what can
 * be told apart from the value: which variable, and why in the schema's terms. The path inside the
 * variable is dropped: graphql-jit never gives one, and in graphql-js's message it follows the
 * value and could be forged by it.
 */
function rebuildCoercionMessage(message: string, variable: string, field?: unknown): string {
  let reason = 'The value does not match its type.';
  const trailing = TRAILING_REASONS.map(([re, fmt]) => {
    const m = re.exec(message);
    return m ? fmt(m) : null;
  }).find((r) => r !== null);
  if (trailing) reason = trailing;
  else {
    const scalar = SCALAR_REASON.exec(message);
    if (scalar) reason = `${scalar[1]} cannot represent ${scalar[2] ?? 'this value'}.`;
  }
  // extensions.field is set by useGraphQLJsVariableErrors from graphql-js's coercion path, which
  // holds only the schema's field names and list indices; the shape check keeps anything else out.
  const at = typeof field === 'string' && field !== variable && FIELD_PATH.test(field) ? ` at "${field}"` : '';
  return `Variable "$${variable}" got invalid value${at}; ${reason}`;
}

export function redactError(error: GraphQLError, variables: unknown, secrets = secretsOf(variables)): GraphQLError {
  const coercion = COERCION.exec(error.message);
  if (coercion) {
    // No originalError: it is the unredacted reason, and masking would otherwise look inside it.
    return new GraphQLError(scrub(rebuildCoercionMessage(error.message, coercion[1], error.extensions?.field), secrets), {
      nodes: error.nodes,
      extensions: { ...error.extensions, code: 'BAD_USER_INPUT' },
    });
  }
  const message = scrub(error.message, secrets);
  if (message === error.message) return error;
  return new GraphQLError(message, {
    nodes: error.nodes,
    path: error.path,
    extensions: error.extensions,
    originalError: error.originalError,
  });
}

function redactResult<T extends ExecutionResult>(result: T, variables: unknown): T | null {
  if (!result.errors?.length) return null;
  const secrets = secretsOf(variables);
  const errors = result.errors.map((e) => redactError(e, variables, secrets));
  return errors.every((e, i) => e === result.errors![i]) ? null : { ...result, errors };
}

function isAsyncIterable(value: unknown): boolean {
  return value !== null && typeof value === 'object' && Symbol.asyncIterator in value;
}

/**
 * Applies `redactError` to the errors of every execution and subscription result (each event of a
 * stream too). It runs before yoga's masking, which then builds its messages from redacted errors.
 */
export function useRedactVariables(): Plugin {
  const hook =
    (variables: unknown) =>
    ({ result, setResult }: { result: unknown; setResult: (r: never) => void }) => {
      if (isAsyncIterable(result)) {
        return {
          onNext: ({ result: next, setResult: setNext }: { result: ExecutionResult; setResult: (r: ExecutionResult) => void }) => {
            const fixed = redactResult(next, variables);
            if (fixed) setNext(fixed);
          },
        };
      }
      if (result && typeof result === 'object') {
        const fixed = redactResult(result as ExecutionResult, variables);
        if (fixed) setResult(fixed as never);
      }
      return undefined;
    };
  return {
    onExecute: ({ args }) => ({ onExecuteDone: hook(args.variableValues) as never }),
    onSubscribe: ({ args }) => ({ onSubscribeResult: hook(args.variableValues) as never }),
  };
}

export function isDatabaseError(err: unknown): err is Error & Record<string, unknown> {
  if (err instanceof DriverException) return true;
  // pg's DatabaseError (raw-SQL reads in src/db/sql.ts): a SQLSTATE code and a severity.
  const e = err as { code?: unknown; severity?: unknown } | null;
  return err instanceof Error && typeof e?.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && typeof e.severity === 'string';
}

/** What may be said about a database error: its class, SQLSTATE and the names it involves. */
export function describeDatabaseError(err: Error & Record<string, unknown>): Record<string, unknown> {
  const fields: Record<string, unknown> = { error: `${err.name}: database error` };
  const sqlState = typeof err.sqlState === 'string' ? err.sqlState : err.code;
  if (typeof sqlState === 'string') fields.sqlState = sqlState;
  for (const key of ['routine', 'table', 'column', 'constraint'] as const) {
    if (typeof err[key] === 'string') fields[key] = err[key];
  }
  const reason = postgresReason(err.message);
  if (reason) fields.reason = reason;
  return fields;
}

/**
 * PostgreSQL's sentence for a constraint violation, which operators need ('violates check
 * constraint "y"'). Only that fixed shape is taken (names come from the schema): the rest of the
 * message is the SQL with its values, and other reasons quote values ('invalid input syntax for
 * type uuid: "..."', a trigger's RAISE text).
 */
function reasonSuffix(message: string): string {
  const reason = postgresReason(message);
  return reason ? ` (${reason})` : '';
}

function postgresReason(message: string): string | null {
  return /violates (?:check|unique|foreign key|not-null|exclusion) constraint "[A-Za-z0-9_.]+"/.exec(message)?.[0] ?? null;
}

/** The stack without its first lines, which repeat the message (and so the SQL). */
function framesOnly(stack: string | undefined): string {
  return (stack ?? '')
    .split('\n')
    .filter((l) => /^\s+at /.test(l))
    .join('\n');
}

/**
 * The original error as development responses and the log may show it: a database error as its
 * SQLSTATE and names plus the stack frames, anything else as its message and frames.
 */
export function sanitizedOriginal(err: unknown): { name: string; message: string; stack?: string; [k: string]: unknown } {
  if (isDatabaseError(err)) {
    const fields = describeDatabaseError(err);
    const { error: _message, ...rest } = fields;
    return { name: err.name, message: 'database error', ...rest, stack: framesOnly(err.stack) };
  }
  if (err instanceof Error) return { name: err.name, message: err.message, stack: framesOnly(err.stack) };
  return { name: 'Error', message: String(err) };
}

/** A client's mistake (bad input, no or wrong credentials, a limit) rather than a server fault. */
export function isClientError(err: unknown): boolean {
  if (err instanceof AppError) return true;
  if (!(err instanceof GraphQLError)) return false;
  // A GraphQLError of its own (parse, validation, coercion, a limit) is about the request; one
  // wrapping anything else is a fault that reached a resolver. The chain is a few links at most.
  return err.originalError == null || isClientError(err.originalError);
}

/** Log fields for an error: never a database error's message or a variable's value. */
export function logFieldsFor(err: unknown): Record<string, unknown> {
  const original = err instanceof GraphQLError && err.originalError ? err.originalError : err;
  if (isDatabaseError(original)) {
    const fields = describeDatabaseError(original);
    return { ...fields, stack: framesOnly(original.stack).split('\n').slice(0, 6).join('\n') };
  }
  if (original instanceof Error) {
    return { error: original.message, stack: framesOnly(original.stack).split('\n').slice(0, 6).join('\n') };
  }
  return { error: String(original) };
}

/** A message safe to log for an error (a database error's SQL never is). */
export function logMessageFor(err: unknown): string {
  const original = err instanceof GraphQLError && err.originalError ? err.originalError : err;
  if (isDatabaseError(original)) return `${original.name}: database error${reasonSuffix(original.message)}`;
  return err instanceof Error ? err.message : String(err);
}

