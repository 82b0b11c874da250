// The one check of every string that enters through GraphQL: arguments, input-object fields at any
// depth and the keys and strings inside JSON scalars, from variables and from literals alike.
// Services validate their own rules (lengths, formats) afterwards; what they never have to think
// about is a control character slipping into a column (PostgreSQL refuses NUL in text and jsonb,
// which used to surface as "Unexpected error." with the SQL attached).
import SchemaBuilder, { BasePlugin, type PothosOutputFieldConfig, type SchemaTypes } from '@pothos/core';
import {
  isInputObjectType,
  isListType,
  isNonNullType,
  isScalarType,
  type GraphQLArgument,
  type GraphQLFieldResolver,
  type GraphQLInputType,
  type GraphQLResolveInfo,
} from 'graphql';
import { ValidationError } from '../lib/errors.js';
import { controlCharacterProblem, jsonControlProblem, type TextKind } from '../lib/validate.js';

/**
 * Input fields and arguments that are not single-line text say so in their extensions, e.g.
 * `t.string({ extensions: TEXT.multiline })`. Everything else is `line` (see TextKind).
 */
export const TEXT = {
  multiline: { text: 'multiline' },
  secret: { text: 'secret' },
} as const satisfies Record<string, { text: TextKind }>;

const kindOf = (extensions: unknown): TextKind => (extensions as { text?: TextKind } | null)?.text ?? 'line';

// Scalars whose parsed values are not text (DateTime parses to a Date).
const NOT_TEXT = new Set(['Int', 'Float', 'Boolean', 'DateTime']);

type Check = (value: unknown, path: string) => void;

const checks = new WeakMap<object, Check | null>();

/** A check of values of `type`, or null when the type cannot carry a string. */
function checkFor(type: GraphQLInputType, kind: TextKind): Check | null {
  if (isNonNullType(type)) return checkFor(type.ofType, kind);
  if (isListType(type)) {
    const item = checkFor(type.ofType, kind);
    if (!item) return null;
    return (value, path) => {
      if (!Array.isArray(value)) return item(value, path);
      for (let i = 0; i < value.length; i++) if (value[i] != null) item(value[i], `${path}.${i}`);
    };
  }
  if (isScalarType(type)) {
    if (NOT_TEXT.has(type.name)) return null;
    if (type.name === 'JSON') {
      return (value, path) => {
        const problem = jsonControlProblem(value, path, kind);
        if (problem) throw new ValidationError(problem.field, problem.message);
      };
    }
    return (value, path) => {
      if (typeof value !== 'string') return;
      const problem = controlCharacterProblem(value, kind);
      if (problem) throw new ValidationError(path, problem);
    };
  }
  if (isInputObjectType(type)) {
    // Input objects are checked field by field; memoised per type (kind comes from each field).
    if (checks.has(type)) return checks.get(type)!;
    checks.set(type, null); // a self-referencing input type terminates here
    const fields = Object.values(type.getFields())
      .map((f) => ({ name: f.name, check: checkFor(f.type, kindOf(f.extensions)) }))
      .filter((f): f is { name: string; check: Check } => f.check !== null);
    const check: Check | null = fields.length
      ? (value, path) => {
          if (value === null || typeof value !== 'object') return;
          for (const f of fields) {
            const v = (value as Record<string, unknown>)[f.name];
            if (v != null) f.check(v, `${path}.${f.name}`);
          }
        }
      : null;
    checks.set(type, check);
    return check;
  }
  return null; // enums
}

function argsCheck(args: readonly GraphQLArgument[]): ((args: Record<string, unknown>) => void) | null {
  const parts = args
    .map((a) => ({ name: a.name, check: checkFor(a.type, kindOf(a.extensions)) }))
    .filter((a): a is { name: string; check: Check } => a.check !== null);
  if (!parts.length) return null;
  return (values) => {
    for (const p of parts) {
      const v = values[p.name];
      if (v != null) p.check(v, p.name);
    }
  };
}

type Resolver<Types extends SchemaTypes> = GraphQLFieldResolver<unknown, Types['Context'], object>;

/**
 * Runs the check before a field's resolver (or a subscription's subscribe), inside the errors
 * plugin's wrapper, so a mutation answers with its typed ValidationError. The check is built from
 * the executable schema's argument types on the field's first call.
 */
export class TextGuardPlugin<Types extends SchemaTypes> extends BasePlugin<Types> {
  override wrapResolve(resolver: Resolver<Types>, fieldConfig: PothosOutputFieldConfig<Types>): Resolver<Types> {
    // Subscription events reuse the arguments subscribe already checked.
    if (fieldConfig.kind === 'Subscription' || Object.keys(fieldConfig.args).length === 0) return resolver;
    return guarded(resolver);
  }

  override wrapSubscribe(
    subscribe: Resolver<Types> | undefined,
    fieldConfig: PothosOutputFieldConfig<Types>,
  ): Resolver<Types> | undefined {
    if (!subscribe || Object.keys(fieldConfig.args).length === 0) return subscribe;
    return guarded(subscribe);
  }
}

function guarded<Types extends SchemaTypes>(resolver: Resolver<Types>): Resolver<Types> {
  let check: ((args: Record<string, unknown>) => void) | null | undefined;
  return (parent, args, ctx, info: GraphQLResolveInfo) => {
    if (check === undefined) check = argsCheck(info.parentType.getFields()[info.fieldName]?.args ?? []);
    check?.(args as Record<string, unknown>);
    return resolver(parent, args, ctx, info);
  };
}

const pluginName = 'textGuard';
export default pluginName;

declare global {
  export namespace PothosSchemaTypes {
    interface Plugins<Types extends SchemaTypes> {
      textGuard: TextGuardPlugin<Types>;
    }
  }
}

SchemaBuilder.registerPlugin(pluginName, TextGuardPlugin);
