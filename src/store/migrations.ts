import { type Kysely, type Migration, type MigrationProvider, Migrator, sql } from "kysely";
import { builtInRoles } from "../domain/access.js";

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
  "0002_task_engine": {
    async up(db: Kysely<unknown>) {
      // Monotonic counters (task order) that work the same on both dialects:
      // UPDATE … SET value = value + 1 … RETURNING value inside the enqueueing transaction.
      await db.schema
        .createTable("counters")
        .addColumn("name", "text", (c) => c.primaryKey())
        .addColumn("value", "integer", (c) => c.notNull())
        .execute();
      await db
        .insertInto("counters" as never)
        .values([
          { name: "task", value: 0 },
          // Bumped by every change to the environment order: its row lock serialises them on PostgreSQL.
          { name: "environment-order", value: 0 },
        ] as never)
        .execute();

      await db.schema
        .createTable("tasks")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("sequence", "integer", (c) => c.notNull().unique())
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("title", "text", (c) => c.notNull())
        .addColumn("project_id", "text")
        .addColumn("environment_id", "text")
        .addColumn("payload", "text", (c) => c.notNull())
        .addColumn("result", "text")
        .addColumn("error", "text")
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("started_at", "text")
        .addColumn("finished_at", "text")
        .addColumn("lease_owner", "text")
        .addColumn("lease_expires_at", "text")
        .addColumn("cancel_requested", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("log_lines", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("log_bytes", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.createIndex("tasks_by_state").on("tasks").columns(["state", "sequence"]).execute();
      await db.schema
        .createIndex("tasks_by_project")
        .on("tasks")
        .columns(["project_id", "environment_id", "sequence"])
        .execute();

      // The locks a task needs before it may run, e.g. "deploy:<project>:<environment>"
      // and "target:<id>". Kept apart from the held locks so the claimer can see that an
      // earlier queued task wants the same lock and must go first.
      await db.schema
        .createTable("task_lock_requests")
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("lock_key", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("task_lock_requests_pk", ["task_id", "lock_key"])
        .execute();
      await db.schema.createIndex("task_lock_requests_by_key").on("task_lock_requests").columns(["lock_key"]).execute();

      // Held locks: a row per key with its owner task and a lease the owner's heartbeat extends.
      await db.schema
        .createTable("task_locks")
        .addColumn("lock_key", "text", (c) => c.primaryKey())
        .addColumn("task_id", "text", (c) => c.notNull())
        .addColumn("owner", "text", (c) => c.notNull())
        .addColumn("lease_expires_at", "text", (c) => c.notNull())
        .execute();

      await db.schema
        .createTable("task_logs")
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("line", "integer", (c) => c.notNull())
        .addColumn("at", "text", (c) => c.notNull())
        .addColumn("level", "text", (c) => c.notNull())
        .addColumn("step", "text")
        .addColumn("text", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("task_logs_pk", ["task_id", "line"])
        .execute();
    },
  },
  "0003_releases": {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable("projects")
        .addColumn("process", "text", (c) => c.notNull().defaultTo('{"steps":[]}'))
        .execute();
      // "1.0.#{n}": how the next release version is made when none is given.
      await db.schema
        .alterTable("projects")
        .addColumn("version_pattern", "text", (c) => c.notNull().defaultTo("0.0.#{n}"))
        .execute();

      await db.schema
        .createTable("releases")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("version", "text", (c) => c.notNull())
        .addColumn("notes", "text", (c) => c.notNull())
        // The frozen process, variables (sensitive ones sealed) and pinned images.
        .addColumn("snapshot", "text", (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("releases_version_unique", ["project_id", "version"])
        .execute();

      await db.schema
        .createTable("deployments")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("release_id", "text", (c) => c.notNull().references("releases.id").onDelete("cascade"))
        .addColumn("environment_id", "text", (c) => c.notNull().references("environments.id"))
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id"))
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("deployments_by_environment")
        .on("deployments")
        .columns(["project_id", "environment_id", "created_at"])
        .execute();
    },
  },
  "0004_task_decisions": {
    async up(db: Kysely<unknown>) {
      // A question a waiting task asks a person (approve a step, retry/skip/abort a failure).
      await db.schema
        .createTable("task_decisions")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("prompt", "text", (c) => c.notNull())
        .addColumn("allowed", "text", (c) => c.notNull())
        .addColumn("decision", "text")
        .addColumn("comment", "text")
        .addColumn("decided_by", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("decided_at", "text")
        .execute();
      await db.schema.createIndex("task_decisions_by_task").on("task_decisions").columns(["task_id"]).execute();
    },
  },
  "0005_release_variable_snapshots": {
    async up(db: Kysely<unknown>) {
      // A release's variables may be re-snapshotted on purpose; who and when is kept on it.
      await db.schema.alterTable("releases").addColumn("variables_updated_at", "text").execute();
      await db.schema.alterTable("releases").addColumn("variables_updated_by", "text").execute();
    },
  },
  "0006_dashboard_indexes": {
    async up(db: Kysely<unknown>) {
      // The dashboard asks, per (project, environment), for the newest deployment task and
      // the newest successful one. Partial indexes answer each with one index seek, however
      // many deployments an environment has had (and however many runbook runs share it).
      // Queries must spell the literals ('deployment', 'succeeded') for the planners to use them.
      await db.schema
        .createIndex("tasks_deployments_by_environment")
        .on("tasks")
        .columns(["project_id", "environment_id", "sequence"])
        .where(sql.ref("kind"), "=", "deployment")
        .execute();
      await db.schema
        .createIndex("tasks_succeeded_deployments_by_environment")
        .on("tasks")
        .columns(["project_id", "environment_id", "sequence"])
        .where(sql.ref("kind"), "=", "deployment")
        .where(sql.ref("state"), "=", "succeeded")
        .execute();
      // From a deployment task to its deployment (and release).
      await db.schema.createIndex("deployments_by_task").on("deployments").columns(["task_id"]).execute();
    },
  },
  "0007_deployment_kinds_and_webhooks": {
    async up(db: Kysely<unknown>) {
      // Why a deployment was requested: "deploy" | "promote" | "rollback" | "auto". DORA
      // figures need the rollbacks; older rows were ordinary deployments as far as is known.
      await db.schema
        .alterTable("deployments")
        .addColumn("kind", "text", (c) => c.notNull().defaultTo("deploy"))
        .execute();

      // A project's outgoing webhooks: deployment events POSTed to `url`, signed with the
      // sealed secret (bound to "webhook:<id>:secret").
      await db.schema
        .createTable("webhooks")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("url", "text", (c) => c.notNull())
        .addColumn("events", "text", (c) => c.notNull())
        .addColumn("secret_sealed", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("webhooks_by_project").on("webhooks").columns(["project_id"]).execute();
    },
  },
  "0009_audit": {
    async up(db: Kysely<unknown>) {
      // The audit log: append-only, each entry hash-chained to the one before (src/domain/audit.ts).
      await db.schema
        .createTable("audit_events")
        .addColumn("seq", "integer", (c) => c.primaryKey())
        .addColumn("id", "text", (c) => c.notNull().unique())
        .addColumn("at", "text", (c) => c.notNull())
        .addColumn("actor_id", "text")
        .addColumn("actor_name", "text", (c) => c.notNull())
        .addColumn("source", "text", (c) => c.notNull())
        .addColumn("action", "text", (c) => c.notNull())
        .addColumn("resource_type", "text", (c) => c.notNull())
        .addColumn("resource_id", "text")
        .addColumn("resource_name", "text")
        .addColumn("diff", "text", (c) => c.notNull())
        .addColumn("key_id", "text", (c) => c.notNull())
        .addColumn("prev_hash", "text", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("audit_events_by_resource")
        .on("audit_events")
        .columns(["resource_type", "resource_id", "seq"])
        .execute();
      // The chain head: appenders UPDATE this one row first, so its row lock orders them
      // on PostgreSQL (several nodes) as SQLite's single writer does.
      await db.schema
        .createTable("audit_chain")
        .addColumn("id", "integer", (c) => c.primaryKey())
        .addColumn("seq", "integer", (c) => c.notNull())
        .addColumn("hash", "text", (c) => c.notNull())
        .execute();
      await db
        .insertInto("audit_chain" as never)
        .values({ id: 1, seq: 0, hash: "0".repeat(64) } as never)
        .execute();
    },
  },
  "0010_users": {
    async up(db: Kysely<unknown>) {
      // Local users: the password is an scrypt hash with its own salt and parameters
      // (src/security/passwords.ts); the clear password never reaches the database.
      await db.schema
        .createTable("users")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("username", "text", (c) => c.notNull().unique())
        .addColumn("display_name", "text", (c) => c.notNull())
        .addColumn("password_hash", "text", (c) => c.notNull())
        .addColumn("is_admin", "integer", (c) => c.notNull())
        .addColumn("disabled", "integer", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();

      // Browser sessions: only the SHA-256 of the cookie's token is stored, so a copy of the
      // database cannot be replayed as a cookie. The CSRF token is per session.
      await db.schema
        .createTable("sessions")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("csrf_token", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("last_seen_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("sessions_by_user").on("sessions").columns(["user_id"]).execute();

      // Failed sign-ins, per username and per client address, so that the limit holds
      // across restarts and across server nodes sharing one database.
      await db.schema
        .createTable("login_failures")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("subject", "text", (c) => c.notNull())
        .addColumn("at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createIndex("login_failures_by_subject")
        .on("login_failures")
        .columns(["subject", "at"])
        .execute();

      // Keys may belong to a user (null: the bootstrap admin key and service keys).
      await db.schema
        .alterTable("api_keys")
        .addColumn("user_id", "text", (c) => c.references("users.id").onDelete("cascade"))
        .execute();
      await db.schema.createIndex("api_keys_by_user").on("api_keys").columns(["user_id"]).execute();
    },
  },
  "0011_teams": {
    async up(db: Kysely<unknown>) {
      // Roles: named sets of permissions (src/domain/access.ts); the built-in ones are rows
      // like any other, marked so that they cannot be changed.
      await db.schema
        .createTable("roles")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("permissions", "text", (c) => c.notNull())
        .addColumn("built_in", "integer", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("teams")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("team_members")
        .addColumn("team_id", "text", (c) => c.notNull().references("teams.id").onDelete("cascade"))
        .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addPrimaryKeyConstraint("team_members_pk", ["team_id", "user_id"])
        .execute();
      await db.schema.createIndex("team_members_by_user").on("team_members").columns(["user_id"]).execute();
      // A role granted to a team on a scope: JSON arrays of project and environment ids,
      // NULL for "all of them" (including ones created later).
      await db.schema
        .createTable("team_roles")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("team_id", "text", (c) => c.notNull().references("teams.id").onDelete("cascade"))
        .addColumn("role_id", "text", (c) => c.notNull().references("roles.id"))
        .addColumn("position", "integer", (c) => c.notNull())
        .addColumn("projects", "text")
        .addColumn("environments", "text")
        .execute();
      await db.schema.createIndex("team_roles_by_team").on("team_roles").columns(["team_id", "position"]).execute();
      await db.schema.createIndex("team_roles_by_role").on("team_roles").columns(["role_id"]).execute();
      const now = new Date().toISOString();
      for (const role of builtInRoles) {
        await db
          .insertInto("roles" as never)
          .values({
            id: `role_${role.slug}`,
            slug: role.slug,
            name: role.name,
            description: role.description,
            permissions: JSON.stringify(role.permissions),
            built_in: 1,
            created_at: now,
            updated_at: now,
          } as never)
          .execute();
      }
    },
  },
  "0013_task_counts": {
    async up(db: Kysely<unknown>) {
      // Tasks per state, so that the task list can say how many there are without counting
      // a million rows. Triggers keep it exact in the transaction that changes the tasks,
      // whoever writes them: the store, a fixture or a bulk load (docs/decisions/0019-task-counts.md).
      await db.schema
        .createTable("task_counts")
        .addColumn("state", "text", (c) => c.primaryKey())
        .addColumn("n", "integer", (c) => c.notNull())
        .execute();
      const postgres = sql`${0}`.compile(db).sql.startsWith("$");
      if (postgres) {
        // Inserts and deletes: once per statement, from its transition table, so a bulk load
        // costs one grouped count rather than a counter update per row. Counter rows are
        // taken in state order, the same order everywhere, so writers never deadlock on them.
        await sql`CREATE FUNCTION ferry_task_counts_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
          DECLARE added record;
          BEGIN
            FOR added IN SELECT state, count(*) AS n FROM inserted GROUP BY state ORDER BY state LOOP
              INSERT INTO task_counts (state, n) VALUES (added.state, added.n)
                ON CONFLICT (state) DO UPDATE SET n = task_counts.n + excluded.n;
            END LOOP;
            RETURN NULL;
          END $$`.execute(db);
        await sql`CREATE TRIGGER task_counts_after_insert AFTER INSERT ON tasks
          REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
          EXECUTE FUNCTION ferry_task_counts_after_insert()`.execute(db);
        await sql`CREATE FUNCTION ferry_task_counts_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
          DECLARE removed record;
          BEGIN
            FOR removed IN SELECT state, count(*) AS n FROM deleted GROUP BY state ORDER BY state LOOP
              UPDATE task_counts SET n = n - removed.n WHERE state = removed.state;
            END LOOP;
            RETURN NULL;
          END $$`.execute(db);
        await sql`CREATE TRIGGER task_counts_after_delete AFTER DELETE ON tasks
          REFERENCING OLD TABLE AS deleted FOR EACH STATEMENT
          EXECUTE FUNCTION ferry_task_counts_after_delete()`.execute(db);
        // State changes: per row, deferred to commit. The claimer and the runner change
        // states in transactions that also wait for other rows (FOR UPDATE, task locks);
        // holding a counter row from the first change to the commit would serialise every
        // node's claims behind it, and could close a wait cycle. At commit the counter rows
        // are held only for the commit itself, two at a time, lower state first.
        await sql`CREATE FUNCTION ferry_task_counts_after_state_change() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF OLD.state < NEW.state THEN
              UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
            END IF;
            INSERT INTO task_counts (state, n) VALUES (NEW.state, 1)
              ON CONFLICT (state) DO UPDATE SET n = task_counts.n + 1;
            IF OLD.state > NEW.state THEN
              UPDATE task_counts SET n = n - 1 WHERE state = OLD.state;
            END IF;
            RETURN NULL;
          END $$`.execute(db);
        await sql`CREATE CONSTRAINT TRIGGER task_counts_after_state_change AFTER UPDATE OF state ON tasks
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
          EXECUTE FUNCTION ferry_task_counts_after_state_change()`.execute(db);
      } else {
        // SQLite has one writer at a time and row triggers only; a row's trigger is a
        // primary-key update, cheap even for a bulk load.
        await sql`CREATE TRIGGER task_counts_after_insert AFTER INSERT ON tasks BEGIN
          INSERT INTO task_counts (state, n) VALUES (new.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
          END`.execute(db);
        await sql`CREATE TRIGGER task_counts_after_delete AFTER DELETE ON tasks BEGIN
          UPDATE task_counts SET n = n - 1 WHERE state = old.state;
          END`.execute(db);
        await sql`CREATE TRIGGER task_counts_after_state_change AFTER UPDATE OF state ON tasks
          WHEN old.state IS NOT new.state BEGIN
          UPDATE task_counts SET n = n - 1 WHERE state = old.state;
          INSERT INTO task_counts (state, n) VALUES (new.state, 1)
            ON CONFLICT (state) DO UPDATE SET n = n + 1;
          END`.execute(db);
      }
      // The backfill runs after the triggers exist, in the migration's transaction: on
      // PostgreSQL, CREATE TRIGGER locked the table against writers until the commit, so
      // no task is counted twice or missed by a server still running the previous version.
      await sql`INSERT INTO task_counts (state, n) SELECT state, count(*) FROM tasks GROUP BY state`.execute(db);
    },
  },
  "0012_oidc": {
    async up(db: Kysely<unknown>) {
      // A user may be linked to one OIDC identity: the provider's issuer and its subject.
      // NULL for local-only users (both databases let NULLs repeat in a unique index).
      await db.schema.alterTable("users").addColumn("oidc_issuer", "text").execute();
      await db.schema.alterTable("users").addColumn("oidc_subject", "text").execute();
      await db.schema
        .createIndex("users_by_oidc_identity")
        .on("users")
        .columns(["oidc_issuer", "oidc_subject"])
        .unique()
        .execute();

      // Sign-ins under way: between the redirect to the provider and its callback. Keyed by
      // the SHA-256 of `state`; deleted by the callback that uses it (single use) and when
      // expired. The PKCE verifier is useless without the code the provider sends the browser.
      await db.schema
        .createTable("oidc_logins")
        .addColumn("state_hash", "text", (c) => c.primaryKey())
        .addColumn("code_verifier", "text", (c) => c.notNull())
        .addColumn("nonce", "text", (c) => c.notNull())
        .addColumn("return_to", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("oidc_logins_by_expiry").on("oidc_logins").columns(["expires_at"]).execute();
    },
  },
  "0014_prune_lock_requests": {
    async up(db: Kysely<unknown>) {
      // Lock requests order queued tasks only; since this version a claim or a cancel deletes
      // them. Earlier versions kept them for every task ever queued.
      await sql`delete from task_lock_requests where task_id not in (select id from tasks where state = 'queued')`.execute(
        db,
      );
    },
  },
  "0015_deployments_by_release": {
    async up(db: Kysely<unknown>) {
      // Where a release has succeeded (the lifecycle check of every deployment request):
      // without it the planners walked every succeeded task, slower with each deployment.
      await db.schema
        .createIndex("deployments_by_release")
        .on("deployments")
        .columns(["release_id", "environment_id"])
        .execute();
    },
  },
  "0016_decision_rules": {
    async up(db: Kysely<unknown>) {
      // Who started a task ("user:<id>" or "key:<id>"), so an approval can refuse that
      // person (separation of duties) whichever of their keys or sessions they answer with.
      await db.schema.alterTable("tasks").addColumn("created_by_principal", "text").execute();
      await db.schema.alterTable("task_decisions").addColumn("excluded_principal", "text").execute();
      // Required steps a person skipped after they failed (guided failure): such a
      // deployment does not count for the lifecycle unless its phase accepts it.
      await db.schema
        .alterTable("deployments")
        .addColumn("skipped_steps", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .alterTable("lifecycle_phases")
        .addColumn("accept_skipped_steps", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .alterTable("lifecycle_phases")
        .addColumn("separate_approver", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      // Built-in roles follow the code (resolveFailures is new: retry / skip of a failed step).
      for (const role of builtInRoles) {
        await db
          .updateTable("roles" as never)
          .set({ permissions: JSON.stringify(role.permissions) } as never)
          .where("id" as never, "=", `role_${role.slug}` as never)
          .execute();
      }
    },
  },
  "0017_task_targets": {
    async up(db: Kysely<unknown>) {
      // The hosts a task ran steps on, so clean-up after a crash reaches each of them. No
      // foreign key to targets: a target deleted meanwhile simply has nothing left to clean.
      await db.schema
        .createTable("task_targets")
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("target_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("task_targets_pk", ["task_id", "target_id"])
        .execute();
    },
  },
  "0018_ssh_targets": {
    async up(db: Kysely<unknown>) {
      // How an ssh target is reached. The private key and its passphrase are sealed under
      // the master key (bound to the row, like a feed's password); host keys are the
      // fingerprints a person trusted (ferry target trust), null until then.
      await db.schema.alterTable("targets").addColumn("ssh_host", "text").execute();
      await db.schema.alterTable("targets").addColumn("ssh_port", "integer").execute();
      await db.schema.alterTable("targets").addColumn("ssh_user", "text").execute();
      await db.schema.alterTable("targets").addColumn("ssh_host_key", "text").execute();
      // JSON { host, port, user, hostKey }: reached first, as ssh -J does.
      await db.schema.alterTable("targets").addColumn("ssh_jump_host", "text").execute();
      await db.schema.alterTable("targets").addColumn("ssh_private_key_sealed", "text").execute();
      await db.schema.alterTable("targets").addColumn("ssh_passphrase_sealed", "text").execute();
    },
  },
  "0019_agents": {
    async up(db: Kysely<unknown>) {
      // One-time enrolment tokens: only their SHA-256 is kept (they carry 256 random bits).
      // Single use is a conditional UPDATE of used_at, so two agents racing with one token
      // cannot both enrol.
      await db.schema
        .createTable("agent_enrolment_tokens")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("token_hash", "text", (c) => c.notNull().unique())
        .addColumn("note", "text", (c) => c.notNull())
        // JSON array of environment ids an agent may join with it; null: any.
        .addColumn("environment_ids", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("expires_at", "text", (c) => c.notNull())
        .addColumn("used_at", "text")
        .addColumn("used_by_target_id", "text")
        .addColumn("revoked_at", "text")
        .execute();
      // An agent target's credential (hashed) and link state. A rotated credential waits,
      // sealed, in next_credential_* until the agent first uses it: a rotation whose answer
      // was lost on the way does not lock the agent out.
      await db.schema
        .createTable("agents")
        .addColumn("target_id", "text", (c) => c.primaryKey().references("targets.id").onDelete("cascade"))
        .addColumn("credential_hash", "text", (c) => c.notNull().unique())
        // Unique (so indexed): every agent request looks its credential up in both columns.
        .addColumn("next_credential_hash", "text", (c) => c.unique())
        .addColumn("next_credential_sealed", "text")
        .addColumn("revoked_at", "text")
        // connected | lost | never, written on changes only (not on every poll).
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("state_at", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0020_data_plane_per_host": {
    async up(db: Kysely<unknown>) {
      // JSON { driver, listen, adminPort, stateDir?, command }: the router on a remote
      // target's host that blue/green steps there switch (docs/decisions/0031).
      await db.schema.alterTable("targets").addColumn("router", "text").execute();
      // Clean-ups of interrupted tasks on hosts that could not be reached at the time: each
      // is retried (with a growing pause) until the host answers. No foreign key to targets:
      // a target deleted meanwhile has nothing left to clean, and its rows are dropped.
      await db.schema
        .createTable("pending_cleanups")
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("target_id", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("next_attempt_at", "text", (c) => c.notNull())
        .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("last_error", "text")
        .addPrimaryKeyConstraint("pending_cleanups_pk", ["task_id", "target_id"])
        .execute();
      await db.schema.createIndex("pending_cleanups_due").on("pending_cleanups").column("next_attempt_at").execute();
    },
  },
  "0021_target_health_and_policies": {
    async up(db: Kysely<unknown>) {
      // What a deployment does with a target it cannot reach (ADR 0032): fail by default.
      await db.schema
        .alterTable("environments")
        .addColumn("unavailable_targets", "text", (c) => c.notNull().defaultTo("fail"))
        .execute();
      // The last health check of each target. next_check_at is the schedule every server node
      // shares: a node claims a target by moving it forward (a conditional UPDATE), so one
      // target is checked by one node at a time. No foreign key: the row goes with its target
      // (deleteTarget), and a check that ends after that writes nothing.
      await db.schema
        .createTable("target_health")
        .addColumn("target_id", "text", (c) => c.primaryKey())
        .addColumn("state", "text", (c) => c.notNull())
        .addColumn("checked_at", "text")
        .addColumn("reachable", "integer")
        .addColumn("docker_version", "text")
        .addColumn("disk_free_bytes", "bigint")
        .addColumn("router", "text")
        .addColumn("error", "text")
        .addColumn("last_up_at", "text")
        .addColumn("next_check_at", "text", (c) => c.notNull())
        .execute();
    },
  },
  "0022_runbooks": {
    async up(db: Kysely<unknown>) {
      // A project's runbooks: the draft an editor changes (JSON RunbookDefinition) and the
      // published snapshot runs use. draft_changed says whether the draft differs from it.
      await db.schema
        .createTable("runbooks")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("slug", "text", (c) => c.notNull())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("draft", "text", (c) => c.notNull())
        .addColumn("draft_changed", "integer", (c) => c.notNull())
        .addColumn("published_snapshot_id", "text")
        .addColumn("updated_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("runbooks_project_slug", ["project_id", "slug"])
        .addUniqueConstraint("runbooks_project_name", ["project_id", "name"])
        .execute();
      // What a run executes: the definition and the project's variables when it was published
      // (version 1, 2, …) or, for a draft run, when the run was requested (version null).
      // Sensitive variables are re-sealed bound to the snapshot, as a release's are.
      await db.schema
        .createTable("runbook_snapshots")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("runbook_id", "text", (c) => c.notNull().references("runbooks.id").onDelete("cascade"))
        .addColumn("version", "integer")
        .addColumn("snapshot", "text", (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("runbook_snapshots_version", ["runbook_id", "version"])
        .execute();
      // One run: written in the transaction that queues its task. Parameters are JSON
      // { name: value }, sensitive values sealed (bound to the run), their names in sensitive.
      await db.schema
        .createTable("runbook_runs")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("runbook_id", "text", (c) => c.notNull().references("runbooks.id").onDelete("cascade"))
        .addColumn("snapshot_id", "text", (c) => c.notNull().references("runbook_snapshots.id").onDelete("cascade"))
        .addColumn("project_id", "text", (c) => c.notNull())
        .addColumn("environment_id", "text", (c) => c.notNull())
        .addColumn("task_id", "text", (c) => c.notNull().references("tasks.id").onDelete("cascade"))
        .addColumn("parameters", "text", (c) => c.notNull())
        .addColumn("sensitive", "text", (c) => c.notNull())
        .addColumn("target_ids", "text")
        .addColumn("freeze_override", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("runbook_runs_by_runbook").on("runbook_runs").columns(["runbook_id"]).execute();
      // Deployment freezes of a project: environment_ids and window are JSON.
      await db.schema
        .createTable("freezes")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("environment_ids", "text", (c) => c.notNull())
        .addColumn("window", "text", (c) => c.notNull())
        .addColumn("time_zone", "text", (c) => c.notNull())
        .addColumn("runbooks", "integer", (c) => c.notNull())
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("freezes_project_name", ["project_id", "name"])
        .execute();
      // Built-in roles follow the code: editRunbooks and overrideFreezes are new, and so is
      // the runbook consumer (on a fresh database 0011 inserted it already).
      const now = new Date().toISOString();
      for (const role of builtInRoles) {
        const updated = await db
          .updateTable("roles" as never)
          .set({ permissions: JSON.stringify(role.permissions) } as never)
          .where("id" as never, "=", `role_${role.slug}` as never)
          .executeTakeFirst();
        if (Number(updated.numUpdatedRows) > 0) continue;
        await db
          .insertInto("roles" as never)
          .values({
            id: `role_${role.slug}`,
            slug: role.slug,
            name: role.name,
            description: role.description,
            permissions: JSON.stringify(role.permissions),
            built_in: 1,
            created_at: now,
            updated_at: now,
          } as never)
          .execute();
      }
    },
  },
  "0023_runbook_schedules_and_retention": {
    async up(db: Kysely<unknown>) {
      // A runbook's schedules (ADR 0036): a cron expression in a time zone, per environment.
      // next_run_at is the claim every server node shares: a node fires a schedule by moving
      // it forward from the value it read (a conditional UPDATE), so a firing is queued once.
      await db.schema
        .createTable("runbook_schedules")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("runbook_id", "text", (c) => c.notNull().references("runbooks.id").onDelete("cascade"))
        .addColumn("project_id", "text", (c) => c.notNull())
        .addColumn("environment_id", "text", (c) => c.notNull().references("environments.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("cron", "text", (c) => c.notNull())
        .addColumn("time_zone", "text", (c) => c.notNull())
        .addColumn("parameters", "text", (c) => c.notNull())
        .addColumn("sensitive", "text", (c) => c.notNull())
        .addColumn("targets", "text")
        .addColumn("missed", "text", (c) => c.notNull())
        .addColumn("paused", "integer", (c) => c.notNull())
        .addColumn("next_run_at", "text")
        .addColumn("last_scheduled_for", "text")
        .addColumn("last_cause", "text")
        .addColumn("last_task_id", "text")
        .addColumn("last_error", "text")
        .addColumn("created_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("runbook_schedules_runbook_name", ["runbook_id", "name"])
        .execute();
      await db.schema.createIndex("runbook_schedules_due").on("runbook_schedules").column("next_run_at").execute();
      // Why a run was queued, when a schedule queued it (a person's run has nulls).
      await db.schema.alterTable("runbook_runs").addColumn("cause", "text").execute();
      await db.schema.alterTable("runbook_runs").addColumn("schedule_id", "text").execute();
      await db.schema.alterTable("runbook_runs").addColumn("scheduled_for", "text").execute();
      // Retention of a runbook's runs per environment ("*": the default for the others).
      await db.schema
        .createTable("runbook_retention")
        .addColumn("runbook_id", "text", (c) => c.notNull().references("runbooks.id").onDelete("cascade"))
        .addColumn("environment_id", "text", (c) => c.notNull())
        .addColumn("keep_runs", "integer")
        .addColumn("keep_days", "integer")
        .addPrimaryKeyConstraint("runbook_retention_pk", ["runbook_id", "environment_id"])
        .execute();
      await db.schema
        .createIndex("runbook_runs_by_environment")
        .on("runbook_runs")
        .columns(["runbook_id", "environment_id"])
        .execute();
    },
  },
  "0026_feed_triggers": {
    async up(db: Kysely<unknown>) {
      // A project's feed triggers (issue 15): a new tag of one of its images, announced by the
      // registry's notification or found by polling, creates a release and deploys it to the
      // lifecycle's first phase. next_poll_at is the schedule the server nodes share: a node
      // claims a trigger by moving it forward (a conditional UPDATE), as target_health does.
      await db.schema
        .createTable("feed_triggers")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("image", "text", (c) => c.notNull())
        .addColumn("version_from_tag", "text")
        .addColumn("secret_sealed", "text", (c) => c.notNull())
        .addColumn("poll_seconds", "integer")
        .addColumn("paused", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("next_poll_at", "text")
        .addColumn("last_polled_at", "text")
        .addColumn("last_error", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("feed_triggers_project_name", ["project_id", "name"])
        .execute();
      // One row per image digest a trigger has acted on (or found already there when it first
      // polled): a notification delivered twice, replayed a day later, or the registry's own
      // notification of a retag, finds its digest here and creates nothing.
      await db.schema
        .createTable("feed_trigger_firings")
        .addColumn("trigger_id", "text", (c) => c.notNull().references("feed_triggers.id").onDelete("cascade"))
        .addColumn("digest", "text", (c) => c.notNull())
        .addColumn("tag", "text", (c) => c.notNull())
        .addColumn("cause", "text", (c) => c.notNull())
        .addColumn("release_version", "text")
        .addColumn("at", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("feed_trigger_firings_pk", ["trigger_id", "digest"])
        .execute();
    },
  },
  "0024_artifacts": {
    async up(db: Kysely<unknown>) {
      // Files steps attached to their tasks (ADR 0037). The bytes are elsewhere: a file of the
      // data directory (storage "directory", location its name) or a PostgreSQL large object
      // (storage "largeObject", location its oid), so a listing never reads them. No foreign
      // key to tasks: removing a task must remove its bytes too, which the database cannot
      // do for a file; task clean-up and retention call deleteArtifacts (store/artifacts.ts).
      await db.schema
        .createTable("artifacts")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("task_id", "text", (c) => c.notNull())
        .addColumn("project_id", "text", (c) => c.notNull())
        .addColumn("environment_id", "text", (c) => c.notNull())
        .addColumn("runbook_id", "text")
        .addColumn("step_name", "text", (c) => c.notNull())
        .addColumn("target_name", "text")
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("size", "bigint", (c) => c.notNull())
        .addColumn("sha256", "text", (c) => c.notNull())
        .addColumn("storage", "text", (c) => c.notNull())
        .addColumn("location", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .execute();
      await db.schema.createIndex("artifacts_by_task").on("artifacts").columns(["task_id"]).execute();
      await db.schema
        .createIndex("artifacts_by_runbook")
        .on("artifacts")
        .columns(["runbook_id", "environment_id", "created_at"])
        .execute();
    },
  },
  "0024_artifacts_retention": {
    async up(db: Kysely<unknown>) {
      // How long a runbook's artifacts are kept per environment (ADR 0037); environment_id
      // "*" is the policy of every environment without one of its own.
      await db.schema
        .createTable("artifact_retention")
        .addColumn("runbook_id", "text", (c) => c.notNull().references("runbooks.id").onDelete("cascade"))
        .addColumn("environment_id", "text", (c) => c.notNull())
        .addColumn("keep_runs", "integer")
        .addColumn("keep_days", "integer")
        .addPrimaryKeyConstraint("artifact_retention_pk", ["runbook_id", "environment_id"])
        .execute();
    },
  },
  "0027_enrolment_token_roles": {
    async up(db: Kysely<unknown>) {
      // JSON array of role names an agent enrolled with the token may take; null: any.
      await db.schema.alterTable("agent_enrolment_tokens").addColumn("roles", "text").execute();
    },
  },
  "0028_scheduled_triggers": {
    async up(db: Kysely<unknown>) {
      // A project's scheduled triggers (issue 15): on a cron expression in a time zone, deploy
      // what one environment runs to another. next_fire_at is the schedule the server nodes
      // share: a node claims a firing by moving it forward (a conditional UPDATE).
      await db.schema
        .createTable("scheduled_triggers")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("cron", "text", (c) => c.notNull())
        .addColumn("time_zone", "text", (c) => c.notNull())
        .addColumn("from_environment_id", "text", (c) => c.notNull().references("environments.id").onDelete("cascade"))
        .addColumn("to_environment_id", "text", (c) => c.notNull().references("environments.id").onDelete("cascade"))
        .addColumn("paused", "integer", (c) => c.notNull().defaultTo(0))
        .addColumn("next_fire_at", "text")
        .addColumn("last_fired_at", "text")
        .addColumn("last_outcome", "text")
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("scheduled_triggers_project_name", ["project_id", "name"])
        .execute();
    },
  },
  "0031_ephemeral_environments": {
    async up(db: Kysely<unknown>) {
      // An ephemeral environment (ADR 0045) is torn down and deleted ttl_minutes after its
      // last deployment (or its creation); ttl_minutes null: only by `ferry env delete`.
      await db.schema
        .alterTable("environments")
        .addColumn("ephemeral", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema.alterTable("environments").addColumn("ttl_minutes", "integer").execute();
    },
  },
  "0032_variable_sets": {
    async up(db: Kysely<unknown>) {
      // Variable sets shared by several projects (issue 16 part 2, ADR 0047): a set's
      // values are stored like a project's (sealed when sensitive, bound to
      // "variable-set-variable:<id>"), and a project includes sets in an order.
      await db.schema
        .createTable("variable_sets")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("slug", "text", (c) => c.notNull().unique())
        .addColumn("name", "text", (c) => c.notNull().unique())
        .addColumn("description", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .execute();
      await db.schema
        .createTable("variable_set_variables")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("set_id", "text", (c) => c.notNull().references("variable_sets.id").onDelete("cascade"))
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("sensitive", "integer", (c) => c.notNull())
        .addColumn("value", "text")
        .addColumn("value_sealed", "text")
        .addColumn("scope_key", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addColumn("updated_at", "text", (c) => c.notNull())
        .addUniqueConstraint("variable_set_variables_name_scope_unique", ["set_id", "name", "scope_key"])
        .execute();
      await db.schema
        .createTable("variable_set_scopes")
        .addColumn("variable_id", "text", (c) =>
          c.notNull().references("variable_set_variables.id").onDelete("cascade"),
        )
        .addColumn("kind", "text", (c) => c.notNull())
        .addColumn("value", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("variable_set_scopes_pk", ["variable_id", "kind", "value"])
        .execute();
      await db.schema
        .createIndex("variable_set_scopes_by_value")
        .on("variable_set_scopes")
        .columns(["kind", "value"])
        .execute();
      await db.schema
        .createTable("project_variable_sets")
        .addColumn("project_id", "text", (c) => c.notNull().references("projects.id").onDelete("cascade"))
        .addColumn("set_id", "text", (c) => c.notNull().references("variable_sets.id"))
        .addColumn("position", "integer", (c) => c.notNull())
        .addPrimaryKeyConstraint("project_variable_sets_pk", ["project_id", "set_id"])
        .execute();
      await db.schema
        .createIndex("project_variable_sets_by_set")
        .on("project_variable_sets")
        .column("set_id")
        .execute();
      // Built-in roles follow the code: the administrator gains editVariableSets.
      for (const role of builtInRoles) {
        await db
          .updateTable("roles" as never)
          .set({ permissions: JSON.stringify(role.permissions) } as never)
          .where("id" as never, "=", `role_${role.slug}` as never)
          .execute();
      }
    },
  },
  "0030_packages": {
    async up(db: Kysely<unknown>) {
      // The built-in package feed (ADR 0044): one row per pushed version; its bytes are kept
      // like an artifact's (a file of <data dir>/packages, or a PostgreSQL large object).
      await db.schema
        .createTable("package_versions")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("name", "text", (c) => c.notNull())
        .addColumn("version", "text", (c) => c.notNull())
        .addColumn("format", "text", (c) => c.notNull())
        .addColumn("size", "bigint", (c) => c.notNull())
        .addColumn("sha256", "text", (c) => c.notNull())
        .addColumn("entries", "integer", (c) => c.notNull())
        .addColumn("storage", "text", (c) => c.notNull())
        .addColumn("location", "text", (c) => c.notNull())
        .addColumn("pushed_by", "text", (c) => c.notNull())
        .addColumn("created_at", "text", (c) => c.notNull())
        .addUniqueConstraint("package_versions_name_version", ["name", "version"])
        .execute();
      await db.schema
        .createIndex("package_versions_by_name")
        .on("package_versions")
        .columns(["name", "created_at"])
        .execute();
      // Which package versions a release pins (also in its snapshot): retention and delete ask
      // it whether a deployed release needs a version. No foreign key to the version: a
      // version an undeployed release pins may go, and that release then fails saying so.
      await db.schema
        .createTable("release_packages")
        .addColumn("release_id", "text", (c) => c.notNull().references("releases.id").onDelete("cascade"))
        .addColumn("package_version_id", "text", (c) => c.notNull())
        .addPrimaryKeyConstraint("release_packages_pk", ["release_id", "package_version_id"])
        .execute();
      await db.schema
        .createIndex("release_packages_by_version")
        .on("release_packages")
        .columns(["package_version_id"])
        .execute();
      // Built-in roles follow the code: pushPackages is new (the administrator has every permission).
      for (const role of builtInRoles) {
        await db
          .updateTable("roles" as never)
          .set({ permissions: JSON.stringify(role.permissions) } as never)
          .where("id" as never, "=", `role_${role.slug}` as never)
          .execute();
      }
    },
  },
  "0035_shared_locks": {
    async up(db: Kysely<unknown>) {
      // Shared locks (ADR 0068): a runbook run holds an environment's deployment lock beside
      // other runbook runs, never beside a deployment. A held lock becomes one row per holder,
      // so its key alone is no longer the primary key. The table is rebuilt (SQLite cannot
      // change a primary key) with its rows copied: locks held by tasks running on other nodes
      // during an upgrade stay held.
      await db.schema
        .alterTable("task_lock_requests")
        .addColumn("shared", "integer", (c) => c.notNull().defaultTo(0))
        .execute();
      await db.schema
        .createTable("task_locks_0035")
        .addColumn("lock_key", "text", (c) => c.notNull())
        .addColumn("task_id", "text", (c) => c.notNull())
        .addColumn("owner", "text", (c) => c.notNull())
        .addColumn("lease_expires_at", "text", (c) => c.notNull())
        .addColumn("shared", "integer", (c) => c.notNull().defaultTo(0))
        .addPrimaryKeyConstraint("task_locks_key_task_pk", ["lock_key", "task_id"])
        .execute();
      await sql`insert into task_locks_0035 (lock_key, task_id, owner, lease_expires_at)
        select lock_key, task_id, owner, lease_expires_at from task_locks`.execute(db);
      await db.schema.dropTable("task_locks").execute();
      await db.schema.alterTable("task_locks_0035").renameTo("task_locks").execute();
      // Locks are released by task (finish, cancel, interrupt) and renewed by task.
      await db.schema.createIndex("task_locks_by_task").on("task_locks").columns(["task_id"]).execute();
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
