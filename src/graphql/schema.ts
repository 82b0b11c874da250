// The one place the schema is assembled: import each domain's types, then build.
import { builder } from './builder.js';
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
