"""Entry point of the emulator's background processes: `python -m provision.local.gcp.daemon`.

`provision.local.gcp.emulator.start` runs this once per component (`admin-api`, `proxy`,
`secret-manager`) with
an already bound, listening socket and a pipe. The process forks once and the parent exits
at once, so the daemon is nobody's child (no zombie in whoever ran `local up`, and the
launcher can be waited for). The daemon writes `ready <pid>` to the pipe when it serves,
and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

from provision.local.gcp import admin_api, proxy, secret_manager
from provision.local.gcp.state import RECORDS_FILE, EmulatorState, RecordLog


def _daemonize() -> None:
    if os.fork() > 0:
        os._exit(0)


async def _serve(component: str, state: EmulatorState, sock: socket.socket, ready_fd: int) -> None:
    records = RecordLog(state.path(RECORDS_FILE))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    starts: dict[
        str,
        Callable[
            [EmulatorState, socket.socket, RecordLog], Awaitable[Callable[[], Awaitable[None]]]
        ],
    ] = {
        "admin-api": admin_api.start,
        "proxy": proxy.start,
        "secret-manager": secret_manager.start,
    }
    start = starts[component]
    close = await start(state, sock, records)
    records.write(
        component, "started", pid=os.getpid(), listen="{}:{}".format(*sock.getsockname()[:2])
    )
    os.write(ready_fd, f"ready {os.getpid()}\n".encode())
    os.close(ready_fd)
    await stop.wait()
    await close()
    records.write(component, "stopped", pid=os.getpid())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m provision.local.gcp.daemon")
    parser.add_argument(
        "--component", choices=("admin-api", "proxy", "secret-manager"), required=True
    )
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--ready-fd", type=int, required=True)
    args = parser.parse_args(argv)

    _daemonize()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s {args.component}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    state = EmulatorState.load(args.state_dir)
    if state is None:
        sys.exit(f"no emulator state in {args.state_dir}")
    sock = socket.socket(fileno=args.listen_fd)
    asyncio.run(_serve(args.component, state, sock, args.ready_fd))


if __name__ == "__main__":
    main()
