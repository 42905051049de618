"""A loopback TCP proxy that delays each direction by a fixed time: a "slow broker".

    python bench/proxy.py --target 127.0.0.1:6379 --delay 0.001 [--listen 127.0.0.1:0]

Prints `PORT <n>` once listening. Every chunk read from one side is written to the other
`delay` seconds after it arrived, in order; reading goes on meanwhile, so pipelined traffic
keeps its throughput and only latency grows (2 x delay per round trip). This machine's
kernel has no netem, hence a user-space proxy. asyncio timers fire up to ~1 ms late, so the
driver measures the real added round trip (PING through the proxy) and reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    pending: collections.deque[tuple[float, bytes]] = collections.deque()
    arrived = asyncio.Event()
    closed = False

    async def read_side() -> None:
        nonlocal closed
        try:
            while data := await reader.read(262144):
                pending.append((loop.time() + delay, data))
                arrived.set()
        except (ConnectionError, OSError):
            pass
        closed = True
        arrived.set()

    async def write_side() -> None:
        try:
            while True:
                if not pending:
                    if closed:
                        break
                    arrived.clear()
                    await arrived.wait()
                    continue
                due, data = pending[0]
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                pending.popleft()
                writer.write(data)
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    await asyncio.gather(read_side(), write_side())


async def _serve(listen_host: str, listen_port: int, target_host: str, target_port: int,
                 delay: float) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_forward(client_reader, server_writer, delay),
                             _forward(server_reader, client_writer, delay))

    server = await asyncio.start_server(handle, listen_host, listen_port)
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:6379")
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--delay", type=float, default=0.001, help="seconds, each direction")
    args = parser.parse_args()
    listen_host, listen_port = args.listen.rsplit(":", 1)
    target_host, target_port = args.target.rsplit(":", 1)
    if not listen_host.startswith("127.") or not target_host.startswith("127."):
        raise SystemExit("the proxy only listens on and forwards to loopback addresses")
    try:
        asyncio.run(_serve(listen_host, int(listen_port), target_host, int(target_port), args.delay))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
