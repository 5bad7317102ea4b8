export interface ServerSentEvent {
  /** The `event:` field; "message" when the event named none. */
  event: string;
  /** The `data:` lines, joined with "\n". */
  data: string;
  /** The `id:` field of this event, if it had one. */
  id: string | undefined;
}

/**
 * Turns a text/event-stream body, fed in chunks as they arrive, into events (the
 * WHATWG "event stream interpretation", minus `retry:`, which nothing here uses).
 * A chunk may end anywhere: inside a line, or between the "\r" and "\n" of one line break.
 */
export class ServerSentEventParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private id: string | undefined;

  /** Feeds the next piece of the body; returns the events it completed. */
  push(text: string): ServerSentEvent[] {
    this.buffer += text;
    const events: ServerSentEvent[] = [];
    for (;;) {
      const lineBreak = /\r\n|\r|\n/.exec(this.buffer);
      if (!lineBreak) break;
      // A "\r" at the very end may be the first half of "\r\n": wait for the next chunk.
      if (lineBreak[0] === "\r" && lineBreak.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, lineBreak.index);
      this.buffer = this.buffer.slice(lineBreak.index + lineBreak[0].length);
      const event = this.takeLine(line);
      if (event) events.push(event);
    }
    return events;
  }

  private takeLine(line: string): ServerSentEvent | undefined {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.id = value;
        break;
      default:
        // Unknown fields are ignored, as the format requires.
        break;
    }
    return undefined;
  }

  private dispatch(): ServerSentEvent | undefined {
    const event =
      this.data.length === 0 ? undefined : { event: this.event || "message", data: this.data.join("\n"), id: this.id };
    this.event = "";
    this.data = [];
    this.id = undefined;
    return event;
  }
}
