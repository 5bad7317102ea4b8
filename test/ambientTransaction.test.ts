import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConflictError } from "../src/domain/errors.js";
import { inOneTransaction } from "../src/store/ambientTransaction.js";
import { createEnvironment, listEnvironments } from "../src/store/environments.js";
import { dialects, openTestDatabase, type TestDatabase } from "./helpers/databases.js";

/**
 * The one transaction `ferry apply` runs in (src/store/ambientTransaction.ts), on SQLite and
 * PostgreSQL: store functions that open their own transactions run inside it as savepoints.
 */
const environment = (name: string) => ({ name, description: "" });

describe.each(dialects)("inOneTransaction on %s", (dialect) => {
  let database: TestDatabase;
  const slugs = async () =>
    (await listEnvironments(database.context, { limit: 100, offset: 0 })).items.map((item) => item.slug);

  beforeAll(async () => {
    database = await openTestDatabase(dialect);
  });
  afterAll(async () => {
    await database?.dispose();
  });

  it("commits every store function's writes together", async () => {
    await inOneTransaction(
      database.context.db,
      async () => {
        await createEnvironment(database.context, environment("one"));
        await createEnvironment(database.context, environment("two"));
      },
      { commit: true },
    );
    expect(await slugs()).toEqual(["one", "two"]);
  });

  it("undoes everything when a later store function fails, even one whose failure was caught inside", async () => {
    const failure = await inOneTransaction(
      database.context.db,
      async () => {
        await createEnvironment(database.context, environment("three"));
        // A refused write (a duplicate name) rolls back to its savepoint: the transaction stays usable.
        const duplicate = await createEnvironment(database.context, environment("one")).catch(
          (error: unknown) => error,
        );
        expect(duplicate).toBeInstanceOf(ConflictError);
        await createEnvironment(database.context, environment("four"));
        expect((await listEnvironments(database.context, { limit: 100, offset: 0 })).total).toBe(4);
        throw new Error("a later object was refused");
      },
      { commit: true },
    ).catch((error: unknown) => error);
    expect((failure as Error).message).toBe("a later object was refused");
    expect(await slugs()).toEqual(["one", "two"]);
  });

  it("rolls back a dry run that succeeded, and sees its own writes while it runs", async () => {
    const seen = await inOneTransaction(
      database.context.db,
      async () => {
        await createEnvironment(database.context, environment("planned"));
        return slugs();
      },
      { commit: false },
    );
    expect(seen).toEqual(["one", "two", "planned"]);
    expect(await slugs()).toEqual(["one", "two"]);
  });

  it("lets other work use the database outside it, and refuses to nest", async () => {
    await inOneTransaction(
      database.context.db,
      async () => {
        const nested = await inOneTransaction(database.context.db, async () => 1, { commit: true }).catch(
          (error: unknown) => error,
        );
        expect(nested).toBeInstanceOf(ConflictError);
      },
      { commit: false },
    );
    // Work begun inside but finishing after it ended goes to the pool, not to a closed transaction.
    let late: Promise<string[]> | undefined;
    await inOneTransaction(
      database.context.db,
      async () => {
        late = new Promise((resolve) => setTimeout(resolve, 50)).then(() => slugs());
      },
      { commit: false },
    );
    expect(await late).toEqual(["one", "two"]);
  });
});
