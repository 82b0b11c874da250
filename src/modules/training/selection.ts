// Look-ahead for session lists: which TrainingSession fields a connection's `edges.node` selects,
// so the list reads only the columns those fields need and fetches the relations they ask for in
// the same statement. Read from the query document only (never from results), so it is the same
// for every request with that document and is worked out once per document.
import { Kind, type FieldNode, type FragmentDefinitionNode, type GraphQLResolveInfo, type SelectionSetNode } from 'graphql';

export interface SessionSelection {
  /** training_sessions columns to read; always includes id and created_at (keyset cursor). */
  columns: readonly string[];
  /** Every column is read: the records are whole and may prime the byId loader. */
  full: boolean;
  model: boolean;
  datasetVersion: boolean;
  latestEpoch: boolean;
}

/** Every column of training_sessions that a TrainingSessionRecord holds (see records.ts). */
export const ALL_SESSION_COLUMNS = [
  'id', 'organization_id', 'model_id', 'dataset_version_id', 'compute_profile_id', 'created_by_id', 'status', 'config',
  'provider', 'external_job_id', 'attempts', 'current_epoch', 'total_epochs', 'progress_fraction', 'attempt',
  'retries_used', 'last_event_seq', 'node_id', 'storage_profile_id', 'last_checkpoint_key', 'cancel_requested_at',
  'error_message', 'error_exit_code', 'error_stderr_tail', 'estimated_cost_usd', 'cost_usd', 'created_at', 'updated_at',
  'queued_at', 'started_at', 'finished_at',
] as const;

const BASE_COLUMNS = ['id', 'created_at'];

/**
 * The columns each TrainingSession field's resolver reads from the record (schema.ts). A field
 * missing here (one added later) makes the list read whole rows, so a forgotten entry costs speed,
 * never correctness. test/dataloader.test.ts checks every field against node(id:).
 */
const FIELD_COLUMNS: Record<string, readonly string[]> = {
  __typename: [],
  id: [],
  createdAt: [],
  status: ['status'],
  model: ['model_id'],
  datasetVersion: ['dataset_version_id'],
  computeProfile: ['compute_profile_id'],
  provider: ['provider'],
  externalJobId: ['external_job_id'],
  config: ['config'],
  attempts: ['attempts'],
  progress: ['current_epoch', 'total_epochs', 'progress_fraction'],
  // These resolve through services keyed by the session id.
  epochs: [],
  latestEpoch: [],
  artifacts: [],
  error: ['error_message', 'error_exit_code', 'error_stderr_tail'],
  cancelRequested: ['cancel_requested_at'],
  attempt: ['attempt'],
  estimatedCostUsd: ['estimated_cost_usd'],
  costUsd: ['cost_usd'],
  queuedAt: ['queued_at'],
  startedAt: ['started_at'],
  finishedAt: ['finished_at'],
};

export const FULL_SELECTION: SessionSelection = {
  columns: ALL_SESSION_COLUMNS,
  full: true,
  model: false,
  datasetVersion: false,
  latestEpoch: false,
};

type Fragments = Record<string, FragmentDefinitionNode>;

/**
 * Calls visit for each field of a selection set, through inline fragments and fragment spreads
 * whatever their type condition (a superset is safe). @skip/@include are ignored the same way:
 * a conditionally skipped field still counts as selected. Returns false when a fragment is missing.
 */
function eachField(set: SelectionSetNode | undefined, fragments: Fragments, visit: (f: FieldNode) => void): boolean {
  if (!set) return true;
  for (const sel of set.selections) {
    if (sel.kind === Kind.FIELD) visit(sel);
    else if (sel.kind === Kind.INLINE_FRAGMENT) {
      if (!eachField(sel.selectionSet, fragments, visit)) return false;
    } else {
      const fragment = fragments[sel.name.value];
      if (!fragment || !eachField(fragment.selectionSet, fragments, visit)) return false;
    }
  }
  return true;
}

function analyse(fieldNodes: readonly FieldNode[], fragments: Fragments): SessionSelection {
  const columns = new Set<string>(BASE_COLUMNS);
  const out = { model: false, datasetVersion: false, latestEpoch: false };
  let full = false;
  const onNodeField = (f: FieldNode) => {
    const name = f.name.value;
    const needs = FIELD_COLUMNS[name];
    if (!needs) {
      full = true;
      return;
    }
    for (const c of needs) columns.add(c);
    if (name === 'model' || name === 'datasetVersion' || name === 'latestEpoch') out[name] = true;
  };
  let complete = true;
  for (const conn of fieldNodes) {
    complete &&= eachField(conn.selectionSet, fragments, (edges) => {
      if (edges.name.value !== 'edges') return;
      complete &&= eachField(edges.selectionSet, fragments, (node) => {
        if (node.name.value !== 'node') return;
        complete &&= eachField(node.selectionSet, fragments, onNodeField);
      });
    });
  }
  if (full || !complete || columns.size === ALL_SESSION_COLUMNS.length) return { ...FULL_SELECTION, ...out };
  // Column order follows the table's, so equal selections give the same SQL text (one prepared statement).
  return { columns: ALL_SESSION_COLUMNS.filter((c) => columns.has(c)), full: false, ...out };
}

// Field nodes belong to a parsed document, which yoga caches and graphql-jit compiles once, so the
// analysis is kept per node (a WeakMap: documents that leave the cache take their entries along).
const memo = new WeakMap<FieldNode, { nodes: readonly FieldNode[]; selection: SessionSelection }>();

export function sessionSelection(info: Pick<GraphQLResolveInfo, 'fieldNodes' | 'fragments'> | undefined): SessionSelection {
  if (!info?.fieldNodes?.length) return FULL_SELECTION;
  const first = info.fieldNodes[0];
  const hit = memo.get(first);
  if (hit && hit.nodes.length === info.fieldNodes.length && hit.nodes.every((n, i) => n === info.fieldNodes[i])) {
    return hit.selection;
  }
  const selection = analyse(info.fieldNodes, info.fragments ?? {});
  memo.set(first, { nodes: [...info.fieldNodes], selection });
  return selection;
}
