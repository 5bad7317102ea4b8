import type { z } from "zod";
import { type FieldIssue, toJsonPointer } from "./errors.js";

/** Turns zod's issues into field issues with JSON pointers, one per unknown key. */
export function toFieldIssues(error: z.ZodError, location?: "query" | "path"): FieldIssue[] {
  const issues: FieldIssue[] = [];
  for (const issue of error.issues) {
    const where = location ? { in: location } : {};
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        issues.push({
          pointer: toJsonPointer([...issue.path, key]),
          detail: "unknown field; remove it (see /api/v1/openapi.json for the fields this route takes)",
          ...where,
        });
      }
    } else {
      issues.push({ pointer: toJsonPointer(issue.path), detail: issue.message, ...where });
    }
  }
  return issues;
}
