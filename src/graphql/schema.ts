// The one place the schema is assembled: import each domain's types, then build.
import { builder } from './builder.js';
import './scalars.js';
import './errors.js';
import '../modules/orgs/schema.js';

export const schema = builder.toSchema({ sortSchema: true });
