import { describe, expect, it } from "vitest";
import { AllAtOnce } from "./allAtOnce.js";

const never = new AbortController().signal;

describe("the meeting points of an all-at-once switch", () => {
  it("lets every target past a checkpoint only once all reached it", async () => {
    const meeting = new AllAtOnce(3);
    const passed: number[] = [];
    const waiting = [0, 1].map((index) =>
      meeting.reach("healthy", never).then((failure) => passed.push(index) && failure),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(passed).toEqual([]);
    expect(await meeting.reach("healthy", never)).toBeUndefined();
    expect(await Promise.all(waiting)).toEqual([undefined, undefined]);
  });

  it("tells every waiting target, and every later one, which target failed", async () => {
    const meeting = new AllAtOnce(3);
    const waiting = meeting.reach("switched", never);
    meeting.fail("web-3", "the router refused the switch");
    expect(await waiting).toBe("on web-3: the router refused the switch");
    expect(await meeting.reach("baked", never)).toBe("on web-3: the router refused the switch");
    // The first failure is the one reported.
    meeting.fail("web-2", "later");
    expect(meeting.failure).toBe("on web-3: the router refused the switch");
  });

  it("ends the wait of everyone when the deployment is stopped", async () => {
    const meeting = new AllAtOnce(2);
    const controller = new AbortController();
    const waiting = meeting.reach("healthy", controller.signal);
    controller.abort();
    expect(await waiting).toMatch(/stopped/);
    expect(await meeting.reach("healthy", never)).toMatch(/stopped/);
  });
});
