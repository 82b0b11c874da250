// Limits applied to every GraphQL document before any real work is done on it (HTTP and websocket
// alike: both go through yoga's enveloped parse), and the parsed-document cache bounded in bytes.
//
// Why: a parsed document keeps every token of its source (graphql-js Location objects link the
// whole token list), about 40 MB for a 1 MB document of repeated fields; yoga's own cache kept 1,024
// of them (and 1,024 parse errors, each holding its source) with no byte bound, so distinct 1 MB
// documents from anonymous callers exhausted the heap. Deep nesting overflowed graphql-js's
// recursive parser and validators (RangeError, HTTP 500). The token and nesting limits refuse such
// documents after lexing at most `maxTokens` tokens, before a parser, validator or cache sees them.
import {
  GraphQLError,
  Kind,
  Lexer,
  parse,
  Source,
  TokenKind,
  visit,
  type DocumentNode,
  type FragmentDefinitionNode,
  type SelectionSetNode,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { RequestContext } from './context.js';

export interface DocumentLimits {
  /** Most lexical tokens in one document (graphql-armor's max-tokens; comments are not tokens). */
  maxTokens: number;
  /** Deepest nesting of `{`, `[` and `(` in a document, and of arrays and objects in variables. */
  maxNesting: number;
  /** Most fields of one response name in one selection set, fragments included. */
  maxFieldRepeats: number;
  /** Byte budget of the parsed-document cache (0: no cache). */
  documentCacheBytes: number;
  /** Introspection for callers without credentials. */
  anonymousIntrospection: boolean;
}

/** A typed refusal: HTTP 400 (yoga's status for parse and validation errors), never a 500. */
export function limitError(limit: string, maximum: number, message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: 'LIMIT_EXCEEDED', limit, maximum, http: { status: 400 } } });
}

/**
 * Lexes the source (no AST is built) and refuses it at the first token past the limit or the first
 * bracket past the nesting limit, so refusing a 1 MB document costs at most maxTokens tokens.
 * Returns the token count, which sizes the document in the cache.
 */
export function checkDocumentSource(source: string, limits: Pick<DocumentLimits, 'maxTokens' | 'maxNesting'>): number {
  const lexer = new Lexer(new Source(source));
  let tokens = 0;
  let nesting = 0;
  // Lexer syntax errors (an unterminated string) surface as the parser would report them.
  for (let token = lexer.advance(); token.kind !== TokenKind.EOF; token = lexer.advance()) {
    if (++tokens > limits.maxTokens) {
      throw limitError('maxTokens', limits.maxTokens, `Syntax Error: Document exceeds the limit of ${limits.maxTokens} tokens.`);
    }
    const kind = token.kind;
    if (kind === TokenKind.BRACE_L || kind === TokenKind.BRACKET_L || kind === TokenKind.PAREN_L) {
      if (++nesting > limits.maxNesting) {
        throw limitError(
          'maxNesting',
          limits.maxNesting,
          `Syntax Error: Document nests selections, arguments or values deeper than ${limits.maxNesting} levels.`,
        );
      }
    } else if (kind === TokenKind.BRACE_R || kind === TokenKind.BRACKET_R || kind === TokenKind.PAREN_R) {
      nesting--;
    }
  }
  return tokens;
}

/**
 * Refuses a document in which one response path (`viewer.organization.id`) is selected more than
 * `max` times, counting what inline fragments and fragment spreads bring in and multiplying through
 * nesting. graphql-js's OverlappingFieldsCanBeMerged compares every pair of fields merged into one
 * response path, each pair with its sub-selections: 500 `viewer { role }` (2,000 tokens) took ~1 s,
 * and 18 `viewer` each holding 18 `organization` 0.7 s of validation plus 0.3 s of JIT compilation.
 * Iterative; it stops at the first path over the limit, so it visits at most tokens x max fields.
 */
export function checkFieldRepeats(document: DocumentNode, max: number): void {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) {
    if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
  }
  const counts = new Map<string, number>();
  const pending: [SelectionSetNode, string, Set<string>][] = [];
  for (const def of document.definitions) {
    if (def.kind === Kind.OPERATION_DEFINITION) pending.push([def.selectionSet, '', new Set()]);
  }
  while (pending.length) {
    const [set, path, spread] = pending.pop()!;
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        const key = `${path}.${selection.alias?.value ?? selection.name.value}`;
        const n = (counts.get(key) ?? 0) + 1;
        if (n > max) {
          throw limitError('maxFieldRepeats', max, `Syntax Error: "${key.slice(1)}" is selected more than ${max} times.`);
        }
        counts.set(key, n);
        if (selection.selectionSet) pending.push([selection.selectionSet, key, new Set()]);
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        pending.push([selection.selectionSet, path, spread]);
      } else {
        const fragment = fragments.get(selection.name.value);
        // A fragment spread twice into one selection set merges once (and cycles stop here; the
        // NoFragmentCycles rule refuses them later).
        if (fragment && !spread.has(fragment.name.value)) {
          spread.add(fragment.name.value);
          pending.push([fragment.selectionSet, path, spread]);
        }
      }
    }
  }
}

/**
 * Refuses variables nested deeper than the limit. JSON.parse is iterative, but JSON.stringify (the
 * response cache's key, subscription sharing), graphql-js's input coercion and the JSON scalar all
 * recurse, so a 100,000-deep array in the variables would overflow the stack there.
 */
export function checkVariablesNesting(variables: unknown, maxNesting: number): void {
  if (variables === null || typeof variables !== 'object') return;
  // Explicit stack instead of recursion: the point is not to overflow while measuring.
  const stack: [unknown, number][] = [[variables, 0]];
  while (stack.length) {
    const [value, depth] = stack.pop()!;
    if (depth > maxNesting) {
      throw limitError('maxNesting', maxNesting, `Variables nest arrays or objects deeper than ${maxNesting} levels.`);
    }
    const children = Array.isArray(value) ? value : Object.values(value as object);
    for (const child of children) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
}

/**
 * Least-recently-used cache of parsed documents keyed by their text, bounded in entries and in
 * estimated bytes (the text, twice as V8 may keep it two-byte, plus the AST and tokens it holds).
 */
export class DocumentCache {
  // Measured: ~40 MB of heap for a 1 MB document of 90,000 fields (about 450 bytes per token).
  static readonly BYTES_PER_TOKEN = 500;
  private readonly entries = new Map<string, { document: DocumentNode; bytes: number }>();
  private readonly tokenCounts = new WeakMap<DocumentNode, number>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly maxEntries = 1024,
  ) {}

  /** Remembers how many tokens a freshly parsed document has, for `set`. */
  noteTokens(document: DocumentNode, tokens: number) {
    this.tokenCounts.set(document, tokens);
  }

  has(source: string): boolean {
    return this.entries.has(source);
  }

  get(source: string): DocumentNode | undefined {
    const entry = this.entries.get(source);
    if (!entry) return undefined;
    // Map order is insertion order: re-inserting makes the first key the least recently used.
    this.entries.delete(source);
    this.entries.set(source, entry);
    return entry.document;
  }

  set(source: string, document: DocumentNode) {
    const tokens = this.tokenCounts.get(document);
    // Only documents this module parsed (and so measured) are cached.
    if (tokens === undefined) return;
    const bytes = source.length * 2 + tokens * DocumentCache.BYTES_PER_TOKEN;
    // One entry may not take more than 1/64 of the budget (512 KiB of 32 MiB; real documents are a
    // few KiB): a stream of large distinct documents must not evict every small, frequently used one.
    if (bytes > this.maxBytes / 64) return;
    const old = this.entries.get(source);
    if (old) {
      this.entries.delete(source);
      this.bytes -= old.bytes;
    }
    this.entries.set(source, { document, bytes });
    this.bytes += bytes;
    for (const [key, entry] of this.entries) {
      if (this.bytes <= this.maxBytes && this.entries.size <= this.maxEntries) break;
      this.entries.delete(key);
      this.bytes -= entry.bytes;
    }
  }

  stats() {
    return { entries: this.entries.size, bytes: this.bytes };
  }
}

/** Yoga's error cache, which kept up to 1,024 parse errors each holding its source: nothing is kept. */
export const noErrorCache = { get: (): undefined => undefined, set: (): void => undefined };

const introspectionDocuments = new WeakMap<DocumentNode, boolean>();
function isIntrospection(document: DocumentNode): boolean {
  let found = introspectionDocuments.get(document);
  if (found === undefined) {
    found = false;
    // Fragments included; visit() is iterative and the document is already bounded.
    visit(document, {
      Field(node) {
        if (node.name.value === '__schema' || node.name.value === '__type') {
          found = true;
          return false;
        }
        return undefined;
      },
    });
    introspectionDocuments.set(document, found);
  }
  return found;
}

export function createDocumentLimits(limits: DocumentLimits) {
  const documentCache = new DocumentCache(limits.documentCacheBytes);
  const limitedParse = (source: string | Source, options?: Parameters<typeof parse>[1]) => {
    const text = typeof source === 'string' ? source : source.body;
    const tokens = checkDocumentSource(text, limits);
    try {
      const document = parse(source, { ...options, maxTokens: limits.maxTokens });
      checkFieldRepeats(document, limits.maxFieldRepeats);
      documentCache.noteTokens(document, tokens);
      return document;
    } catch (err) {
      if (err instanceof GraphQLError) throw err;
      // Defence in depth: the limits above keep recursion shallow, but a stack overflow must still
      // be a client's refusal, not a 500.
      if (err instanceof RangeError) throw limitError('maxNesting', limits.maxNesting, 'Syntax Error: Document is nested too deeply.');
      throw err;
    }
  };

  const plugin: Plugin<{ params?: { variables?: unknown } }> = {
    onParse({ context, params, setParseFn }) {
      checkVariablesNesting(context.params?.variables, limits.maxNesting);
      // A cached document passed these checks when it was parsed; yoga's cache (later in the plugin
      // list) answers it.
      if (documentCache.has(params.source.toString())) return;
      setParseFn(limitedParse);
    },
    onExecute({ args, setResultAndStopExecution }) {
      if (limits.anonymousIntrospection || !isIntrospection(args.document)) return;
      const principal = (args.contextValue as Partial<RequestContext>).principal;
      const refuse = () =>
        setResultAndStopExecution({
          errors: [
            new GraphQLError('Introspection needs a signed-in caller in this deployment (CVTRAIN_INTROSPECTION).', {
              extensions: { code: 'FORBIDDEN' },
            }),
          ],
        });
      if (!principal) return refuse();
      return principal().then((p) => {
        if (!p) refuse();
      }) as unknown as void;
    },
  };
  return { plugin, documentCache, errorCache: noErrorCache };
}
