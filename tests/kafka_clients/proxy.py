#!/usr/bin/env python3
"""A Kafka-protocol fault proxy for tests, on loopback only.

Frames are a 4-byte big-endian length and a body. For each client request
the proxy reads api_key, api_version and correlation id (body bytes 0..8)
and counts Produce requests (api_key 0) across all connections, from 1,
retries included. Faults, by that count:

  --drop-after-forward N[,M..]  forward Produce #N; when the broker's
                                response to it arrives, swallow it and cut
                                both sockets (the batch is stored, the
                                client sees a transport error and retries)
  --drop-before-forward N[,M..] cut both sockets instead of forwarding
                                Produce #N (the batch is not stored)

At a cut the proxy closes the broker side at once, prints an event line on
stdout, runs --on-cut CMD (sh -c, awaited; PROXY_CUT_PRODUCE=N in its
environment), then with --hold-at-cut waits for a "resume" line on stdin,
and only then closes the client side. While a cut is in progress, new
client connections wait before being connected upstream, so a broker that
is restarted at the cut is only reached once it is up again.

stdout, one JSON object a line:
  {"listening": "127.0.0.1:PORT"}              once, when ready
  {"event": "cut", "produce": N, "mode": "after-forward"|"before-forward",
   "api_version": V, "correlation_id": C}     at each cut
stdin commands (with --control-stdin; end of input stops the proxy):
  upstream HOST:PORT   connect new connections there from now on
  resume               end the hold of the current cut (--hold-at-cut)
  quit                 stop
Logs go to stderr (-v: every request and response).
"""

import argparse
import asyncio
import ipaddress
import json
import os
import struct
import sys

PRODUCE = 0
MAX_FRAME = 256 * 1024 * 1024
HOLD_TIMEOUT_S = 120.0


def log(msg):
    print(f"proxy: {msg}", file=sys.stderr, flush=True)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def loopback_addr(text):
    """HOST:PORT with a loopback host, as (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    host = host.strip("[]")
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: only loopback addresses are allowed")
    try:
        port = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: bad port")
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: bad port")
    return host, port


def index_list(text):
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N[,M..]")
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: Produce requests count from 1")
    return values


async def read_frame(reader):
    """One whole frame (length prefix included), or None at a clean end of stream."""
    try:
        head = await reader.readexactly(4)
    except asyncio.IncompleteReadError as e:
        if e.partial:
            raise ConnectionError("stream ended inside a frame length")
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0 or size > MAX_FRAME:
        raise ConnectionError(f"bad frame length {size}")
    body = await reader.readexactly(size)
    return head + body


class Conn:
    def __init__(self, cid, creader, cwriter, ureader, uwriter):
        self.cid = cid
        self.creader, self.cwriter = creader, cwriter
        self.ureader, self.uwriter = ureader, uwriter
        self.swallow = {}  # correlation id -> Produce number, for --drop-after-forward
        self.cut_task = None

    def cut(self, proxy, mode, n, version, corr):
        if self.cut_task is None:
            self.cut_task = asyncio.ensure_future(proxy.cut(self, mode, n, version, corr))


class Proxy:
    def __init__(self, args):
        self.args = args
        self.upstream = args.upstream
        self.after = set(args.drop_after_forward or [])
        self.before = set(args.drop_before_forward or [])
        self.produce_count = 0
        self.next_cid = 0
        self.gate = asyncio.Event()  # set: new connections may go upstream
        if self.upstream is not None:
            self.gate.set()
        self.resumes = asyncio.Queue()
        self.cut_lock = asyncio.Lock()
        self.stop = asyncio.Event()

    async def handle(self, creader, cwriter):
        self.next_cid += 1
        cid = self.next_cid
        peer = cwriter.get_extra_info("peername")
        try:
            await asyncio.wait_for(self.gate.wait(), HOLD_TIMEOUT_S)
            host, port = self.upstream
            ureader, uwriter = await asyncio.open_connection(host, port)
        except (OSError, asyncio.TimeoutError) as e:
            log(f"conn {cid} from {peer}: upstream {self.upstream} unreachable: {e!r}; closing")
            cwriter.transport.abort()
            return
        log(f"conn {cid} from {peer} -> {host}:{port}")
        conn = Conn(cid, creader, cwriter, ureader, uwriter)
        pumps = [
            asyncio.ensure_future(self.client_to_broker(conn)),
            asyncio.ensure_future(self.broker_to_client(conn)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        if conn.cut_task is not None:
            await conn.cut_task
        for p in pumps:
            p.cancel()
        for p in pumps:
            try:
                await p
            except (asyncio.CancelledError, Exception):
                pass
        uwriter.transport.abort()
        cwriter.transport.abort()
        log(f"conn {cid} closed")

    async def client_to_broker(self, conn):
        try:
            while conn.cut_task is None:
                frame = await read_frame(conn.creader)
                if frame is None or conn.cut_task is not None:
                    return
                if len(frame) < 12:
                    log(f"conn {conn.cid}: request too short ({len(frame)} bytes)")
                    return
                key, version, corr = struct.unpack(">hhi", frame[4:12])
                if self.args.verbose:
                    log(f"conn {conn.cid}: request api_key={key} v{version} corr={corr} ({len(frame) - 4} bytes)")
                if key == PRODUCE:
                    self.produce_count += 1
                    n = self.produce_count
                    log(f"conn {conn.cid}: Produce #{n} v{version} corr={corr}")
                    if n in self.before:
                        conn.cut(self, "before-forward", n, version, corr)
                        return
                    if n in self.after:
                        conn.swallow[corr] = (n, version)
                conn.uwriter.write(frame)
                await conn.uwriter.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            if conn.cut_task is None:
                log(f"conn {conn.cid}: client side: {e!r}")

    async def broker_to_client(self, conn):
        try:
            while conn.cut_task is None:
                frame = await read_frame(conn.ureader)
                if frame is None or conn.cut_task is not None:
                    return
                if len(frame) < 8:
                    log(f"conn {conn.cid}: response too short ({len(frame)} bytes)")
                    return
                (corr,) = struct.unpack(">i", frame[4:8])
                if self.args.verbose:
                    log(f"conn {conn.cid}: response corr={corr} ({len(frame) - 4} bytes)")
                if corr in conn.swallow:
                    n, version = conn.swallow.pop(corr)
                    conn.cut(self, "after-forward", n, version, corr)
                    return
                conn.cwriter.write(frame)
                await conn.cwriter.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as e:
            if conn.cut_task is None:
                log(f"conn {conn.cid}: broker side: {e!r}")

    async def cut(self, conn, mode, n, version, corr):
        async with self.cut_lock:
            conn.uwriter.transport.abort()
            if self.args.hold_at_cut:
                self.gate.clear()
            log(f"conn {conn.cid}: CUT ({mode}) at Produce #{n} corr={corr}")
            emit({"event": "cut", "produce": n, "mode": mode, "api_version": version, "correlation_id": corr})
            if self.args.on_cut:
                env = dict(os.environ, PROXY_CUT_PRODUCE=str(n), PROXY_CUT_MODE=mode)
                proc = await asyncio.create_subprocess_shell(self.args.on_cut, env=env)
                code = await proc.wait()
                log(f"--on-cut exited with {code}")
            if self.args.hold_at_cut:
                try:
                    await asyncio.wait_for(self.resumes.get(), HOLD_TIMEOUT_S)
                except asyncio.TimeoutError:
                    log(f"no resume within {HOLD_TIMEOUT_S} s: going on")
                self.gate.set()
            conn.cwriter.transport.abort()

    async def control(self):
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                log("stdin closed: stopping")
                self.stop.set()
                return
            words = line.decode(errors="replace").split()
            if not words:
                continue
            if words[0] == "upstream" and len(words) == 2:
                try:
                    self.upstream = loopback_addr(words[1])
                except argparse.ArgumentTypeError as e:
                    log(f"bad command {line!r}: {e}")
                    continue
                log(f"upstream is now {words[1]}")
                if not self.cut_lock.locked():
                    self.gate.set()
            elif words == ["resume"]:
                self.resumes.put_nowait(True)
            elif words == ["quit"]:
                self.stop.set()
                return
            else:
                log(f"unknown command {line!r}")


async def main(args):
    proxy = Proxy(args)
    host, port = args.listen
    server = await asyncio.start_server(proxy.handle, host, port)
    sock = server.sockets[0].getsockname()
    emit({"listening": f"{sock[0]}:{sock[1]}"})
    log(f"listening on {sock[0]}:{sock[1]}, upstream {proxy.upstream}, "
        f"drop-after-forward {sorted(proxy.after)}, drop-before-forward {sorted(proxy.before)}")
    tasks = []
    if args.control_stdin:
        tasks.append(asyncio.ensure_future(proxy.control()))
    async with server:
        await proxy.stop.wait()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", type=loopback_addr, default=("127.0.0.1", 0),
                   help="loopback HOST:PORT to listen on (default 127.0.0.1:0: a free port)")
    p.add_argument("--upstream", type=loopback_addr,
                   help="the broker's loopback HOST:PORT (or later: 'upstream HOST:PORT' on stdin)")
    p.add_argument("--drop-after-forward", type=index_list, metavar="N[,M..]")
    p.add_argument("--drop-before-forward", type=index_list, metavar="N[,M..]")
    p.add_argument("--on-cut", metavar="CMD", help="shell command run (and awaited) at each cut")
    p.add_argument("--control-stdin", action="store_true",
                   help="read commands from stdin; stop at its end")
    p.add_argument("--hold-at-cut", action="store_true",
                   help="at each cut, wait for 'resume' on stdin before closing the client side")
    p.add_argument("-v", "--verbose", action="store_true", help="log every request and response")
    args = p.parse_args(argv)
    if args.hold_at_cut and not args.control_stdin:
        p.error("--hold-at-cut needs --control-stdin")
    if args.upstream is None and not args.control_stdin:
        p.error("give --upstream, or --control-stdin and an 'upstream' command")
    both = set(args.drop_after_forward or []) & set(args.drop_before_forward or [])
    if both:
        p.error(f"Produce #{sorted(both)} in both --drop-after-forward and --drop-before-forward")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args()))
    except KeyboardInterrupt:
        pass
