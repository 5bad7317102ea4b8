import { type Kysely, type Migration, type MigrationProvider, Migrator } from "kysely";

/**
 * Numbered migrations, in code so the package needs no migration files at run time.
 * Never edit a released migration; add the next number.
 */
const migrations: Record<string, Migration> = {
  "0001_foundation": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable("environments")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("position", "integer", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("lifecycles")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("lifecycle_phases")
        .addColumn("lifecycle_id", "text", (c) => c.notNull().references("lifecycles.id").onDelete("cascade"))
        .addColumn("position", "integer", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("auto_deploy", "integer", (c) => c.notNull())
        .addColumn("optional", "integer", (c) => c.notNull())
        .addPrimaryKeyConstraint("lifecycle_phases_pk", ["lifecycle_id", "position"])
        .execute();

      await db.schema
        .createTable("lifecycle_phase_environments")
        .addColumn("lifecycle_id", "text", (c) => c.notNull().references("lifecycles.id").onDelete("cascade"))
        .addColumn("phase_position", "integer", (c) => c.notNull())
        .addColumn("environment_id", "text", (c) => c.notNull().references("environments.id"))
        .addColumn("position", "integer", (c) => c.notNull())
        // An environment is in at most one phase of a lifecycle.
        .addPrimaryKeyConstraint("lifecycle_phase_environments_pk", ["lifecycle_id", "environment_id"])
        .execute();

      await db.schema
        .createTable("projects")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("lifecycle_id", "text", (c) => c.notNull().references("lifecycles.id"))
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("targets")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("transport", "text", (c) => c.notNull())
        .addColumn("roles", "text", (c) => c.notNull())
        .addColumn("runtimes", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("target_environments")
        .addColumn("target_id", "text", (c) => c.notNull().references("targets.id").onDelete("cascade"))
        .addColumn("environment_id", "text", (c) => c.notNull().references("environments.id"))
        .addPrimaryKeyConstraint("target_environments_pk", ["target_id", "environment_id"])
        .execute();

      await db.schema
        .createTable("feeds")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("type", "text", (c) => c.notNull())
        .addColumn("url", "text", (c) => c.notNull())
        .addColumn("username", "text")
        .addColumn("password_sealed", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("variables")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("sensitive", "integer", (c) => c.notNull())
        .addColumn("value", "text")
        .addColumn("value_sealed", "text")
        .addColumn("scope_key", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("variables_name_scope_unique", ["project_id", "name", "scope_key"])
        .execute();

      await db.schema
        .createTable("variable_scopes")
        .addColumn("variable_id", "text", (c) => c.notNull().references("variables.id").onDelete("cascade"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("value", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("variable_scopes_pk", ["variable_id", "kind", "value"])
        .execute();
      await db.schema
        .createIndex("variable_scopes_by_value")
        .on("variable_scopes")
        .columns(["kind", "value"])
        .execute();

      await db.schema
        .createTable("api_keys")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("prefix", "text", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull().unique())
        .addColumn("role", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text")
        .addColumn("last_used_at", "text")
        .addColumn("revoked_at", "text")
        .execute();
    },
  },
};

const provider: MigrationProvider = {
  getMigrations: async () => migrations,
};

/** Brings the schema to the newest migration; throws with the failing migration's name. */
export async function migrateToLatest(db: Kysely<unknown>): Promise<void> {
  const migrator = new Migrator({ db, provider });
  const { error, results } = await migrator.migrateToLatest();
  if (error) {
    const failed = results?.find((result) => result.status === "Error")?.migrationName ?? "unknown";
    throw new Error(`database migration ${failed} failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}
