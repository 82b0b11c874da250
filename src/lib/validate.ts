import { z } from 'zod';
import { ValidationError } from './errors.js';

/**
 * Parses input with a zod schema before anything is written. The first problem becomes a
 * ValidationError whose field is the full input path ("input.config.epochs").
 */
export function parseInput<S extends z.ZodType>(schema: S, value: unknown, prefix = 'input'): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = [prefix, ...issue.path.map(String)].filter(Boolean).join('.');
  throw new ValidationError(field, humanMessage(issue));
}

function humanMessage(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_type':
      return issue.message.startsWith('Invalid input') ? `expected ${issue.expected}` : issue.message;
    default:
      return issue.message;
  }
}

/**
 * How much of the control range a text field may hold. Every string that enters through the API
 * is checked by one of these (src/graphql/text-guard.ts at the GraphQL boundary, and the zod
 * helpers below in the services):
 * - `line`: names, emails, settings, ids: no control character at all (C0 U+0000-U+001F, DEL,
 *   C1 U+0080-U+009F). C1 is included because U+0085 is a line break and U+009B a terminal escape
 *   to many readers, and NUL is what PostgreSQL text and jsonb cannot store.
 * - `multiline`: free-form descriptions: also line breaks (\n) and tabs, nothing else.
 * - `secret`: credentials and passwords: also \r, since PEM keys and kubeconfigs pasted from
 *   Windows files carry CRLF. The problem never quotes the value or says where it is.
 */
export type TextKind = 'line' | 'multiline' | 'secret';

const CONTROL: Record<TextKind, RegExp> = {
  line: /[\u0000-\u001f\u007f-\u009f]/,
  multiline: /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/,
  secret: /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/,
};

/** What is wrong with `s` as text of that kind, or null. */
export function controlCharacterProblem(s: string, kind: TextKind = 'line'): string | null {
  const m = CONTROL[kind].exec(s);
  if (!m) return null;
  if (kind === 'secret') return 'must not contain NUL or other control characters (tabs and line breaks are allowed)';
  const cp = `U+${m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')}`;
  return kind === 'multiline'
    ? `must not contain control characters other than line breaks and tabs (found ${cp})`
    : `must not contain control characters (found ${cp})`;
}

const noControl = (kind: TextKind) => (s: string, ctx: z.core.$RefinementCtx<string>) => {
  const problem = controlCharacterProblem(s, kind);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
};

export const trimmedName = (max = 120) =>
  z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(max, `must be at most ${max} characters`)
    .superRefine(noControl('line'));

/** One line of text that is no name (hosts, versions, device names): not trimmed, no control characters. */
export const singleLine = (max: number) => z.string().max(max, `must be at most ${max} characters`).superRefine(noControl('line'));

/** A free-form description: several lines allowed, no other control characters. */
export const multilineText = (max: number) =>
  z.string().trim().max(max, `must be at most ${max} characters`).superRefine(noControl('multiline'));

export const email = z
  .string()
  .trim()
  .toLowerCase()
  .max(254, 'must be at most 254 characters')
  .pipe(z.email('must be a valid email address'));

/**
 * The first string in a JSON value (object keys included) that breaks the rule for `kind`, as a
 * field path and a problem. Keys are identifiers, so they are always `line` text; a bad key is
 * reported at its object, without the key itself. Iterative: a JSON variable nested thousands
 * deep must not overflow the stack here.
 */
export function jsonControlProblem(value: unknown, field: string, kind: TextKind): { field: string; message: string } | null {
  const stack: [unknown, string][] = [[value, field]];
  while (stack.length) {
    const [v, at] = stack.pop()!;
    if (typeof v === 'string') {
      const message = controlCharacterProblem(v, kind);
      if (message) return { field: at, message };
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], `${at}.${i}`]);
    } else if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) {
        const key = keys[i];
        const message = controlCharacterProblem(key, 'line');
        if (message) return { field: at, message: `has a key that ${message}` };
        stack.push([(v as Record<string, unknown>)[key], `${at}.${key}`]);
      }
    }
  }
  return null;
}
