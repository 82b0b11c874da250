import { Migration } from '@mikro-orm/migrations';

// Sessions written before this kept created_at in microseconds (PostgreSQL's now()), while their
// connection cursors carry milliseconds: truncated here so old rows page like new ones
// (src/modules/training/lifecycle.ts insertSession now writes milliseconds). Data only; no
// schema change, so the snapshot is unchanged. The microseconds cannot be restored by down().
export class Migration20261204211500 extends Migration {
  override async up(): Promise<void> {
    this.addSql(
      `update "training_sessions" set "created_at" = date_trunc('milliseconds', "created_at") where "created_at" <> date_trunc('milliseconds', "created_at");`,
    );
  }

  override async down(): Promise<void> {}
}
