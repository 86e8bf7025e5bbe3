"""Starts the project's AWS emulator: moto in server mode, patched, on 127.0.0.1.

    python tests/emulator/launch.py [--port 0] [--ready-file PATH] [--exit-on-stdin-eof] [--verbose]

Applies patches.py to moto, wraps moto's WSGI app in faults.Middleware, starts
moto's ThreadedMotoServer on 127.0.0.1, then prints one line
`READY http://127.0.0.1:PORT` on stdout (and writes the URL to --ready-file),
and serves until SIGTERM or SIGINT (or, with --exit-on-stdin-eof, until its
standard input closes, so that a test harness that dies takes the server with it).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

# Before moto is imported: it reads its settings at import time.
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

import faults  # noqa: E402
import patches  # noqa: E402

HOST = "127.0.0.1"


class EmulatorServer(ThreadedMotoServer):
    """ThreadedMotoServer whose WSGI app is wrapped in the fault/latency middleware."""

    def __init__(self, port: int) -> None:
        super().__init__(ip_address=HOST, port=port, verbose=False)
        self.controls = faults.Controls()
        self.failed = False

    def _server_entry(self) -> None:  # as moto's, plus the middleware and a bind error
        app = faults.Middleware(DomainDispatcherApplication(create_backend_app), self.controls)
        try:
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
            )
        except (OSError, SystemExit):  # werkzeug exits on a busy port; start() would hang
            self.failed = True
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 (default) picks a free port")
    parser.add_argument("--ready-file", type=Path, help="also write the URL to this file")
    parser.add_argument(
        "--exit-on-stdin-eof", action="store_true", help="stop when standard input closes"
    )
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    patches.apply_all()

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.exit_on_stdin_eof:
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), stop.set()), daemon=True).start()

    server = EmulatorServer(args.port)
    server.start()
    if server.failed:
        print(f"launch.py: cannot serve on {HOST}:{args.port}", file=sys.stderr)
        return 1
    url = f"http://{HOST}:{server.get_host_and_port()[1]}"
    if args.ready_file:
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(url + "\n")
        tmp.replace(args.ready_file)
    print(f"READY {url}", flush=True)
    # stdout carries only that line: whatever moto prints later goes to stderr,
    # so a harness that stops reading stdout can never block the server.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown of moto's many modules and threads: it can
    # take seconds, and there is nothing left to save.
    os._exit(status)
