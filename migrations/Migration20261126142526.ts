import { Migration } from '@mikro-orm/migrations';

// Organization-owned tables (those with organization_id), and the organizations table itself.
// test/response-cache.test.ts fails when a table with organization_id lacks these triggers.
const ORG_TABLES = [
  'organizations',
  'memberships',
  'api_keys',
  'compute_profiles',
  'storage_profiles',
  'models',
  'model_versions',
  'datasets',
  'dataset_versions',
  'training_sessions',
  'epoch_metrics',
  'artifacts',
];

/**
 * A per-organization data version, bumped once by every transaction that writes any of the
 * organization's rows. The API reads it in the statement that resolves the caller (no extra round
 * trip) and serves a cached query response only while it is unchanged (src/graphql/response-cache.ts).
 *
 * Row triggers only note the organization in a transaction-local setting; a deferred constraint
 * trigger bumps the noted versions at commit, in organization id order. Bumping at commit keeps the
 * version row locked only while the writer commits (writers of one organization do not hold it
 * through their transactions), and the fixed order means two committing writers cannot deadlock.
 */
export class Migration20261126142526 extends Migration {
  override async up(): Promise<void> {
    // The table is the OrgDataVersion entity (src/modules/orgs/entity.ts); the rest is by hand.
    this.addSql(`create table "org_data_versions" ("organization_id" uuid not null, "version" bigint not null, constraint "org_data_versions_pkey" primary key ("organization_id"));`);
    this.addSql(`create function cvtrain_note_org_change() returns trigger language plpgsql as $$
declare
  noted text := coalesce(current_setting('cvtrain.changed_orgs', true), '');
  before_org text;
  after_org text;
begin
  -- TG_ARGV[0] names the column holding the organization: "id" on organizations itself.
  if TG_ARGV[0] = 'id' then
    if TG_OP <> 'INSERT' then before_org := OLD.id::text; end if;
    if TG_OP <> 'DELETE' then after_org := NEW.id::text; end if;
  else
    if TG_OP <> 'INSERT' then before_org := OLD.organization_id::text; end if;
    if TG_OP <> 'DELETE' then after_org := NEW.organization_id::text; end if;
  end if;
  if before_org is not null and position(before_org in noted) = 0 then
    noted := noted || ',' || before_org;
  end if;
  if after_org is not null and position(after_org in noted) = 0 then
    noted := noted || ',' || after_org;
  end if;
  perform set_config('cvtrain.changed_orgs', noted, true);
  return null;
end $$;`);
    this.addSql(`create function cvtrain_bump_org_versions() returns trigger language plpgsql as $$
declare
  noted text := coalesce(current_setting('cvtrain.changed_orgs', true), '');
begin
  -- Fires once per written row at commit; the first firing bumps every noted organization.
  if noted = '' then return null; end if;
  perform set_config('cvtrain.changed_orgs', '', true);
  insert into org_data_versions as v (organization_id, version)
    select distinct o::uuid, 1 from unnest(string_to_array(ltrim(noted, ','), ',')) as o order by 1
    on conflict (organization_id) do update set version = v.version + 1;
  return null;
end $$;`);
    this.addSql(`create function cvtrain_bump_all_org_versions() returns trigger language plpgsql as $$
begin
  update org_data_versions set version = version + 1;
  return null;
end $$;`);
    for (const table of ORG_TABLES) {
      const column = table === 'organizations' ? 'id' : 'organization_id';
      this.addSql(`create trigger cvtrain_note_org_change after insert or update or delete on "${table}" for each row execute function cvtrain_note_org_change('${column}');`);
      this.addSql(`create constraint trigger cvtrain_bump_org_versions after insert or update or delete on "${table}" deferrable initially deferred for each row execute function cvtrain_bump_org_versions();`);
      this.addSql(`create trigger cvtrain_bump_all_org_versions after truncate on "${table}" for each statement execute function cvtrain_bump_all_org_versions();`);
    }
  }

  override async down(): Promise<void> {
    for (const table of ORG_TABLES) {
      this.addSql(`drop trigger if exists cvtrain_note_org_change on "${table}";`);
      this.addSql(`drop trigger if exists cvtrain_bump_org_versions on "${table}";`);
      this.addSql(`drop trigger if exists cvtrain_bump_all_org_versions on "${table}";`);
    }
    this.addSql(`drop function if exists cvtrain_note_org_change();`);
    this.addSql(`drop function if exists cvtrain_bump_org_versions();`);
    this.addSql(`drop function if exists cvtrain_bump_all_org_versions();`);
    this.addSql(`drop table if exists "org_data_versions" cascade;`);
  }
}
