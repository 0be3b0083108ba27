"""Run the demo API in the foreground: ``python -m airflow_custom_token.demo [--port 8765]``."""

from __future__ import annotations

import argparse
import signal

from airflow_custom_token.demo.server import DemoServer


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then exit 0."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_custom_token.demo", description="Demo token server + protected API."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port, 0 = any free (default 8765)")
    parser.add_argument("--lifetime", type=int, default=3600, help="token lifetime in seconds")
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Block the signals before any server thread exists, then collect them with sigwait().
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        server = DemoServer(args.host, args.port, lifetime=args.lifetime)
    except ValueError as exc:
        parser.error(str(exc))
    except OSError as exc:
        parser.exit(1, f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
    with server:
        print(f"demo API listening on {server.url}", flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
