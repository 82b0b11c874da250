import { Migration } from '@mikro-orm/migrations';

export class Migration20261126151521 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`create index "training_sessions_running_node_id" on "training_sessions" ("node_id") where "status" = 'RUNNING';`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index "training_sessions_running_node_id";`);
  }

}
