import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MASK } from "../src/engine/logMasker.js";
import { type CliResult, expectSuccess, isolatedEnv, ROOT, runFerry } from "./helpers/cli.js";
import { dialects } from "./helpers/databases.js";
import { startTestServerOn, type TestServer } from "./helpers/server.js";

/**
 * Issue 11, findings 8, 9, 10 and 12: what Ferry prints and shows, attacked the way the
 * attack pass did it, against a real server and engine (in-process, real HTTP) and the real
 * `bin/ferry`, on SQLite and PostgreSQL.
 *
 * 8. Control characters: refused in names and descriptions; a decision comment cannot add a
 *    forged log line; what the CLI prints from the server (task logs, project show, api-key
 *    list) shows control characters as visible escapes.
 * 9. The log masker hides base64 of "user:secret" at every offset, hex, a filter's output
 *    of a secret in an approval prompt, wrapped base64, and a multi-line secret printed line
 *    by line.
 * 10. `plan` hides sensitive variables' names from a caller without viewSensitiveNames.
 * 12. Webhook URLs: the origin only to viewers who do not administer the project, and in
 *     the audit log.
 */

/** Raw terminal controls an attacker would use: ESC sequences, CR, BEL, C1 CSI, a right-to-left override. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
const RAW_CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

interface Problem {
  detail: string;
  errors?: { pointer: string; detail: string }[];
}

describe.each(dialects)("output hygiene on %s", (dialect) => {
  let test: TestServer;
  let home: string;
  const run = randomBytes(4).toString("hex");
  const keys: Record<string, string> = {};

  const admin = async <T = Record<string, unknown>>(method: string, path: string, body?: unknown) => {
    const response = await test.call<T>(method, path, body);
    expect(response.status, `${method} ${path}: ${JSON.stringify(response.body)}`).toBeLessThan(300);
    return response.body;
  };
  /** A request with another user's key. */
  const as = async <T = Record<string, unknown>>(user: string, method: string, path: string, body?: unknown) => {
    const response = await fetch(new URL(path, test.server.url), {
      method,
      headers: {
        authorization: `Bearer ${keys[user]}`,
        ...(body !== undefined && { "content-type": "application/json" }),
      },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    return { status: response.status, text, body: (text ? JSON.parse(text) : undefined) as T };
  };
  const ferry = (args: string[]): Promise<CliResult> =>
    runFerry(args, isolatedEnv(home, { FERRY_URL: test.server.url, FERRY_API_KEY: test.apiKey }));
  const logOf = async (taskId: string) =>
    (await admin<{ lines: { text: string }[] }>("GET", `/api/v1/tasks/${taskId}/log`)).lines.map((line) => line.text);
  const waitForState = async (taskId: string, state: string) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const task = await admin<{ state: string }>("GET", `/api/v1/tasks/${taskId}`);
      if (task.state === state) return;
      if (Date.now() > deadline) throw new Error(`task ${taskId} is ${task.state}, not ${state}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  /** A project with one release of `steps` and `variables`; returns the release's deployment task to dev. */
  const deployProject = async (name: string, steps: unknown[], variables: unknown[] = []) => {
    await admin("POST", "/api/v1/projects", { name, lifecycle: "plain" });
    for (const variable of variables) await admin("POST", `/api/v1/projects/${name}/variables`, variable);
    await admin("PUT", `/api/v1/projects/${name}/process`, { steps });
    await admin("POST", `/api/v1/projects/${name}/releases`, { version: "1.0.0" });
    const created = await admin<{ taskId: string }>("POST", `/api/v1/projects/${name}/deployments`, {
      release: "1.0.0",
      environment: "dev",
    });
    return created.taskId;
  };
  /** A user in a team with `role` on `project` (every environment), and an API key for them. */
  const userWithRole = async (username: string, role: string, project: string) => {
    await admin("POST", "/api/v1/users", { username, password: `${username}-long-password` });
    await admin("POST", "/api/v1/teams", {
      name: `${username} team`,
      members: [username],
      roles: [{ role, projects: [project] }],
    });
    keys[username] = (
      await admin<{ key: string }>("POST", "/api/v1/api-keys", { name: `${username} key`, user: username })
    ).key;
  };

  beforeAll(async () => {
    test = await startTestServerOn(dialect);
    home = await mkdtemp(join(tmpdir(), "ferry-security-output-"));
    await admin("POST", "/api/v1/environments", { name: "dev" });
    await admin("POST", "/api/v1/lifecycles", { name: "plain", phases: [{ environments: ["dev"] }] });
  }, 60_000);

  afterAll(async () => {
    await test?.close();
    if (home) await rm(home, { recursive: true, force: true });
  });

  describe("finding 8: control characters", () => {
    it("refuses them in API key names, display names, names and descriptions, naming the field and the character", async () => {
      const attempts: [string, string, Record<string, unknown>, string, string][] = [
        // [method, path, body, field, character reported]
        ["POST", "/api/v1/api-keys", { name: "ci\u001b[2J\u001b]0;pwned\u0007" }, "/name", "U+001B"],
        ["POST", "/api/v1/api-keys", { name: "ci\rroot key" }, "/name", "U+000D"],
        ["POST", "/api/v1/api-keys", { name: "ci \u202egnp.exe" }, "/name", "U+202E"],
        ["POST", "/api/v1/api-keys", { name: "ci \u009b2J" }, "/name", "U+009B"],
        ["POST", "/api/v1/api-keys", { name: "ci\u007f" }, "/name", "U+007F"],
        ["POST", "/api/v1/api-keys", { name: "ci\nadmin" }, "/name", "U+000A"],
        ["POST", "/api/v1/projects", { name: "shop \u2066evil\u2069", lifecycle: "plain" }, "/name", "U+2066"],
        [
          "POST",
          "/api/v1/projects",
          { name: "shop", lifecycle: "plain", description: "ok\u001b[31m" },
          "/description",
          "U+001B",
        ],
        [
          "POST",
          "/api/v1/projects",
          { name: "shop", lifecycle: "plain", description: "line\roverwritten" },
          "/description",
          "U+000D",
        ],
        ["POST", "/api/v1/environments", { name: "qa", description: "\u202eesrever" }, "/description", "U+202E"],
        [
          "POST",
          "/api/v1/users",
          { username: "eve", password: "eve-long-password", displayName: "Eve\u0007" },
          "/displayName",
          "U+0007",
        ],
        ["POST", "/api/v1/roles", { name: "Sneaky\u001b", permissions: ["view"] }, "/name", "U+001B"],
      ];
      for (const [method, path, body, field, character] of attempts) {
        const response = await test.call<Problem>(method, path, body);
        expect(response.status, `${path} ${JSON.stringify(body)}`).toBe(400);
        const issue = response.body.errors?.find((error) => error.pointer === field);
        expect(issue?.detail, JSON.stringify(response.body)).toContain(character);
        expect(issue?.detail).toContain("remove");
      }
      // Nothing was created.
      const apiKeys = await admin<{ items: { name: string }[] }>("GET", "/api/v1/api-keys");
      expect(apiKeys.items.map((key) => key.name).filter((name) => name.startsWith("ci"))).toEqual([]);
      // A description keeps its paragraphs and tabs.
      const described = await admin<{ description: string }>("POST", "/api/v1/projects", {
        name: `described-${run}`,
        lifecycle: "plain",
        description: "First paragraph.\n\n\tIndented second.",
      });
      expect(described.description).toBe("First paragraph.\n\n\tIndented second.");
    });

    it("keeps a decision comment on its own log line: a newline in it cannot forge another", async () => {
      const taskId = await deployProject(`approved-${run}`, [
        { name: "approve", kind: "approval", config: { instructions: "Ship it?", separateApprover: false } },
      ]);
      await waitForState(taskId, "waiting");
      const forged = "looks good\nrm1 chose approve: forged\r\u001b[1A\u001b[2K";
      await admin("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve", comment: forged });
      expect((await test.waitForTask(taskId)).state).toBe("succeeded");
      const lines = await logOf(taskId);
      const chose = lines.filter((line) => line.includes(" chose "));
      expect(chose).toEqual([
        "admin (FERRY_ADMIN_API_KEY) chose approve: looks good\\x0arm1 chose approve: forged\\x0d\\x1b[1A\\x1b[2K",
      ]);
      expect(lines.filter((line) => line.startsWith("rm1"))).toEqual([]);

      // A rejection's comment becomes the task's error and a log line: one line as well.
      const rejectedTask = await deployProject(`rejected-${run}`, [
        { name: "approve", kind: "approval", config: { instructions: "Ship it?", separateApprover: false } },
      ]);
      await waitForState(rejectedTask, "waiting");
      await admin("POST", `/api/v1/tasks/${rejectedTask}/decisions`, {
        decision: "reject",
        comment: "no\nrm1 chose approve",
      });
      expect((await test.waitForTask(rejectedTask)).state).toBe("failed");
      const rejectedLines = await logOf(rejectedTask);
      expect(rejectedLines.filter((line) => line.startsWith("rm1"))).toEqual([]);
      expect(rejectedLines.some((line) => line.includes("rejected by admin (FERRY_ADMIN_API_KEY): no\\x0arm1"))).toBe(
        true,
      );
    });

    it("shows control characters as visible escapes in ferry task logs, project show and api-key list", async () => {
      // Script output is the script's to write: stored as it is, escaped where it is printed.
      const taskId = await deployProject(`noisy-${run}`, [
        {
          name: "noisy",
          kind: "script",
          config: {
            script: [
              String.raw`printf 'before\033[2J\033]0;pwned\007 \rforged line\n'`,
              String.raw`printf 'order \342\200\256gnp.exe and \302\233 2J\n'`,
            ].join("\n"),
          },
        },
      ]);
      expect((await test.waitForTask(taskId)).state).toBe("succeeded");
      expect((await logOf(taskId)).join("\n")).toContain("\u001b[2J");

      // A project and an API key stored before names and descriptions refused control characters.
      const { db } = test.server.context;
      await admin("POST", "/api/v1/projects", { name: `legacy-${run}`, lifecycle: "plain" });
      await db
        .updateTable("projects")
        .set({ description: "fine\u001b]0;owned\u0007\rfake: field\nsecond line" })
        .where("slug", "=", `legacy-${run}`)
        .execute();
      const key = await admin<{ id: string }>("POST", "/api/v1/api-keys", { name: `legacy-key-${run}` });
      await db
        .updateTable("api_keys")
        .set({ name: `legacy\u001b[8m-${run}\u202e` })
        .where("id", "=", key.id)
        .execute();

      const logs = await ferry(["task", "logs", taskId]);
      const show = await ferry(["project", "show", `legacy-${run}`]);
      const list = await ferry(["api-key", "list"]);
      const json = await ferry(["project", "show", `legacy-${run}`, "--json"]);
      for (const result of [logs, show, list, json]) {
        expectSuccess(result);
        expect(result.stdout).not.toMatch(RAW_CONTROLS);
        expect(result.stderr).not.toMatch(RAW_CONTROLS);
      }
      expect(logs.stdout).toContain(String.raw`before\x1b[2J\x1b]0;pwned\x07 \x0dforged line`);
      expect(logs.stdout).toContain(String.raw`order \u202egnp.exe and \x9b 2J`);
      // The description's second line is indented under its value: it cannot pass for a field.
      expect(show.stdout).toContain(String.raw`description: fine\x1b]0;owned\x07\x0dfake: field`);
      expect(show.stdout).toMatch(/\n {13}second line\n/);
      expect(show.stdout.split("\n").filter((line) => line.startsWith("fake:"))).toEqual([]);
      expect(list.stdout).toContain(String.raw`legacy\x1b[8m-${run}\u202e`);
      // --json parses to the same text.
      expect((JSON.parse(json.stdout) as { description: string }).description).toBe(
        "fine\u001b]0;owned\u0007\rfake: field\nsecond line",
      );
    });
  });

  describe("finding 9: the log masker", () => {
    it("hides the encodings a script prints of a secret, and a filter's output of it in an approval prompt", async () => {
      const token = `tok-${randomBytes(18).toString("hex")}`;
      const keyLines = Array.from({ length: 4 }, () => randomBytes(24).toString("base64"));
      const key = `-----BEGIN TEST KEY-----\n${keyLines.join("\n")}\n-----END TEST KEY-----`;
      const taskId = await deployProject(
        `masked-${run}`,
        [
          {
            name: "leak",
            kind: "script",
            config: {
              env: { TOKEN: "#{ApiToken}", KEY: "#{PrivateKey}" },
              script: [
                // What curl -u prints in its verbose output, with users that put the token at each offset.
                `for user in u us use user; do printf '> Authorization: Basic %s\\n' "$(printf '%s:%s' "$user" "$TOKEN" | base64 -w0)"; done`,
                `printf 'hex %s\\n' "$(printf '%s' "$TOKEN" | od -An -tx1 -v | tr -d ' \\n')"`,
                `printf 'HEX %s\\n' "$(printf '%s' "$TOKEN" | od -An -tx1 -v | tr -d ' \\n' | tr a-f A-F)"`,
                // base64 wraps at 76 characters: the key's encoding spans several lines.
                `echo "$KEY" | base64`,
                // The key printed one line at a time, among other output.
                `printf '%s\\n' "$KEY" | while IFS= read -r line; do echo "key line: $line"; done`,
              ].join("\n"),
            },
          },
          {
            name: "approve",
            kind: "approval",
            config: { instructions: "Deploy with token #{ApiToken | ToUpper}?", separateApprover: false },
          },
        ],
        [
          { name: "ApiToken", value: token, sensitive: true },
          { name: "PrivateKey", value: key, sensitive: true },
        ],
      );
      await waitForState(taskId, "waiting");
      const decisions = await admin<{ prompt: string }[]>("GET", `/api/v1/tasks/${taskId}/decisions`);
      await admin("POST", `/api/v1/tasks/${taskId}/decisions`, { decision: "approve" });
      expect((await test.waitForTask(taskId)).state).toBe("succeeded");
      const lines = await logOf(taskId);
      const log = lines.join("\n");

      // Everything the script printed that derives from the secrets, computed here as the attacker would.
      const printed = [
        token,
        token.toUpperCase(),
        Buffer.from(token).toString("hex"),
        Buffer.from(token).toString("hex").toUpperCase(),
        ...["u", "us", "use", "user"].map((user) => Buffer.from(`${user}:${token}`).toString("base64")),
        ...(Buffer.from(`${key}\n`)
          .toString("base64")
          .match(/.{1,76}/g) ?? []),
        ...keyLines,
      ];
      for (const form of printed) expect(log, form).not.toContain(form);
      // The token cannot be read back from what is left of any Basic credential line either.
      for (const line of lines.filter((text) => text.startsWith("> Authorization: Basic "))) {
        expect(line).toContain(MASK);
        const visible = line.replace("> Authorization: Basic ", "").split(MASK).join("");
        expect(Buffer.from(visible, "base64").toString("latin1")).not.toContain(token.slice(0, 8));
      }
      expect(lines.filter((text) => text.startsWith("key line: "))).toEqual([
        `key line: ${MASK}`,
        ...keyLines.map(() => `key line: ${MASK}`),
        `key line: ${MASK}`,
      ]);
      expect(decisions[0]?.prompt).toBe(`Deploy with token ${MASK}?`);
      expect(log).toContain(`waiting for a decision: Deploy with token ${MASK}?`);
    });
  });

  describe("finding 10: plan and sensitive variables' names", () => {
    it("leaves sensitive variables out of the plan for a caller without viewSensitiveNames", async () => {
      const project = `planned-${run}`;
      await admin("POST", "/api/v1/projects", { name: project, lifecycle: "plain" });
      await admin("POST", `/api/v1/projects/${project}/variables`, { name: "Greeting", value: "hello" });
      await admin("POST", `/api/v1/projects/${project}/variables`, {
        name: "StripeLiveKey",
        value: "sk_live_not_for_viewers",
        sensitive: true,
      });
      await admin("PUT", `/api/v1/projects/${project}/process`, {
        steps: [
          {
            name: "greet",
            kind: "script",
            config: { script: 'echo "$@"', arguments: ["#{Greeting}", "#{StripeLiveKey}"] },
          },
          { name: "other", kind: "script", config: { script: 'echo "$@"', arguments: ["#{NotDefinedAnywhere}"] } },
        ],
      });
      await admin("POST", `/api/v1/projects/${project}/releases`, { version: "1.0.0" });
      await userWithRole(`viewer${run}`, "viewer", project);
      await userWithRole(`deployer${run}`, "deployer", project);
      const path = `/api/v1/projects/${project}/plan?release=1.0.0&environment=dev`;

      // The attack: a viewer asks for the plan and reads the sensitive variable's name.
      const viewed = await as<{ steps: { actions: string[] }[]; variables: { name: string }[] }>(
        `viewer${run}`,
        "GET",
        path,
      );
      expect(viewed.status).toBe(200);
      expect(viewed.text).not.toContain("StripeLiveKey");
      expect(viewed.body.variables.map((variable) => variable.name)).toContain("Greeting");
      // A sensitive variable and one that does not exist look the same to the viewer.
      expect(viewed.body.steps.map((step) => step.actions)).toEqual([
        [`run a bash script (1 lines) with 0 environment variables and arguments hello ${MASK}`],
        [`run a bash script (1 lines) with 0 environment variables and arguments ${MASK}`],
      ]);
      // The variables list hides it from the viewer in the same way.
      const listed = await as(`viewer${run}`, "GET", `/api/v1/projects/${project}/variables`);
      expect(listed.text).not.toContain("StripeLiveKey");

      // With viewSensitiveNames (Deployer), the name shows, its value masked.
      const deployer = await as<{ variables: { name: string; value: string; sensitive: boolean }[] }>(
        `deployer${run}`,
        "GET",
        path,
      );
      expect(deployer.status).toBe(200);
      expect(deployer.body.variables).toContainEqual({ name: "StripeLiveKey", value: MASK, sensitive: true });
      expect(deployer.text).not.toContain("sk_live_not_for_viewers");
    });
  });

  describe("finding 12: webhook URLs", () => {
    it("shows a viewer only the origin, the project's administrators the whole URL, and the audit log only the origin", async () => {
      const project = `hooked-${run}`;
      const credentialPath = `/services/T0${run}/B0${run}/chat-credential-${run}`;
      await admin("POST", "/api/v1/projects", { name: project, lifecycle: "plain" });
      const created = await admin<{ id: string; url: string }>("POST", `/api/v1/projects/${project}/webhooks`, {
        url: `http://127.0.0.1:9${credentialPath}`,
        secret: "webhook-secret-0123456789",
      });
      expect(created.url).toBe(`http://127.0.0.1:9${credentialPath}`);
      await userWithRole(`hookviewer${run}`, "viewer", project);
      await userWithRole(`hookadmin${run}`, "administrator", project);

      // The attack: a viewer of the project reads the webhook and gets the chat credential.
      const list = await as<{ items: { url: string }[] }>(
        `hookviewer${run}`,
        "GET",
        `/api/v1/projects/${project}/webhooks`,
      );
      const one = await as<{ url: string }>(
        `hookviewer${run}`,
        "GET",
        `/api/v1/projects/${project}/webhooks/${created.id}`,
      );
      for (const response of [list, one]) {
        expect(response.status).toBe(200);
        expect(response.text).not.toContain(`chat-credential-${run}`);
      }
      expect(list.body.items.map((item) => item.url)).toEqual(["http://127.0.0.1:9/…"]);
      expect(one.body.url).toBe("http://127.0.0.1:9/…");

      // The project's administrator (not a server administrator) sees it whole.
      const administered = await as<{ url: string }>(
        `hookadmin${run}`,
        "GET",
        `/api/v1/projects/${project}/webhooks/${created.id}`,
      );
      expect(administered.body.url).toBe(`http://127.0.0.1:9${credentialPath}`);

      // Rotated within the same origin: the audit log says it changed, not what it is.
      await admin("PATCH", `/api/v1/projects/${project}/webhooks/${created.id}`, {
        url: `http://127.0.0.1:9${credentialPath}-rotated`,
      });
      await admin("DELETE", `/api/v1/projects/${project}/webhooks/${created.id}`);
      const audit = await test.call<{ items: { action: string; diff: Record<string, unknown> }[] }>(
        "GET",
        `/api/v1/audit?resource=webhook&limit=500`,
      );
      const entries = audit.body.items.filter((entry) => entry.action.startsWith("webhook."));
      expect(JSON.stringify(entries)).not.toContain(`chat-credential-${run}`);
      const diffOf = (action: string) => entries.find((entry) => entry.action === action)?.diff;
      expect(diffOf("webhook.create")).toMatchObject({ url: { from: null, to: "http://127.0.0.1:9/…" } });
      expect(diffOf("webhook.update")).toEqual({
        url: { from: "http://127.0.0.1:9/…", to: "http://127.0.0.1:9/… (changed)" },
      });
      expect(diffOf("webhook.delete")).toMatchObject({ url: { from: "http://127.0.0.1:9/…", to: null } });
    });
  });
});

describe("the CLI prints only through src/cli/output.ts", () => {
  /**
   * Files that write to standard output or error themselves, and why that is safe: none of
   * them prints text from the server for people.
   */
  const ALLOWED = new Map([
    ["output.ts", "the one place that escapes control characters"],
    ["admin.ts", "streams the audit export's JSON lines as the server sent them, for a file"],
    ["proxy.ts", "prints its own listen address and shutdown notices"],
    ["demo.ts", "prints the address and key it made itself"],
    ["processes.ts", "answers the server that ran it with one JSON line (machine output, never shown to people)"],
    ["hostRouters.ts", "answers the server that ran it with one JSON line (machine output, never shown to people)"],
  ]);

  it("has no other file writing to process.stdout or process.stderr", async () => {
    const directory = join(ROOT, "src", "cli");
    const offenders: string[] = [];
    for (const file of await readdir(directory)) {
      if (!file.endsWith(".ts") || file.endsWith(".test.ts") || ALLOWED.has(file)) continue;
      const text = await readFile(join(directory, file), "utf8");
      if (/process\.(stdout|stderr)\.write/.test(text)) offenders.push(file);
    }
    expect(offenders, "print through writeOutput / writeError / printTable / printFields / printJson").toEqual([]);
  });
});
