// The one place the schema is assembled: import each domain's types, then build.
import { encodeGlobalID } from '@pothos/plugin-relay';
import { GraphQLObjectType, type GraphQLFieldResolver } from 'graphql';
import { builder } from './builder.js';
import { registerNodeTypes } from './ids.js';
import './scalars.js';
import './errors.js';
import '../modules/orgs/schema.js';
import '../modules/models/schema.js';
import '../modules/datasets/schema.js';
import '../modules/compute/schema.js';
import '../modules/training/schema.js';
import '../modules/nodes/schema.js';
import '../modules/storage/schema.js';

export const schema = builder.toSchema({ sortSchema: true });

registerNodeTypes(
  Object.values(schema.getTypeMap())
    .filter((t) => t instanceof GraphQLObjectType && t.getInterfaces().some((i) => i.name === 'Node'))
    .map((t) => t.name),
);

/*
 * Relay's `id` field on each node type resolves through an async function (the plugin awaits the
 * type's id resolver, then encodes), so every ID in a response cost a promise, its microtasks and
 * the async-hook calls that MikroORM's AsyncLocalStorage turns on: 150 of them in a page of 50
 * sessions with their model and dataset version. Every id resolver here returns the row id
 * itself, so the global ID is encoded at once, exactly as the plugin does (encodeGlobalID of the
 * type name and the id); anything else (a promise) still goes through the plugin's resolver.
 * Only resolvers change: the printed schema stays the same (test/schema-drift.test.ts).
 */
// encodeGlobalID is base64 of the UTF-8 of "Type:id". For printable ASCII (type names and uuids)
// that is btoa's output, which costs about half of Buffer.from(...).toString('base64') here.
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
function fastGlobalId(typename: string, id: string): string {
  const text = `${typename}:${id}`;
  return PRINTABLE_ASCII.test(text) ? btoa(text) : encodeGlobalID(typename, id);
}

if (!builder.options.relay?.encodeGlobalID) {
  for (const type of Object.values(schema.getTypeMap())) {
    if (!(type instanceof GraphQLObjectType) || !type.getInterfaces().some((i) => i.name === 'Node')) continue;
    const field = type.getFields().id;
    const own = (type.extensions as { pothosOptions?: { id?: { resolve?: GraphQLFieldResolver<unknown, unknown> } } })
      .pothosOptions?.id?.resolve;
    const plugin = field?.resolve;
    if (!field || !own || !plugin) continue;
    const typename = type.name;
    field.resolve = (parent, args, ctx, info) => {
      const raw = own(parent, args, ctx, info);
      return typeof raw === 'string' || typeof raw === 'number' || typeof raw === 'bigint'
        ? fastGlobalId(typename, String(raw))
        : plugin(parent, args, ctx, info);
    };
  }
}
