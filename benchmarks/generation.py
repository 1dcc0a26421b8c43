"""Generation speed of RaDialog: image encoding, time to first token, decode rate, report latency,
peak memory, and aggregate throughput with concurrent sessions.

    python benchmarks/generation.py --preset tiny --device cpu
    python benchmarks/generation.py --preset radialog-v1-random --device cuda [--compile] [--quantization 4bit]

Every generation is forced to its full length (`min_new_tokens`), so random weights that emit EOS
early do not flatter the numbers. Concurrent sessions are threads that each call the model the way
the one-at-a-time server does (one conversation per `generate` call); with `--batched` they go through a
`TransformersEngine` that runs them as one left-padded batch, as `radialog serve --max-batch N` does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radialog.engines.transformers_engine import TransformersEngine
from radialog.imaging import XRay
from radialog.model.loading import add_model_arguments, load_model, resolve_source
from radialog.model.modeling import RaDialogModel


def synthetic_xray(size: int = 512) -> XRay:
    """A smooth synthetic chest-like image: timing does not depend on the content."""
    y, x = np.mgrid[0:size, 0:size] / size
    pixels = (255 * (0.5 + 0.4 * np.sin(6 * x) * np.cos(4 * y))).astype(np.uint8)
    return XRay(pixels=pixels, source_format="png", original_dtype="uint8")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over `repeats` calls (after the caller's warm-up), and the last result."""
    times, result = [], None
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def peak_memory_gb(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "cuda max_memory_allocated", torch.cuda.max_memory_allocated(device) / 2**30
    return "process peak RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


def make_generate(model: RaDialogModel, encoded, tokens: int):
    conversation = model.processor.report_conversation(encoded.predicted_findings)

    def run() -> int:
        # min = max: exactly `tokens` new tokens, whatever the (random) weights would emit.
        model.generate(conversation, encoded.image_embeds, tokens, min_new_tokens=tokens)
        return tokens

    return run


def concurrent_throughput(model: RaDialogModel, encoded, tokens: int, users: int, batched: bool) -> float:
    """Aggregate generated tokens per second with `users` sessions asking at the same time."""
    if batched:
        engine = TransformersEngine(model, max_batch_size=users, batch_window_s=0.02)
        inputs = model.prompt_embeds(
            model.processor.report_conversation(encoded.predicted_findings), encoded.image_embeds, tokens
        )
        settings = model.decoding_settings(tokens, min_new_tokens=tokens)

        def run() -> int:
            engine.generate(inputs, settings)
            return tokens

    else:
        run = make_generate(model, encoded, tokens)
    barrier = threading.Barrier(users)

    def session() -> int:
        barrier.wait()
        return run()

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=users) as pool:
        produced = sum(pool.map(lambda _: session(), range(users)))
    sync(model.device)
    return produced / (time.perf_counter() - start)


def benchmark(args: argparse.Namespace) -> dict:
    source = resolve_source(args.checkpoint, args.preset)
    start = time.perf_counter()
    model = load_model(source, args.device, args.dtype, args.quantization)
    load_s = time.perf_counter() - start
    device = model.device
    if args.compile:
        # Static KV cache: fixed shapes, so transformers can compile the decoding step.
        model.language_model.generation_config.cache_implementation = "static"
        model.image_encoder.forward = torch.compile(model.image_encoder.forward)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    xray = synthetic_xray()

    model.encode_image(xray)  # warm-up (and compilation)
    encode_s, encoded = timed(lambda: model.encode_image(xray), device, args.repeats)
    prompt_tokens = model.processor.tokenize(model.processor.report_conversation(encoded.predicted_findings)).shape[1]

    first, full = make_generate(model, encoded, 1), make_generate(model, encoded, args.max_new_tokens)
    first()
    full()  # warm-up
    ttft_s, _ = timed(first, device, args.repeats)
    report_s, _ = timed(full, device, args.repeats)
    decode_tps = (args.max_new_tokens - 1) / max(report_s - ttft_s, 1e-9)

    throughput = {}
    for users in args.concurrency:
        throughput[users] = concurrent_throughput(model, encoded, args.max_new_tokens, users, args.batched)
    memory_kind, memory_gb = peak_memory_gb(device)
    return {
        "model": source.label,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "quantization": args.quantization,
        "compile": args.compile,
        "batched": args.batched,
        "load_s": round(load_s, 2),
        "prompt_tokens": prompt_tokens,
        "image_to_findings_and_embeddings_ms": round(1000 * encode_s, 1),
        "time_to_first_token_ms": round(1000 * ttft_s, 1),
        "decode_tokens_per_s": round(decode_tps, 1),
        f"report_{args.max_new_tokens}_tokens_s": round(report_s, 3),
        "aggregate_tokens_per_s": {str(k): round(v, 1) for k, v in throughput.items()},
        "peak_memory": {"kind": memory_kind, "GiB": round(memory_gb, 2)},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def markdown(result: dict) -> str:
    rows = [
        ("image → findings + embeddings", f"{result['image_to_findings_and_embeddings_ms']} ms"),
        ("time to first token", f"{result['time_to_first_token_ms']} ms"),
        ("decode", f"{result['decode_tokens_per_s']} tok/s"),
    ]
    rows += [(k.replace("_", " "), f"{v} s") for k, v in result.items() if k.startswith("report_")]
    rows += [(f"aggregate, {n} concurrent", f"{v} tok/s") for n, v in result["aggregate_tokens_per_s"].items()]
    rows.append((f"peak memory ({result['peak_memory']['kind']})", f"{result['peak_memory']['GiB']} GiB"))
    head = f"{result['model']} on {result['device']} ({result['dtype']}, prompt {result['prompt_tokens']} tokens)"
    return "\n".join([head, "", "| metric | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--compile", action="store_true", help="torch.compile + static KV cache")
    parser.add_argument("--batched", action="store_true", help="serve concurrent sessions as one engine batch")
    parser.add_argument("--max-new-tokens", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = benchmark(args)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
