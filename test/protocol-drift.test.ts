// protocol/types.ts follows schema/*.json field by field. The types are read with the TypeScript
// compiler (the same checker tsc uses) and compared with the schemas: the same property names,
// the same required ones, the same kinds of value (string, number, null, ...), the same literal
// sets for const and enum, open or closed objects alike, and every union variant on both sides.
// A field added, dropped or changed on one side only fails here, naming the path.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { readSchema } from '../protocol/validate.js';

type Json = Record<string, unknown>;
const typesFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../protocol/types.ts');

const schemas: Record<string, Json> = {
  jobPayload: readSchema('job-payload.schema.json'),
  envelope: readSchema('event-envelope.schema.json'),
  trainerEvents: readSchema('trainer-events.schema.json'),
};
const byId = new Map(Object.values(schemas).map((s) => [s.$id as string, s]));

// ---------------------------------------------------------------- the schema side

/** A schema node with the document its local `#/$defs/...` references point into. */
interface Node {
  node: Json;
  root: Json;
}

function deref({ node, root }: Node): Node | null {
  const ref = node.$ref as string | undefined;
  if (!ref) return null;
  if (ref.startsWith('#/')) {
    const target = ref
      .slice(2)
      .split('/')
      .reduce<unknown>((o, k) => (o as Json)[k], root) as Json;
    return { node: target, root };
  }
  const other = byId.get(ref);
  if (!other) throw new Error(`unknown $ref ${ref}`);
  return { node: other, root: other };
}

/** Properties and required names of an object node, those of a `$ref`'d base included. */
function objectShape(n: Node): { props: Map<string, Node>; required: Set<string> } | null {
  const base = deref(n);
  const shape = base ? objectShape(base) : null;
  const own = n.node.properties as Record<string, Json> | undefined;
  if (!own && !shape) return null;
  const props = new Map(shape?.props ?? []);
  for (const [k, v] of Object.entries(own ?? {})) props.set(k, { node: { ...(props.get(k)?.node ?? {}), ...v }, root: n.root });
  const required = new Set([...(shape?.required ?? []), ...((n.node.required as string[] | undefined) ?? [])]);
  return { props, required };
}

const kindOfValue = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function schemaKinds(n: Node): string[] {
  const { node } = n;
  if ('const' in node) return [kindOfValue(node.const)];
  if (Array.isArray(node.enum)) return [...new Set(node.enum.map(kindOfValue))].sort();
  if (node.type !== undefined) {
    const types = Array.isArray(node.type) ? node.type : [node.type];
    return [...new Set(types.map((t: string) => (t === 'integer' ? 'number' : t)))].sort();
  }
  const base = deref(n);
  if (base) return schemaKinds(base);
  if (node.properties) return ['object'];
  return ['any'];
}

function schemaLiterals(n: Node): string[] | null {
  if ('const' in n.node) return [JSON.stringify(n.node.const)];
  if (Array.isArray(n.node.enum)) return n.node.enum.map((v) => JSON.stringify(v)).sort();
  const base = deref(n);
  return base ? schemaLiterals(base) : null;
}

const isClosed = (n: Node) => n.node.additionalProperties === false || n.node.unevaluatedProperties === false;

// ---------------------------------------------------------------- the TypeScript side

const program = ts.createProgram([typesFile], {
  strict: true,
  noEmit: true,
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  types: [],
});
const checker = program.getTypeChecker();
const moduleSymbol = checker.getSymbolAtLocation(program.getSourceFile(typesFile)!)!;
const exported = new Map(checker.getExportsOfModule(moduleSymbol).map((s) => [s.name, s]));

function tsType(name: string): ts.Type {
  const symbol = exported.get(name);
  if (!symbol) throw new Error(`protocol/types.ts exports no ${name}`);
  return checker.getDeclaredTypeOfSymbol(symbol);
}

/** The union's members, `undefined` (what an optional property adds) left out. */
const parts = (t: ts.Type) => (t.isUnion() ? t.types : [t]).filter((p) => !(p.flags & ts.TypeFlags.Undefined));

function tsKinds(t: ts.Type): string[] {
  const kinds = parts(t).map((p) => {
    if (p.flags & ts.TypeFlags.StringLike) return 'string';
    if (p.flags & ts.TypeFlags.NumberLike) return 'number';
    if (p.flags & ts.TypeFlags.BooleanLike) return 'boolean';
    if (p.flags & ts.TypeFlags.Null) return 'null';
    if (p.flags & ts.TypeFlags.Object) return checker.isArrayType(p) ? 'array' : 'object';
    return 'any'; // a type parameter or unknown: the schema side decides
  });
  return [...new Set(kinds)].sort();
}

function tsLiterals(t: ts.Type): string[] | null {
  const ps = parts(t).filter((p) => !(p.flags & ts.TypeFlags.Null));
  if (ps.length === 0 || !ps.every((p) => p.isLiteral() || p.flags & ts.TypeFlags.BooleanLiteral)) return null;
  // `boolean` is the union true | false to the checker; it is no literal set.
  if (ps.length === 2 && ps.every((p) => p.flags & ts.TypeFlags.BooleanLiteral)) return null;
  return ps.map((p) => (p.isStringLiteral() ? JSON.stringify(p.value) : checker.typeToString(p))).sort();
}

const nonNullObject = (t: ts.Type) => parts(t).find((p) => p.flags & ts.TypeFlags.Object)!;

// ---------------------------------------------------------------- the comparison

/** Every difference between a TypeScript object type and a schema object node, as paths. */
function differences(t: ts.Type, n: Node, at: string): string[] {
  const out: string[] = [];
  const stringIndex = checker.getIndexInfoOfType(t, ts.IndexKind.String);
  const shape = objectShape(n);
  if (!shape) {
    // A map (additionalProperties: {schema}) or a free-form object, maybe behind a $ref.
    let map: Node = n;
    while (map.node.additionalProperties === undefined && deref(map)) map = deref(map)!;
    const values = map.node.additionalProperties;
    if (values && typeof values === 'object') {
      if (!stringIndex) out.push(`${at}: the schema is a map, the type has no index signature`);
      else if (tsKinds(stringIndex.type).join() !== schemaKinds({ node: values as Json, root: n.root }).join()) {
        out.push(`${at}[key]: type ${tsKinds(stringIndex.type)} vs schema ${schemaKinds({ node: values as Json, root: n.root })}`);
      }
    }
    return out;
  }
  if (isClosed(n) === Boolean(stringIndex)) {
    out.push(`${at}: the schema is ${isClosed(n) ? 'closed' : 'open'} but the type ${stringIndex ? 'has' : 'has no'} index signature`);
  }
  const props = new Map(checker.getPropertiesOfType(t).map((p) => [p.name, p]));
  for (const name of shape.props.keys()) if (!props.has(name)) out.push(`${at}.${name}: in the schema, not in the type`);
  for (const name of props.keys()) if (!shape.props.has(name)) out.push(`${at}.${name}: in the type, not in the schema`);
  for (const [name, node] of shape.props) {
    const prop = props.get(name);
    if (!prop) continue;
    const where = `${at}.${name}`;
    const optional = Boolean(prop.flags & ts.SymbolFlags.Optional);
    if (optional === shape.required.has(name)) out.push(`${where}: ${optional ? 'optional' : 'required'} in the type, not in the schema`);
    const type = checker.getTypeOfSymbol(prop);
    const kinds = tsKinds(type);
    if (!kinds.includes('any') && kinds.join() !== schemaKinds(node).join()) {
      out.push(`${where}: type ${kinds} vs schema ${schemaKinds(node)}`);
    }
    const literals = schemaLiterals(node);
    if (JSON.stringify(literals) !== JSON.stringify(tsLiterals(type))) {
      out.push(`${where}: values ${tsLiterals(type) ?? 'any'} in the type vs ${literals ?? 'any'} in the schema`);
    }
    if (kinds.includes('object') && schemaKinds(node).includes('object')) {
      out.push(...differences(nonNullObject(type), node, where));
    }
  }
  return out;
}

/** A union type against a schema `oneOf`, variants matched by their `type` constant. */
function unionDifferences(unionName: string, variants: Node[]): string[] {
  const union = tsType(unionName);
  const typeOf = (t: ts.Type) => tsLiterals(checker.getTypeOfSymbol(t.getProperty('type')!))![0]!;
  const inType = new Map(parts(union).map((t) => [typeOf(t), t]));
  const resolved = variants.map((v) => deref(v) ?? v);
  const schema = new Map(resolved.map((v) => [schemaLiterals(objectShape(v)!.props.get('type')!)![0]!, v]));
  const out: string[] = [];
  for (const k of schema.keys()) if (!inType.has(k)) out.push(`${unionName}: no variant for ${k}`);
  for (const k of inType.keys()) if (!schema.has(k)) out.push(`${unionName}: variant ${k} is not in the schema`);
  for (const [k, t] of inType) if (schema.has(k)) out.push(...differences(t, schema.get(k)!, checker.typeToString(t)));
  return out;
}

const root = (s: Json): Node => ({ node: s, root: s });

describe('protocol/types.ts follows schema/*.json', () => {
  it('JobPayload (dataset, requirements and config included) is job-payload.schema.json', () => {
    expect(differences(tsType('JobPayload'), root(schemas.jobPayload!), 'JobPayload')).toEqual([]);
  });

  it('Envelope and UploadRef are event-envelope.schema.json', () => {
    expect(differences(tsType('Envelope'), root(schemas.envelope!), 'Envelope')).toEqual([]);
  });

  it('NodeEvent has the variants of the envelope schema’s nodeEvent, field by field', () => {
    const envelope = root(schemas.envelope!);
    const nodeEvent = ((envelope.node.$defs as Json).nodeEvent as Json).oneOf as Json[];
    expect(unionDifferences('NodeEvent', nodeEvent.map((node) => ({ node, root: envelope.root })))).toEqual([]);
  });

  it('TrainerEvent has the variants of trainer-events.schema.json, field by field', () => {
    const events = root(schemas.trainerEvents!);
    const variants = (events.node.oneOf as Json[]).map((node) => ({ node, root: events.root }));
    expect(unionDifferences('TrainerEvent', variants)).toEqual([]);
  });

  it('the comparison sees a drift (a schema with one field more fails)', () => {
    const changed = structuredClone(schemas.jobPayload!);
    const dataset = (changed.properties as Record<string, Json>).dataset!;
    (dataset.properties as Json).filename = { type: 'string' };
    (dataset.required as string[]).push('filename');
    expect(differences(tsType('JobPayload'), root(changed), 'JobPayload')).toEqual(['JobPayload.dataset.filename: in the schema, not in the type']);
  });
});
