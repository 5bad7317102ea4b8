import { describe, expect, it } from "vitest";
import { urlForLog } from "./urlForLog.js";

describe("urlForLog", () => {
  it("keeps the path and the parameter names, never a value", () => {
    expect(urlForLog("/api/v1/projects")).toBe("/api/v1/projects");
    expect(urlForLog("/api/v1/tasks?api_key=ferry_secretKEY123&state=failed")).toBe("/api/v1/tasks?api_key=…&state=…");
    expect(urlForLog("/api/v1/session/oidc/callback?code=secret-code&state=s")).toBe(
      "/api/v1/session/oidc/callback?code=…&state=…",
    );
    expect(urlForLog("/api/v1/tasks?filter%5Bstate%5D=x&items[]=1")).toBe(
      "/api/v1/tasks?filter%5Bstate%5D=…&items[]=…",
    );
  });

  it("hides a part that is not name=value, or whose name could itself be a secret", () => {
    expect(urlForLog("/api/v1/tasks?ferry_secretKEY123")).toBe("/api/v1/tasks?…");
    expect(urlForLog(`/x?${"a".repeat(65)}=1&b=2`)).toBe("/x?…&b=…");
    expect(urlForLog("/x?na me=1&=2")).toBe("/x?…&…");
    expect(urlForLog("/x?")).toBe("/x?");
  });
});
