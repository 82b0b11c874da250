import { Migration } from '@mikro-orm/migrations';

export class Migration20261204190849 extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "models" drop constraint if exists "models_framework_check";`);

    this.addSql(`alter table "models" add constraint "models_framework_check" check("framework" in ('TORCHVISION', 'ULTRALYTICS', 'TRANSFORMERS', 'CUSTOM', 'CVTRAIN'));`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "models" drop constraint if exists "models_framework_check";`);

    this.addSql(`alter table "models" add constraint "models_framework_check" check("framework" in ('TORCHVISION', 'ULTRALYTICS', 'TRANSFORMERS', 'CUSTOM'));`);
  }

}
