"""`radialog serve`: the web UI and REST API on one port (the model loads in the background)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from radialog.engines.base import LLMEngine
from radialog.engines.transformers_engine import TransformersEngine
from radialog.engines.vllm_engine import VLLMEngine, VLLMSettings, check_supported
from radialog.model.loading import add_model_arguments, load_model, resolve_source
from radialog.model.modeling import RaDialogModel

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="start the web UI (/ui) and REST API (/v1, docs at /docs)")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-queue", type=int, default=8, help="requests that may wait for the model (then 503)")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where the SQLite study database lives (default: $RADIALOG_DATA_DIR, else ~/.local/share/radialog); "
        "ignored when $RADIALOG_DATABASE_URL names a PostgreSQL database",
    )
    parser.add_argument(
        "--max-studies",
        type=int,
        default=int(os.environ.get("RADIALOG_MAX_STUDIES", 1000)),
        help="studies the store holds, then uploads are refused with 507 (default: $RADIALOG_MAX_STUDIES or 1000)",
    )
    parser.add_argument(
        "--retention-days",
        type=float,
        default=float(os.environ.get("RADIALOG_RETENTION_DAYS", 30)),
        help="studies are deleted this long after their last change (default: $RADIALOG_RETENTION_DAYS or 30)",
    )
    parser.add_argument(
        "--generation-timeout-s",
        type=float,
        default=300.0,
        help="an answer taking longer is cancelled and answered with 504 (default: 300)",
    )
    parser.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=30.0,
        help="on SIGTERM, running answers get this long to finish before they are cancelled (default: 30)",
    )
    parser.add_argument(
        "--engine",
        choices=["transformers", "vllm"],
        default="transformers",
        help="who generates: the LLM in this process (default), or a vLLM server at --vllm-url",
    )
    parser.add_argument(
        "--max-batch", type=int, default=8, help="transformers engine: answers generated together (default: 8)"
    )
    parser.add_argument(
        "--vllm-url",
        default="http://127.0.0.1:8000",
        help="vllm engine: the server serving the checkpoint's merged LLM (radialog export --merge-lora --format hf)",
    )
    parser.set_defaults(func=run)


def engine_factory(args: argparse.Namespace) -> Callable[[RaDialogModel], LLMEngine]:
    """What makes the engine once the model is loaded (the vllm engine checks the model decodes as it can)."""
    if args.engine == "transformers":
        return partial(TransformersEngine, max_batch_size=args.max_batch)

    def vllm_engine(model: RaDialogModel) -> LLMEngine:
        settings = model.decoding_settings(max_new_tokens=1)
        check_supported(settings)
        if settings.repetition_penalty != 1.0:
            logger.warning(
                "repetition_penalty=%s: with prompt embeddings vLLM also penalises whatever token ids its prompt "
                "slot holds, so answers may differ from the transformers engine's",
                settings.repetition_penalty,
            )
        return VLLMEngine(VLLMSettings(url=args.vllm_url))

    return vllm_engine


def run(args: argparse.Namespace) -> int:
    # The app is an optional extra (`pip install .[app]`): import it only when serving.
    from radialog.app.server import ServerSettings, serve
    from radialog.app.studies import StoreSettings
    from radialog.app.worker import ModelWorker

    source = resolve_source(args.checkpoint, args.preset)
    worker = ModelWorker(
        source,
        loader=lambda: load_model(source, args.device, args.dtype, args.quantization),
        max_waiting=args.max_queue,
        engine_factory=engine_factory(args),
    )
    worker.load_in_background()
    store = StoreSettings(max_studies=args.max_studies, retention_days=args.retention_days)
    data_dir = {"data_dir": args.data_dir} if args.data_dir is not None else {}
    limits = {"generation_timeout_s": args.generation_timeout_s, "shutdown_grace_s": args.shutdown_grace_s}
    serve(worker, ServerSettings.from_env(host=args.host, port=args.port, store=store, **data_dir, **limits))
    return 0
