import type { Readable } from "node:stream";
import type { Kysely } from "kysely";
import { NotFoundError } from "../domain/errors.js";
import type { PinnedPackage } from "../domain/releases.js";
import { releaseSnapshotSchema } from "../domain/releases.js";
import type { PackageFeed } from "../feeds/packages.js";
import type { Database } from "../store/schema.js";
import type { RunScope } from "./processRunner.js";
import { TaskFailure } from "./types.js";

/**
 * The step context's seam to the packages a run's snapshot pins (a release's, ADR 0044, or a
 * runbook version's, ADR 0068): which version of a package, and its archive's bytes from the
 * feed's storage. The step that unpacks them
 * checks the sha256 on the target against the pinned one.
 */
export interface StepPackages {
  /** The version of the package the release pins; a TaskFailure naming the release's packages when it pins none of that name. */
  pinned(name: string): Promise<PinnedPackage>;
  /** The pinned archive's bytes, streamed; a TaskFailure when the version was deleted since. */
  open(pinned: PinnedPackage): Promise<Readable>;
}

export function stepPackages(feed: PackageFeed | undefined, db: Kysely<Database>, scope: RunScope): StepPackages {
  const subject = scope.subject;
  if (subject.kind !== "release") {
    // A runbook run brings its own snapshot's packages (engine/runbooks.ts); any other subject pins none.
    return pinnedStepPackages(feed, async () => [], {
      owner: `this ${subject.kind}`,
      fix: "unpack it in a deployment or a runbook run",
    });
  }
  return pinnedStepPackages(
    feed,
    async () => {
      const row = await db.selectFrom("releases").select("snapshot").where("id", "=", subject.id).executeTakeFirst();
      if (!row) return [];
      return releaseSnapshotSchema.parse(JSON.parse(row.snapshot)).packages;
    },
    {
      owner: `release ${subject.version}`,
      fix: "add the package to the project's process ('packages') and create a new release",
    },
  );
}

/**
 * The packages a snapshot pins (a release's, a runbook version's or a draft run's), loaded
 * once; `owner` names the snapshot in errors ("release 1.2.0", "runbook version 3") and
 * `fix` says how to pin a package it lacks.
 */
export function pinnedStepPackages(
  feed: PackageFeed | undefined,
  load: () => Promise<readonly PinnedPackage[]>,
  describe: { owner: string; fix: string },
): StepPackages {
  let snapshot: Promise<readonly PinnedPackage[]> | undefined;
  return {
    async pinned(name) {
      snapshot ??= load();
      const packages = await snapshot;
      const found = packages.find((item) => item.name === name);
      if (found) return found;
      throw new TaskFailure(
        `${describe.owner} pins no package '${name}' (it pins: ${packages.map((item) => `${item.name} ${item.version}`).join(", ") || "none"}); ${describe.fix}`,
      );
    },
    async open(pinned) {
      if (!feed) throw new TaskFailure("this server has no package feed (it was started without one)");
      try {
        const row = await feed.get(pinned.name, pinned.version);
        if (row.id !== pinned.id || row.sha256 !== pinned.sha256) throw new NotFoundError("replaced");
        return feed.read(row);
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
        throw new TaskFailure(
          `package ${pinned.name} ${pinned.version}, which ${describe.owner} pins, is no longer in the feed (deleted, or deleted and pushed again with other bytes); push it again, or pin another version`,
        );
      }
    },
  };
}

/** For a runner without a package feed (an engine embedded in a test): every use fails, saying why. */
export const noPackages: StepPackages = {
  pinned: async () => {
    throw new TaskFailure("this server has no package feed (it was started without one)");
  },
  open: async () => {
    throw new TaskFailure("this server has no package feed (it was started without one)");
  },
};
