import { describe, expect, it } from "vitest";
import { freeBytesOfDf } from "./targetHealth.js";

describe("the free disk space of a health check", () => {
  it("reads the available 1 KiB blocks of df -Pk", () => {
    const lines = [
      "Filesystem     1024-blocks      Used Available Capacity Mounted on",
      "/dev/root        101430960  20934640  80479936      21% /",
    ];
    expect(freeBytesOfDf(lines)).toBe(80479936 * 1024);
  });

  it("reads a file system name with spaces in the mount point's column as POSIX prints it", () => {
    expect(
      freeBytesOfDf(["Filesystem 1024-blocks Used Available Capacity Mounted on", "tmpfs 100 40 60 40% /mnt/a b"]),
    ).toBe(60 * 1024);
  });

  it("gives nothing for an answer that is not df's", () => {
    expect(freeBytesOfDf([])).toBeUndefined();
    expect(freeBytesOfDf(["Filesystem 1024-blocks Used Available Capacity Mounted on"])).toBeUndefined();
    expect(freeBytesOfDf(["header", "df: .: No such file or directory"])).toBeUndefined();
  });
});
