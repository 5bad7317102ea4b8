import { describe, expect, it } from "vitest";
import { ServerSentEventParser } from "./serverSentEventParser.js";

const stream = [
  ": a comment the parser skips\n",
  'id: 1\nevent: line\ndata: {"line":1}\n\n',
  'id: 2\r\nevent: line\r\ndata: {"line":2}\r\n\r\n',
  "data: first\ndata:second\nunknown: ignored\n\n",
  'event: end\ndata: {"state":"succeeded"}\n\n',
].join("");

const expected = [
  { event: "line", data: '{"line":1}', id: "1" },
  { event: "line", data: '{"line":2}', id: "2" },
  { event: "message", data: "first\nsecond", id: undefined },
  { event: "end", data: '{"state":"succeeded"}', id: undefined },
];

describe("ServerSentEventParser", () => {
  it("reads events, CRLF line breaks, multi-line data and comments", () => {
    expect(new ServerSentEventParser().push(stream)).toEqual(expected);
  });

  it("gives the same events however the stream is cut into chunks", () => {
    for (let size = 1; size <= 7; size++) {
      const parser = new ServerSentEventParser();
      const events = [];
      for (let start = 0; start < stream.length; start += size)
        events.push(...parser.push(stream.slice(start, start + size)));
      expect(events, `chunks of ${size}`).toEqual(expected);
    }
  });

  it("holds back an event until its blank line arrives", () => {
    const parser = new ServerSentEventParser();
    expect(parser.push("event: line\ndata: x\n")).toEqual([]);
    expect(parser.push("\n")).toEqual([{ event: "line", data: "x", id: undefined }]);
  });
});
