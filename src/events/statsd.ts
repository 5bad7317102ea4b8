import { createSocket, type Socket } from "node:dgram";
import { isIPv6 } from "node:net";

export interface StatsdTarget {
  host: string;
  port: number;
}

/**
 * Fire-and-forget StatsD over UDP: a lost datagram loses one count, never delays a
 * deployment. The socket does not keep the process alive.
 */
export class StatsdClient {
  private socket: Socket | undefined;

  constructor(
    private readonly target: StatsdTarget,
    private readonly onError: (error: Error) => void,
  ) {}

  /** Sends the lines ("name:value|type") in one datagram. */
  send(lines: readonly string[]): void {
    if (!this.socket) {
      this.socket = createSocket(isIPv6(this.target.host) ? "udp6" : "udp4");
      this.socket.on("error", this.onError);
      this.socket.unref();
    }
    this.socket.send(lines.join("\n"), this.target.port, this.target.host, (error) => {
      if (error) this.onError(error);
    });
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }
}

/** One part of a dotted StatsD name: '.', ':', '|' and anything unusual become '_'. */
export function statsdName(part: string): string {
  return part.replace(/[^A-Za-z0-9_-]/g, "_");
}
