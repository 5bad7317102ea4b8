import { createLifecycleSchema } from "../domain/lifecycles.js";
import { validateSteps } from "../steps/registry.js";
import type { StoreContext } from "../store/common.js";
import { countRows } from "../store/common.js";
import { createEnvironment } from "../store/environments.js";
import { createLifecycle } from "../store/lifecycles.js";
import { createProject } from "../store/projects.js";
import { setProcess } from "../store/releases.js";
import { createTarget } from "../store/targets.js";
import { createVariable } from "../store/variables.js";

/**
 * Seeds the demo install: dev → test → prod, a lifecycle over them, this host as a
 * target, and a project with a few scoped variables. Only into an empty store, so
 * restarting the demo keeps what the user changed.
 */
export async function seedDemo(context: StoreContext): Promise<boolean> {
  if ((await countRows(context.db, "projects")) > 0 || (await countRows(context.db, "environments")) > 0) return false;
  for (const name of ["Development", "Test", "Production"]) {
    await createEnvironment(context, {
      name,
      slug: name.slice(0, name === "Production" ? 4 : name === "Test" ? 4 : 3).toLowerCase(),
      description: `${name} environment (demo)`,
    });
  }
  await createLifecycle(
    context,
    createLifecycleSchema.parse({
      name: "Default",
      description: "dev deploys by itself; test and prod are promoted",
      phases: [{ environments: ["dev"], autoDeploy: true }, { environments: ["test"] }, { environments: ["prod"] }],
    }),
  );
  await createTarget(context, {
    name: "This host",
    slug: "local",
    environments: ["dev", "test", "prod"],
    roles: ["web"],
    transport: "local",
    runtimes: ["process", "docker"],
  });
  await createProject(context, {
    name: "Hello",
    description: "A small web app promoted dev → test → prod",
    lifecycle: "default",
  });
  const empty = { environments: [], roles: [], targets: [] };
  await createVariable(context, "hello", {
    name: "Greeting",
    value: "Hello from Ferry",
    sensitive: false,
    scope: empty,
  });
  await createVariable(context, "hello", {
    name: "Greeting",
    value: "Hello from production",
    sensitive: false,
    scope: { ...empty, environments: ["prod"] },
  });
  await setProcess(context, "hello", {
    images: [],
    steps: validateSteps([
      {
        name: "Say hello",
        kind: "script",
        roles: [],
        environments: [],
        excludeEnvironments: [],
        condition: "success",
        required: true,
        config: {
          script:
            'echo "$GREETING (release $RELEASE in $ENVIRONMENT)"\necho "the password is $PASSWORD — masked in this log"',
          env: {
            GREETING: "#{Greeting}",
            RELEASE: "#{Ferry.Release.Number}",
            ENVIRONMENT: "#{Ferry.Environment.Name}",
            PASSWORD: "#{DatabasePassword}",
          },
        },
      },
    ]),
  });
  await createVariable(context, "hello", {
    name: "DatabasePassword",
    value: `demo-${Math.random().toString(36).slice(2)}`,
    sensitive: true,
    scope: empty,
  });
  return true;
}
