"""Build and run the emulator: moto's WSGI app, patched, behind the call-log/fault middleware."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
# Each CreateDBInstance takes an automated snapshot; AWS has no such 1,000 cap for them.
os.environ.setdefault("MOTO_RDS_SNAPSHOT_LIMIT", "1000000")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

from werkzeug.serving import BaseWSGIServer, make_server  # noqa: E402

from . import auth, patches, quotas  # noqa: E402
from .middleware import EmulatorMiddleware  # noqa: E402


def build_app() -> EmulatorMiddleware:
    patches.apply()
    auth.apply()
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    moto_app = DomainDispatcherApplication(create_backend_app)
    return EmulatorMiddleware(moto_app)


def make_emulator_server(host: str, port: int) -> tuple[BaseWSGIServer, EmulatorMiddleware]:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    app = build_app()
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    return server, app


def _quota_arg(text: str) -> tuple[str, int]:
    try:
        return quotas.parse_assignment(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pgbaseline-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", choices=["small", "F1000"], default=None,
                        help="seed a fleet once the server listens")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--quota", action="append", default=[], metavar="NAME=N",
                        type=_quota_arg,
                        help="start with this RDS quota maximum instead of AWS's default "
                             "(repeatable; a reset restores these values)")
    args = parser.parse_args(argv)
    quotas.QUOTAS.set_baseline(dict(args.quota))

    server, _app = make_emulator_server(args.host, args.port)
    port = server.server_address[1]
    endpoint = f"http://{args.host}:{port}"
    thread = threading.Thread(target=server.serve_forever, name="emulator", daemon=True)
    thread.start()

    def _stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    if args.seed:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import seed as seed_mod  # tests/emulator/seed.py

        summary = seed_mod.seed(endpoint, args.seed, args.region)
        print(json.dumps({"seeded": args.seed, **summary["counts"]}), flush=True)

    print(f"pgbaseline-emulator listening on {endpoint}", flush=True)
    while thread.is_alive():
        thread.join(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
