import { describe, expect, it } from "vitest";
import { formatImageReference, parseImageReference } from "./imageReference.js";

const digest = `sha256:${"a".repeat(64)}`;

describe("image references", () => {
  it.each([
    ["nginx", { registry: undefined, repository: "nginx", tag: undefined, digest: undefined }, "nginx:latest"],
    ["team/app:1.4.2", { registry: undefined, repository: "team/app", tag: "1.4.2" }, "team/app:1.4.2"],
    ["localhost/app", { registry: "localhost", repository: "app" }, "localhost/app:latest"],
    [`127.0.0.1:5000/demo/app@${digest}`, { registry: "127.0.0.1:5000", digest }, `127.0.0.1:5000/demo/app@${digest}`],
    // A digest wins over the tag: what runs is exactly what was pinned.
    [`ghcr.io/team/api:2.1@${digest}`, { registry: "ghcr.io", tag: "2.1", digest }, `ghcr.io/team/api@${digest}`],
    ["[::1]:5000/app:v1", { registry: "[::1]:5000", repository: "app", tag: "v1" }, "[::1]:5000/app:v1"],
  ])("parses %s", (text, expected, formatted) => {
    const reference = parseImageReference(text);
    expect(reference).toMatchObject(expected);
    expect(formatImageReference(reference)).toBe(formatted);
  });

  it.each([
    "",
    "--privileged",
    "-v=/:/host",
    "app:1 --rm",
    "App/Upper",
    "app@sha256:short",
    "app:-bad",
    "../etc/passwd",
    "registry.example.com:99999/app",
    "reg_istry.example.com/app",
    "app\n--privileged",
    `a${"/b".repeat(600)}`,
  ])("refuses %j", (text) => {
    expect(() => parseImageReference(text)).toThrow(/is not an image reference/);
  });
});
