// graphql-jit coerces variables with code of its own, and its messages name the innermost input
// field as if it were the variable: `{"input": {"config": {"epochs": 1e12}}}` was refused with
// 'Variable "$epochs" got invalid value ...', a variable the operation does not have, and no path.
// graphql-js says 'Variable "$input" got invalid value ... at "input.config.epochs"'.
import {
  coerceInputValue,
  GraphQLError,
  isInputType,
  isNonNullType,
  Kind,
  typeFromAST,
  type DocumentNode,
  type ExecutionResult,
  type GraphQLSchema,
  type OperationDefinitionNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

const VARIABLE_ERROR = /^Variable "\$/;

/**
 * When an execution ends with nothing but variable errors, the variables are coerced again by
 * graphql-js and its errors replace graphql-jit's: the real variable, the path inside it (also in
 * `extensions.field`, e.g. "input.config.epochs") and the reason. The value itself is left out
 * of the message. Only refused requests pay for this. It goes before the plugin that redacts
 * rejected values, which then works on these messages.
 */
export function useGraphQLJsVariableErrors(): Plugin {
  return {
    onExecute: () => ({
      onExecuteDone: ({ args, result, setResult }) => {
        if (!result || typeof result !== 'object' || Symbol.asyncIterator in result) return;
        const r = result as ExecutionResult;
        if (r.data != null || !r.errors?.length || !r.errors.every((e) => VARIABLE_ERROR.test(e.message))) return;
        const operation = (args.document as DocumentNode).definitions.find(
          (d): d is OperationDefinitionNode =>
            d.kind === Kind.OPERATION_DEFINITION && (!args.operationName || d.name?.value === args.operationName),
        );
        if (!operation) return;
        const errors = variableErrors(args.schema, operation, (args.variableValues ?? {}) as Record<string, unknown>);
        if (errors.length) setResult({ errors });
      },
    }),
  };
}

const MAX_ERRORS = 50;

function variableErrors(schema: GraphQLSchema, operation: OperationDefinitionNode, inputs: Record<string, unknown>) {
  const errors: GraphQLError[] = [];
  const fail = (node: GraphQLError['nodes'], field: string, message: string) => {
    if (errors.length < MAX_ERRORS) {
      errors.push(new GraphQLError(message, { nodes: node, extensions: { code: 'BAD_USER_INPUT', field } }));
    }
  };
  for (const def of operation.variableDefinitions ?? []) {
    const name = def.variable.name.value;
    const type = typeFromAST(schema, def.type);
    if (!type || !isInputType(type)) continue;
    const given = Object.prototype.hasOwnProperty.call(inputs, name);
    const value = inputs[name];
    if (!given || value === null) {
      if (isNonNullType(type) && (given || !def.defaultValue)) {
        fail(
          [def],
          name,
          given
            ? `Variable "$${name}" of non-null type "${String(type)}" must not be null.`
            : `Variable "$${name}" of required type "${String(type)}" was not provided.`,
        );
      }
      continue;
    }
    coerceInputValue(value, type, (path, _invalid, error) => {
      const field = [name, ...path].join('.');
      fail([def], field, `Variable "$${name}" got invalid value${path.length ? ` at "${field}"` : ''}; ${error.message}`);
    });
  }
  return errors;
}
