import { describe, expect, it } from "vitest";
import { InputError } from "../../domain/errors.js";
import { validateSteps } from "../registry.js";

const step = (kind: string, config: Record<string, unknown>) => ({
  name: "ops",
  kind,
  roles: [],
  environments: [],
  excludeEnvironments: [],
  condition: "success" as const,
  required: true,
  config,
});

/** The problems a process saved with this step would be refused with, as the API words them. */
function problems(kind: string, config: Record<string, unknown>): string[] {
  try {
    validateSteps([step(kind, config)]);
    return [];
  } catch (error) {
    if (!(error instanceof InputError)) throw error;
    return error.issues.map((issue) => `${issue.pointer}: ${issue.detail}`);
  }
}

describe("the operations steps' configs", () => {
  it("fills in a backup's defaults: the database on 127.0.0.1, an hour to dump", () => {
    const [parsed] = validateSteps([step("postgres-backup", { database: "shop", user: "backup" })]);
    expect(parsed?.config).toEqual({ database: "shop", user: "backup", host: "127.0.0.1", timeoutSeconds: 3600 });
  });

  it("names every field that is wrong or missing, and refuses unknown ones", () => {
    expect(
      problems("mysql-backup", {
        database: "",
        port: 70000,
        copyTo: { target: "vault", directory: "relative/dir" },
        compress: "xz",
      }),
    ).toEqual([
      "/steps/0/config/database: Too small: expected string to have >=1 characters",
      "/steps/0/config/port: Too big: expected number to be <=65535",
      "/steps/0/config/user: give the database user to sign in as, e.g. user: backup",
      "/steps/0/config/copyTo/directory: use an absolute directory, e.g. /var/backups/shop",
      "/steps/0/config/compress: unknown field; remove it (see /api/v1/openapi.json for the fields this route takes)",
    ]);
  });

  it("a copy goes to a target's directory or to a bucket, and each names what it misses", () => {
    expect(problems("postgres-backup", { database: "shop", user: "u", copyTo: { target: "vault" } })).toEqual([
      "/steps/0/config/copyTo/directory: give the directory on that target, e.g. directory: /var/backups/shop",
    ]);
    expect(
      problems("postgres-backup", {
        database: "shop",
        user: "u",
        copyTo: { s3: { bucket: "b", storageClass: "cold" } },
      }),
    ).toEqual([
      "/steps/0/config/copyTo/s3/accessKeyId: give the access key id, e.g. accessKeyId: '#{Backup.S3.AccessKeyId}'",
      "/steps/0/config/copyTo/s3/secretAccessKey: give the secret access key from a sensitive variable, e.g. secretAccessKey: '#{Backup.S3.SecretAccessKey}'",
      "/steps/0/config/copyTo/s3/storageClass: write a storage class, e.g. STANDARD_IA",
    ]);
    const s3 = { bucket: "b", accessKeyId: "#{Id}", secretAccessKey: "#{Secret}" };
    expect(problems("mysql-backup", { database: "shop", user: "u", copyTo: { s3, target: "vault" } })).toEqual([
      "/steps/0/config/copyTo/s3: copy to a bucket or to a target's directory, not both: remove target and directory, or s3",
    ]);
    const [parsed] = validateSteps([step("mysql-backup", { database: "shop", user: "u", copyTo: { s3 } })]);
    expect(parsed?.config).toMatchObject({ copyTo: { s3: { ...s3, region: "us-east-1" } } });
  });

  it("restore-verify needs the engine and the file", () => {
    expect(problems("restore-verify", { engine: "oracle", database: "shop", user: "u" })).toEqual([
      "/steps/0/config/engine: write engine: postgres or engine: mysql",
      "/steps/0/config/file: give the backup file on the target, e.g. #{Ferry.Step[backup].Output.file}",
    ]);
  });

  it("exec needs a command as argv; restart takes only its own fields", () => {
    expect(problems("exec", { command: [] })).toEqual([
      "/steps/0/config/command: give the program and its arguments, e.g. [rake, db:migrate]",
    ]);
    expect(problems("exec", { command: "rake db:migrate" })).toEqual([
      "/steps/0/config/command: Invalid input: expected array, received string",
    ]);
    expect(problems("restart", { drainSeconds: -1, strategy: "blueGreen" })).toEqual([
      "/steps/0/config/drainSeconds: Too small: expected number to be >=0",
      "/steps/0/config/strategy: unknown field; remove it (see /api/v1/openapi.json for the fields this route takes)",
    ]);
  });
});
