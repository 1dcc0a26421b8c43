"""`radialog serve`: the web UI and REST API on one port (the model loads in the background)."""

from __future__ import annotations

import argparse

from radialog.model.loading import add_model_arguments, load_model, resolve_source


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="start the web UI (/ui) and REST API (/v1, docs at /docs)")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-queue", type=int, default=8, help="requests that may wait for the model (then 503)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The app is an optional extra (`pip install .[app]`): import it only when serving.
    from radialog.app.server import ServerSettings, serve
    from radialog.app.worker import ModelWorker

    source = resolve_source(args.checkpoint, args.preset)
    worker = ModelWorker(
        source,
        loader=lambda: load_model(source, args.device, args.dtype, args.quantization),
        max_waiting=args.max_queue,
    )
    worker.load_in_background()
    serve(worker, ServerSettings.from_env(host=args.host, port=args.port))
    return 0
