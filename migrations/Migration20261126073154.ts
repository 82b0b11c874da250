import { Migration } from '@mikro-orm/migrations';

export class Migration20261126073154 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create table "gpu_nodes" ("id" varchar(128) not null, "host" varchar(255) not null, "status" text check ("status" in ('ONLINE', 'DRAINING', 'OFFLINE')) not null default 'ONLINE', "gpus" jsonb not null, "slots" int not null, "running_session_ids" jsonb not null, "version" varchar(64) null, "last_heartbeat_at" timestamptz not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, constraint "gpu_nodes_pkey" primary key ("id"));`);

    this.addSql(`create table "organizations" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "name" varchar(120) not null, constraint "organizations_pkey" primary key ("id"));`);

    this.addSql(`create table "compute_profiles" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "name" varchar(120) not null, "provider" text check ("provider" in ('PLATFORM', 'SAGEMAKER', 'VERTEX_AI', 'AZURE_ML', 'KUBERNETES')) not null, "strategy" text check ("strategy" in ('QUEUE', 'CHEAPEST', 'FASTEST', 'PREFERRED')) not null, "config" jsonb not null, "credentials_ciphertext" text null, "credentials_hint" varchar(64) null, "fallback_profile_ids" jsonb not null, "max_concurrent_jobs" int null, "max_cost_per_session_usd" double precision null, "is_default" boolean not null default false, constraint "compute_profiles_pkey" primary key ("id"));`);
    this.addSql(`create unique index "compute_profiles_one_default_per_org" on "compute_profiles" ("organization_id") where "is_default";`);
    this.addSql(`alter table "compute_profiles" add constraint "compute_profiles_organization_id_name_unique" unique ("organization_id", "name");`);

    this.addSql(`create table "storage_profiles" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "name" varchar(120) not null, "kind" text check ("kind" in ('S3', 'AZURE')) not null, "config" jsonb not null, "credentials_ciphertext" text not null, "credentials_hint" varchar(64) not null, "is_default" boolean not null default false, constraint "storage_profiles_pkey" primary key ("id"));`);
    this.addSql(`create unique index "storage_profiles_one_default_per_org" on "storage_profiles" ("organization_id") where "is_default";`);
    this.addSql(`alter table "storage_profiles" add constraint "storage_profiles_organization_id_name_unique" unique ("organization_id", "name");`);

    this.addSql(`create table "users" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "email" varchar(254) not null, "password_hash" text not null, "last_sign_in_at" timestamptz null, constraint "users_pkey" primary key ("id"));`);
    this.addSql(`alter table "users" add constraint "users_email_unique" unique ("email");`);

    this.addSql(`create table "models" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "created_by_id" uuid null, "name" varchar(120) not null, "description" text null, "task" text check ("task" in ('OBJECT_DETECTION', 'CLASSIFICATION')) not null, "framework" text check ("framework" in ('TORCHVISION', 'ULTRALYTICS', 'TRANSFORMERS', 'CUSTOM')) not null, "architecture" varchar(120) not null, "archived_at" timestamptz null, constraint "models_pkey" primary key ("id"));`);
    this.addSql(`alter table "models" add constraint "models_organization_id_name_unique" unique ("organization_id", "name");`);

    this.addSql(`create table "model_versions" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "model_id" uuid not null, "version" int not null, "session_id" uuid null, "metrics" jsonb not null, constraint "model_versions_pkey" primary key ("id"));`);
    this.addSql(`create index "model_versions_organization_id_index" on "model_versions" ("organization_id");`);
    this.addSql(`alter table "model_versions" add constraint "model_versions_model_id_version_unique" unique ("model_id", "version");`);

    this.addSql(`create table "memberships" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "user_id" uuid not null, "role" text check ("role" in ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')) not null, constraint "memberships_pkey" primary key ("id"));`);
    this.addSql(`create index "memberships_user_id_index" on "memberships" ("user_id");`);
    this.addSql(`alter table "memberships" add constraint "memberships_organization_id_user_id_unique" unique ("organization_id", "user_id");`);

    this.addSql(`create table "datasets" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "created_by_id" uuid null, "name" varchar(120) not null, "description" text null, "task" text check ("task" in ('OBJECT_DETECTION', 'CLASSIFICATION')) not null, constraint "datasets_pkey" primary key ("id"));`);
    this.addSql(`alter table "datasets" add constraint "datasets_organization_id_name_unique" unique ("organization_id", "name");`);

    this.addSql(`create table "dataset_versions" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "dataset_id" uuid not null, "version" int not null, "format" text check ("format" in ('YOLO', 'COCO', 'IMAGE_FOLDER')) not null, "filename" varchar(255) not null, "archive_key" varchar(1024) not null, "storage_profile_id" uuid null, "sha256" varchar(64) null, "size_bytes" bigint null, "class_names" jsonb null, "splits" jsonb null, "status" text check ("status" in ('UPLOADING', 'VALIDATING', 'READY', 'INVALID')) not null default 'UPLOADING', "problems" jsonb null, "finalized_at" timestamptz null, constraint "dataset_versions_pkey" primary key ("id"));`);
    this.addSql(`create index "dataset_versions_organization_id_index" on "dataset_versions" ("organization_id");`);
    this.addSql(`alter table "dataset_versions" add constraint "dataset_versions_dataset_id_version_unique" unique ("dataset_id", "version");`);

    this.addSql(`create table "training_sessions" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "created_by_id" uuid null, "model_id" uuid not null, "dataset_version_id" uuid not null, "compute_profile_id" uuid null, "status" text check ("status" in ('PENDING', 'QUEUED', 'RUNNING', 'PREEMPTED', 'PAUSED_BUDGET', 'COMPLETED', 'FAILED', 'CANCELLED')) not null default 'PENDING', "config" jsonb not null, "provider" text check ("provider" in ('PLATFORM', 'SAGEMAKER', 'VERTEX_AI', 'AZURE_ML', 'KUBERNETES')) null, "external_job_id" varchar(255) null, "attempts" jsonb not null, "current_epoch" int not null default 0, "total_epochs" int not null, "progress_fraction" double precision not null default 0, "attempt" int not null default 0, "retries_used" int not null default 0, "last_event_seq" int not null default 0, "node_id" varchar(128) null, "storage_profile_id" uuid null, "last_checkpoint_key" varchar(1024) null, "cancel_requested_at" timestamptz null, "error_message" text null, "error_exit_code" int null, "error_stderr_tail" text null, "estimated_cost_usd" double precision null, "cost_usd" double precision null, "queued_at" timestamptz null, "started_at" timestamptz null, "finished_at" timestamptz null, constraint "training_sessions_pkey" primary key ("id"));`);
    this.addSql(`create index "training_sessions_dataset_version_id_index" on "training_sessions" ("dataset_version_id");`);
    this.addSql(`create index "training_sessions_compute_profile_id_index" on "training_sessions" ("compute_profile_id");`);
    this.addSql(`create index "training_sessions_organization_id_created_at_id_index" on "training_sessions" ("organization_id", "created_at", "id");`);
    this.addSql(`create index "training_sessions_organization_id_status_index" on "training_sessions" ("organization_id", "status");`);
    this.addSql(`create index "training_sessions_model_id_created_at_index" on "training_sessions" ("model_id", "created_at");`);

    this.addSql(`create table "epoch_metrics" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "session_id" uuid not null, "epoch" int not null, "metrics" jsonb not null, constraint "epoch_metrics_pkey" primary key ("id"));`);
    this.addSql(`create index "epoch_metrics_organization_id_index" on "epoch_metrics" ("organization_id");`);
    this.addSql(`alter table "epoch_metrics" add constraint "epoch_metrics_session_id_epoch_unique" unique ("session_id", "epoch");`);

    this.addSql(`create table "artifacts" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "session_id" uuid null, "model_version_id" uuid null, "kind" text check ("kind" in ('CHECKPOINT', 'WEIGHTS', 'ONNX', 'METRICS', 'LOGS')) not null, "storage_key" varchar(1024) not null, "size_bytes" bigint not null, "sha256" varchar(64) not null, constraint "artifacts_pkey" primary key ("id"));`);
    this.addSql(`create index "artifacts_organization_id_index" on "artifacts" ("organization_id");`);
    this.addSql(`create index "artifacts_session_id_index" on "artifacts" ("session_id");`);
    this.addSql(`create index "artifacts_model_version_id_index" on "artifacts" ("model_version_id");`);

    this.addSql(`create table "api_keys" ("id" uuid not null, "created_at" timestamptz not null, "updated_at" timestamptz not null, "organization_id" uuid not null, "created_by_id" uuid null, "name" varchar(120) not null, "role" text check ("role" in ('OWNER', 'ADMIN', 'MEMBER', 'VIEWER')) not null, "secret_hash" varchar(64) not null, "hint" varchar(16) not null, "persisted_only" boolean not null default false, "last_used_at" timestamptz null, "revoked_at" timestamptz null, constraint "api_keys_pkey" primary key ("id"));`);
    this.addSql(`create index "api_keys_organization_id_index" on "api_keys" ("organization_id");`);

    this.addSql(`alter table "compute_profiles" add constraint "compute_profiles_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "storage_profiles" add constraint "storage_profiles_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "models" add constraint "models_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "models" add constraint "models_created_by_id_foreign" foreign key ("created_by_id") references "users" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "model_versions" add constraint "model_versions_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "model_versions" add constraint "model_versions_model_id_foreign" foreign key ("model_id") references "models" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "memberships" add constraint "memberships_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "memberships" add constraint "memberships_user_id_foreign" foreign key ("user_id") references "users" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "datasets" add constraint "datasets_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "datasets" add constraint "datasets_created_by_id_foreign" foreign key ("created_by_id") references "users" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "dataset_versions" add constraint "dataset_versions_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "dataset_versions" add constraint "dataset_versions_dataset_id_foreign" foreign key ("dataset_id") references "datasets" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "training_sessions" add constraint "training_sessions_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "training_sessions" add constraint "training_sessions_created_by_id_foreign" foreign key ("created_by_id") references "users" ("id") on update cascade on delete set null;`);
    this.addSql(`alter table "training_sessions" add constraint "training_sessions_model_id_foreign" foreign key ("model_id") references "models" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "training_sessions" add constraint "training_sessions_dataset_version_id_foreign" foreign key ("dataset_version_id") references "dataset_versions" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "training_sessions" add constraint "training_sessions_compute_profile_id_foreign" foreign key ("compute_profile_id") references "compute_profiles" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "epoch_metrics" add constraint "epoch_metrics_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "epoch_metrics" add constraint "epoch_metrics_session_id_foreign" foreign key ("session_id") references "training_sessions" ("id") on update cascade on delete cascade;`);

    this.addSql(`alter table "artifacts" add constraint "artifacts_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "artifacts" add constraint "artifacts_session_id_foreign" foreign key ("session_id") references "training_sessions" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "artifacts" add constraint "artifacts_model_version_id_foreign" foreign key ("model_version_id") references "model_versions" ("id") on update cascade on delete set null;`);

    this.addSql(`alter table "api_keys" add constraint "api_keys_organization_id_foreign" foreign key ("organization_id") references "organizations" ("id") on update cascade on delete cascade;`);
    this.addSql(`alter table "api_keys" add constraint "api_keys_created_by_id_foreign" foreign key ("created_by_id") references "users" ("id") on update cascade on delete set null;`);
  }

}
