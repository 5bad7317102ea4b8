import { describe, expect, it } from "vitest";
import { createFreezeSchema, type FreezeWindow, freezeCovers } from "./freezes.js";

describe("freezeCovers", () => {
  it("covers a one-off window from its start up to (not including) its end", () => {
    const window: FreezeWindow = { kind: "once", from: "2026-12-24T00:00:00Z", until: "2026-12-27T00:00:00Z" };
    expect(freezeCovers(window, "UTC", new Date("2026-12-23T23:59:59Z"))).toBe(false);
    expect(freezeCovers(window, "UTC", new Date("2026-12-24T00:00:00Z"))).toBe(true);
    expect(freezeCovers(window, "UTC", new Date("2026-12-27T00:00:00Z"))).toBe(false);
  });

  it("reads a weekly window in its time zone, across midnight and the end of the week", () => {
    // Friday 16:00 in Berlin for 3 days (to Monday 16:00). December: Berlin is UTC+1.
    const window: FreezeWindow = { kind: "weekly", days: ["fri"], at: "16:00", durationMinutes: 3 * 24 * 60 };
    const berlin = "Europe/Berlin";
    // 2026-12-04 is a Friday.
    expect(freezeCovers(window, berlin, new Date("2026-12-04T14:59:00Z"))).toBe(false); // 15:59 local
    expect(freezeCovers(window, berlin, new Date("2026-12-04T15:00:00Z"))).toBe(true); // 16:00 local
    expect(freezeCovers(window, berlin, new Date("2026-12-06T23:30:00Z"))).toBe(true); // Monday 00:30 local
    expect(freezeCovers(window, berlin, new Date("2026-12-07T15:00:00Z"))).toBe(false); // Monday 16:00 local
    expect(freezeCovers(window, "UTC", new Date("2026-12-04T15:30:00Z"))).toBe(false); // 15:30 in UTC
  });

  it("covers every night with one window a day", () => {
    const nightly: FreezeWindow = {
      kind: "weekly",
      days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
      at: "22:00",
      durationMinutes: 8 * 60,
    };
    expect(freezeCovers(nightly, "UTC", new Date("2026-12-08T03:00:00Z"))).toBe(true);
    expect(freezeCovers(nightly, "UTC", new Date("2026-12-08T12:00:00Z"))).toBe(false);
  });
});

describe("createFreezeSchema", () => {
  it("names the field that is wrong", () => {
    const paths = (value: unknown) =>
      createFreezeSchema.safeParse(value).error?.issues.map((issue) => issue.path.join("."));
    const base = { name: "f", environments: ["prod"] };
    expect(
      paths({ ...base, window: { kind: "once", from: "2026-01-02T00:00:00Z", until: "2026-01-01T00:00:00Z" } }),
    ).toEqual(["window.until"]);
    expect(paths({ ...base, window: { kind: "weekly", days: [], at: "25:00", durationMinutes: 60 } })).toEqual([
      "window.days",
      "window.at",
    ]);
    expect(
      paths({
        ...base,
        timeZone: "Mars/Olympus",
        window: { kind: "weekly", days: ["fri"], at: "16:00", durationMinutes: 1 },
      }),
    ).toEqual(["timeZone"]);
  });
});
