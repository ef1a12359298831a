#!/usr/bin/env python3
"""Watch an AeroGrid grid over native gRPC (HTTP/2), from Python.

A sample for teams that build their own client (an Excel RTD server, a desktop tool, a script):
it subscribes to one grid, keeps the grid in a dict, and prints the whole grid as one JSON line
after every message (``{"sequence": n, "columns": [...], "rows": {key: {column: value}}}``), or a
``{"disconnected": reason}`` line when the stream drops, then reconnects with backoff (0.5 s
doubling to 10 s), as the Excel add-in does. Errors that waiting cannot fix (bad token, no access,
no such grid) end it with exit status 2.

The Python stubs are generated at start from the repository's ``proto/`` by grpcio-tools into a
temporary folder (or ``--stubs DIR``), so nothing generated is kept in the repository.

    python3 -m venv target/excel-native-venv
    target/excel-native-venv/bin/pip install -r excel/native-sample/requirements.txt
    target/excel-native-venv/bin/python excel/native-sample/watch_grid.py \\
        --url http://127.0.0.1:8080 --token "$(cat .aerogrid/admin-token)" acme/orders/product_sum
"""

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
MIN_BACKOFF = 0.5
MAX_BACKOFF = 10.0

# Codes after which subscribing again would only fail again.
FINAL = {
    grpc.StatusCode.UNAUTHENTICATED: "the token is unknown or revoked",
    grpc.StatusCode.PERMISSION_DENIED: "this token may not read the grid",
    grpc.StatusCode.NOT_FOUND: "no such app or grid",
    grpc.StatusCode.INVALID_ARGUMENT: "the request is malformed",
    grpc.StatusCode.UNIMPLEMENTED: "the server has no grid API (is the URL right?)",
}


def load_stubs(stubs_dir):
    """Generates grid_pb2 and grid_pb2_grpc from proto/aerogrid/v1/grid.proto, and imports them."""
    from grpc_tools import protoc  # only needed here

    proto = os.path.join("aerogrid", "v1", "grid.proto")
    # protoc needs the well-known types' folder as an include path too.
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            f"--python_out={stubs_dir}",
            f"--grpc_python_out={stubs_dir}",
            proto,
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed ({status}) on {os.path.join(PROTO_DIR, proto)}")
    sys.path.insert(0, stubs_dir)
    return (
        importlib.import_module("aerogrid.v1.grid_pb2"),
        importlib.import_module("aerogrid.v1.grid_pb2_grpc"),
    )


def to_python(value):
    """A grid `Value` as a JSON scalar."""
    kind = value.WhichOneof("kind")
    if kind in (None, "null"):
        return None
    return getattr(value, kind)


class Grid:
    """The grid as seen so far: a snapshot, then its changes."""

    def __init__(self):
        self.sequence = 0
        self.columns = []
        self.rows = {}

    def apply(self, message):
        event = message.WhichOneof("event")
        if event == "snapshot":
            snapshot = message.snapshot
            self.columns = list(snapshot.columns)
            self.rows = {row.key: [to_python(v) for v in row.values] for row in snapshot.rows}
            self.sequence = snapshot.sequence
        elif event == "changes":
            for change in message.changes.rows:
                if change.WhichOneof("change") == "deleted":
                    self.rows.pop(change.key, None)
                    continue
                values = self.rows.setdefault(change.key, [None] * len(self.columns))
                for index, value in zip(change.updated.columns, change.updated.values):
                    if index < len(values):
                        values[index] = to_python(value)
            self.sequence = message.changes.sequence
        elif event == "heartbeat":
            self.sequence = message.heartbeat.sequence
            return False
        return True

    def as_json(self):
        rows = {key: dict(zip(self.columns, values)) for key, values in sorted(self.rows.items())}
        return json.dumps({"sequence": self.sequence, "columns": self.columns, "rows": rows})


def channel_for(url, ca_cert):
    if url.startswith("https://"):
        root = open(ca_cert, "rb").read() if ca_cert else None
        return grpc.secure_channel(url[len("https://") :].rstrip("/"), grpc.ssl_channel_credentials(root))
    if url.startswith("http://"):
        return grpc.insecure_channel(url[len("http://") :].rstrip("/"))
    raise SystemExit(f"--url must start with http:// or https://, not {url!r}")


def watch(args, pb2, pb2_grpc):
    team, app, grid = args.grid.split("/")
    request = pb2.SubscribeRequest(
        grid=pb2.GridRef(team=team, app=app, grid=grid),
        columns=args.columns,
        row_keys=args.rows,
        max_updates_per_second=args.rate,
    )
    metadata = [("authorization", f"Bearer {args.token}")]
    backoff = MIN_BACKOFF
    with channel_for(args.url, args.ca_cert) as channel:
        stub = pb2_grpc.GridServiceStub(channel)
        while True:
            model = Grid()
            try:
                for message in stub.Subscribe(request, metadata=metadata):
                    if model.apply(message):
                        print(model.as_json(), flush=True)
                        backoff = MIN_BACKOFF
                reason = "the server ended the stream"
            except grpc.RpcError as error:
                code = error.code()
                if code in FINAL:
                    print(f"{args.grid}: {FINAL[code]} ({code.name}: {error.details()})", file=sys.stderr)
                    return 2
                reason = f"{code.name}: {error.details()}"
            print(json.dumps({"disconnected": reason, "retry_in_seconds": backoff}), flush=True)
            time.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", help="TEAM/APP/GRID")
    parser.add_argument("--url", default=os.environ.get("AEROGRID_URL"), help="the server (or AEROGRID_URL)")
    parser.add_argument("--token", default=os.environ.get("AEROGRID_TOKEN"), help="an API token (or AEROGRID_TOKEN)")
    parser.add_argument("--columns", type=lambda s: [c for c in s.split(",") if c], default=[], help="only these columns (a,b)")
    parser.add_argument("--rows", type=lambda s: [r for r in s.split(",") if r], default=[], help="only these row keys (a,b)")
    parser.add_argument("--rate", type=int, default=2, help="at most this many updates per second (0: all)")
    parser.add_argument("--ca-cert", help="a PEM CA certificate to trust for https")
    parser.add_argument("--stubs", help="generate the stubs here (default: a temporary folder)")
    args = parser.parse_args()
    if not args.url or not args.token:
        parser.error("--url and --token (or AEROGRID_URL and AEROGRID_TOKEN) are required")
    if args.grid.count("/") != 2:
        parser.error("the grid is written TEAM/APP/GRID")
    try:
        if args.stubs:
            os.makedirs(args.stubs, exist_ok=True)
            return watch(args, *load_stubs(args.stubs))
        with tempfile.TemporaryDirectory(prefix="aerogrid-stubs-") as stubs:
            return watch(args, *load_stubs(stubs))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
