"""A TCP listener on loopback that forwards every connection to a Unix
socket, so tools that only speak TCP (schemathesis) can reach roomcache.

    python3 bridge.py HOST:PORT SOCKET_PATH
"""
import asyncio
import sys


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen, socket_path):
    host, port = listen.rsplit(":", 1)
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise SystemExit("the bridge listens on loopback only")

    async def forward(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_unix_connection(socket_path)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    server = await asyncio.start_server(forward, host, int(port))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
