/**
 * A tiny HTTP reverse proxy in front of the gateway that can refuse what corporate proxies
 * refuse: the WebSocket upgrade on `/ws` (answered 502) and event streams (`/events`, answered
 * 502). Everything else is forwarded, streaming (long-polls pass through untouched). Turning a
 * block on also cuts the connections of that kind already open.
 */

import { request as httpRequest, createServer, type IncomingMessage, type Server } from "node:http";
import { connect, type Socket } from "node:net";
import type { Duplex } from "node:stream";

export class BlockingProxy {
  private readonly server: Server;
  private readonly upgraded = new Set<Duplex>();
  private readonly streams = new Set<Socket>();
  private wsBlocked = false;
  private sseBlocked = false;
  port = 0;
  /** Counts of what went through, by kind, for assertions. */
  readonly seen = { upgrades: 0, refusedUpgrades: 0, events: 0, refusedEvents: 0, polls: 0 };
  /** Every plain HTTP request, in order. */
  readonly requests: Array<{ path: string; ifNoneMatch: string | undefined }> = [];

  constructor(private readonly targetPort: () => number) {
    this.server = createServer((req, res) => {
      const path = req.url ?? "/";
      this.requests.push({ path, ifNoneMatch: req.headers["if-none-match"] });
      if (path.includes("/events")) {
        if (this.sseBlocked) {
          this.seen.refusedEvents += 1;
          res.writeHead(502, { "Content-Type": "text/plain" }).end("event streams are blocked here");
          return;
        }
        this.seen.events += 1;
        this.streams.add(req.socket);
        req.socket.once("close", () => this.streams.delete(req.socket));
      }
      if (path.includes("wait=")) this.seen.polls += 1;
      const upstream = httpRequest(
        { host: "127.0.0.1", port: this.targetPort(), method: req.method, path, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on("error", () => {
        if (!res.headersSent) res.writeHead(502).end("gateway unreachable");
        else res.destroy();
      });
      req.pipe(upstream);
    });
    this.server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.upgrade(req, socket, head),
    );
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    this.port = typeof address === "object" && address !== null ? address.port : 0;
  }

  blockWebSocket(blocked: boolean): void {
    this.wsBlocked = blocked;
    if (blocked) for (const socket of this.upgraded) socket.destroy();
  }

  blockEventStreams(blocked: boolean): void {
    this.sseBlocked = blocked;
    if (blocked) for (const socket of this.streams) socket.destroy();
  }

  async close(): Promise<void> {
    for (const socket of this.upgraded) socket.destroy();
    for (const socket of this.streams) socket.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (this.wsBlocked) {
      this.seen.refusedUpgrades += 1;
      socket.end("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    this.seen.upgrades += 1;
    const upstream = connect(this.targetPort(), "127.0.0.1", () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2)
        lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join("\r\n")}\r\n\r\n`);
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    this.upgraded.add(socket);
    const drop = (): void => {
      this.upgraded.delete(socket);
      socket.destroy();
      upstream.destroy();
    };
    upstream.on("error", drop);
    upstream.on("close", drop);
    socket.on("error", drop);
    socket.on("close", drop);
  }
}
