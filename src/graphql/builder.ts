// The Pothos builder: plugins, scalars and the context type. No domain types live here.
import SchemaBuilder from '@pothos/core';
import ErrorsPlugin from '@pothos/plugin-errors';
import RelayPlugin from '@pothos/plugin-relay';
import type { RequestContext } from './context.js';
import { decodeNodeId } from './ids.js';
import TextGuardPlugin from './text-guard.js';

export interface Connectionish {
  /** Counted only when a client asks for totalCount. */
  totalCount: () => Promise<number>;
}

export const builder = new SchemaBuilder<{
  Context: RequestContext;
  Scalars: {
    DateTime: { Input: Date; Output: Date | string };
    JSON: { Input: unknown; Output: unknown };
    ID: { Input: string; Output: string | number };
  };
  Connection: Connectionish;
  DefaultFieldNullability: false;
  DefaultInputFieldRequiredness: true;
}>({
  // TextGuardPlugin last: its check runs inside the errors plugin's wrapper (typed results).
  plugins: [ErrorsPlugin, RelayPlugin, TextGuardPlugin],
  defaultFieldNullability: false,
  defaultInputFieldRequiredness: true,
  relay: {
    cursorType: 'String',
    clientMutationId: 'omit',
    nodesQueryOptions: false,
    // node(id:) ids are checked for shape before any loader (and its SQL) sees them.
    decodeGlobalID: decodeNodeId,
    // Forward pagination is the API's promise (first/after); backward args stay available.
  },
  errors: {
    defaultTypes: [],
    defaultResultOptions: {
      name: ({ fieldName }) => `${fieldName[0].toUpperCase()}${fieldName.slice(1)}Success`,
    },
    defaultUnionOptions: {
      name: ({ fieldName }) => `${fieldName[0].toUpperCase()}${fieldName.slice(1)}Result`,
    },
  },
});

builder.queryType({});
builder.mutationType({});
builder.subscriptionType({});

builder.globalConnectionField('totalCount', (t) =>
  t.int({ resolve: (parent) => parent.totalCount() }),
);
