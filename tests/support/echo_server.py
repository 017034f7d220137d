"""A small threaded TCP server on loopback, for measuring toxics and proxy overhead.

Why: checking that a latency or bandwidth toxic does what it says needs a
real peer at the other end of the proxy whose own behaviour is trivial and
known. Blocking sockets in threads keep it independent of the asyncio code
under test. Modes:

- `echo`: sends back every byte it receives
- `sink`: reads until EOF, then answers the byte count (8 bytes, big endian)
- `source`: reads an 8-byte count n, sends n bytes, then closes

Run it in-process (`with EchoServer("echo") as (host, port): ...`) or as
`python -m support.echo_server --mode echo --port 0` (prints the port).
"""
from __future__ import annotations

import argparse
import socket
import struct
import threading


class EchoServer:
    """One listening socket on 127.0.0.1, a thread per connection."""

    def __init__(self, mode: str = "echo", port: int = 0):
        if mode not in ("echo", "sink", "source"):
            raise ValueError(f"unknown mode {mode!r}")
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", port), backlog=128)
        self.address = self.sock.getsockname()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> "EchoServer":
        t = threading.Thread(target=self._accept, daemon=True, name=f"echo-{self.mode}")
        t.start()
        self._threads.append(t)
        return self

    def _accept(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            getattr(self, "_" + self.mode)(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        buf = bytearray(1 << 16)
        view = memoryview(buf)
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                return
            conn.sendall(view[:n])

    @staticmethod
    def _sink(conn: socket.socket) -> None:
        buf = bytearray(1 << 20)
        total = 0
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                break
            total += n
        conn.sendall(struct.pack(">Q", total))

    @staticmethod
    def _source(conn: socket.socket) -> None:
        header = b""
        while len(header) < 8:
            part = conn.recv(8 - len(header))
            if not part:
                return
            header += part
        remaining = struct.unpack(">Q", header)[0]
        block = memoryview(b"x" * (1 << 20))
        while remaining > 0:
            n = min(remaining, len(block))
            conn.sendall(block[:n])
            remaining -= n

    def stop(self) -> None:
        self._stopped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        with self._lock:
            for conn in list(self._conns):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> tuple[str, int]:
        self.start()
        return self.address

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m support.echo_server")
    parser.add_argument("--mode", default="echo", choices=["echo", "sink", "source"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = EchoServer(args.mode, args.port).start()
    print(server.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
