"""`make bench`: three ways to run the same Gemma model over the same stream of chats.

- `reference`: the published handler: one `generate(prompt, max_length=512)` per chat, stopping
  only at `<eos>`.
- `naive`: one `generate()` per arriving batch, exact shapes (a compile for every new batch size
  and length), stopping at `<eos>` and `<end_of_turn>`, the same new-token budget as ours.
- `ours`: `handlers.gemma.GemmaGenerator`: shape buckets, warm-up before the stream, early stop.
- `constrained`: `ours` with constrained decoding to the triage reply schema, as the pipeline
  runs by default (`handlers/constrained.py`); also reports the transition table's memory.

Every variant also reports the share of its replies that `triage.parse` accepts.

The stream: 512 synthetic chats whose lengths follow a seeded long-tailed distribution, in
batches of seeded random sizes between 1 and the maximum, as RunInference hands them over. Each
variant runs in its own process so its peak memory is its own. Writes
`bench/results/<preset>.json` and prints a table.

Usage::

    python -m bench.run                       # the demo model, all four variants
    python -m bench.run --model PRESET        # e.g. real Gemma weights on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

VARIANTS = ("reference", "naive", "ours", "constrained")
REFERENCE_MAX_LENGTH = 512  # the published handler's max_length
# Device memory bandwidth (GB/s) for the roofline: decoding reads every weight once a step.
BANDWIDTH_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0, "L4": 300.0, "T4": 320.0}


def make_stream(
    n: int, max_batch: int, seed: int, fixed_batches: bool = False
) -> tuple[list[dict[str, Any]], list[int]]:
    """Chats with long-tailed lengths (extra turns, lognormal), and the batch sizes (all
    `max_batch` with `fixed_batches`, for the rows sweep)."""
    from triage.synthetic import generate

    rng = random.Random(seed)
    chats = generate(n, seed=seed)
    for chat in chats:
        turns = chat["chat_message"].split("\n")
        extra = min(int(rng.lognormvariate(0.0, 0.8)), 6)
        for _ in range(extra):
            turns.append(rng.choice(turns))
        chat["chat_message"] = "\n".join(turns)
    sizes, left = [], n
    while left:
        size = min(max_batch if fixed_batches else rng.randint(1, max_batch), left)
        sizes.append(size)
        left -= size
    return chats, sizes


def _prompts(chats: list[dict[str, Any]], preset: str, max_prompt_tokens: int) -> list[str]:
    from handlers.gemma import load_token_counter
    from triage.prompts import TokenBudget, load_template

    template = load_template("triage")
    budget = TokenBudget(max_prompt_tokens, load_token_counter(preset))
    return [template.render(c["chat_message"], budget, user_id=c["user_id"]).text for c in chats]


def default_chats(preset: str) -> int:
    """512 chats for the small demo presets; a real model's reference run decodes 512 tokens
    per chat at a few tokens per second on a CPU, so 10 keep `make bench` under 20 minutes."""
    weights = Path(preset) / "model.weights.h5"
    return 10 if weights.exists() and weights.stat().st_size > 100e6 else 512


def run_variant(args: argparse.Namespace) -> dict[str, Any]:
    """One variant over the whole stream, in this process."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import numpy as np

    from handlers.compilations import CompilationCounter
    from handlers.gemma import GemmaModelHandler
    from triage.parse import ParsedReply, decoding_constraints, parse_reply
    from triage.pipeline import length_buckets_for
    from triage.prompts import load_template

    chats, sizes = make_stream(args.chats, args.max_batch, args.seed, args.fixed_batches)
    prompts = _prompts(chats, args.model, args.max_prompt_tokens)
    budget = load_template("triage").max_reply_tokens
    buckets = (
        tuple(int(b) for b in args.length_buckets.split(","))
        if args.length_buckets
        else length_buckets_for(args.max_prompt_tokens)
    )
    handler = GemmaModelHandler(
        args.model,
        max_new_tokens=budget,
        max_batch_size=args.max_batch,
        # The rows sweep runs batches of exactly max_batch rows: compile that size alone.
        batch_buckets=(args.max_batch,) if args.fixed_batches else None,
        length_buckets=buckets,
        max_batch_tokens=args.max_batch_tokens,
        warm_up=False,
        dtype=args.dtype,
        **decoding_constraints(args.variant == "constrained")[0],
    )
    started = time.perf_counter()
    generator = handler.load_model()
    extra: dict[str, Any] = {"load_s": round(time.perf_counter() - started, 2)}
    if generator.constrained is not None:
        automaton = generator.constrained.automaton
        extra["automaton_states"] = automaton.num_states
        extra["automaton_table_mb"] = round(automaton.nbytes / 1e6, 3)
    counter = CompilationCounter()  # from here: loading the weights compiles small ops too
    causal_lm = generator.causal_lm
    tokenizer = causal_lm.preprocessor.tokenizer
    warm = {"warmup_s": 0.0, "warmup_compilations": 0}
    if args.variant in ("ours", "constrained"):
        start = time.perf_counter()
        generator.warm_up(budget)
        warm = {
            "warmup_s": round(time.perf_counter() - start, 2),
            "warmup_compilations": counter.count,
        }
    compiled_before = counter.count

    def reference(batch: list[str]) -> tuple[int, list[str]]:
        new, replies = 0, []
        for prompt in batch:  # one generate() per chat, as the published handler does
            text = causal_lm.generate(prompt, max_length=REFERENCE_MAX_LENGTH)
            new += max(0, len(tokenizer.tokenize(text)) - len(tokenizer.tokenize(prompt)))
            replies.append(text)
        return new, replies

    def naive(batch: list[str]) -> tuple[int, list[str]]:
        longest = max(len(ids) for ids in tokenizer.tokenize(batch)) + 1
        texts = causal_lm.generate(
            batch,
            max_length=longest + budget,
            stop_token_ids=generator.stop_token_ids,
            strip_prompt=True,
        )
        return sum(len(ids) for ids in tokenizer.tokenize(list(texts))), list(texts)

    def ours(batch: list[str]) -> tuple[int, list[str]]:
        results = generator.generate(batch, budget)
        return sum(n_new for _, _, n_new in results), [text for text, _, _ in results]

    step = {"reference": reference, "naive": naive, "ours": ours, "constrained": ours}[args.variant]
    latencies, tokens, done, parsed = [], 0, 0, 0
    start = time.perf_counter()
    for size in sizes:
        batch = prompts[done : done + size]
        t0 = time.perf_counter()
        new, replies = step(batch)
        latencies.append((time.perf_counter() - t0) * 1000)
        tokens += new
        # Outside the timed part: parsing is the same work for every variant.
        parsed += sum(
            isinstance(parse_reply(reply, prompt), ParsedReply)
            for reply, prompt in zip(replies, batch, strict=True)
        )
        done += size
        if args.progress:
            print(f"  {args.variant}: {done}/{len(prompts)} chats", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - start
    weight_bytes = sum(int(np.prod(w.shape)) * w.dtype.itemsize for w in causal_lm.get_weights())
    return {
        "chats_per_s": round(len(prompts) / elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 2),
        "compilations": counter.count - compiled_before + warm["warmup_compilations"],
        "p50_batch_ms": round(statistics.median(latencies), 1),
        "p99_batch_ms": round(float(np.percentile(latencies, 99)), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(elapsed, 2),
        "new_tokens": tokens,
        "batches": len(sizes),
        "weight_bytes": weight_bytes,
        "parsed": round(parsed / len(prompts), 4),
        **warm,
        **extra,
    }


def _device() -> tuple[str, float | None]:
    import jax

    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    bandwidth = next((bw for name, bw in BANDWIDTH_GBPS.items() if name in kind), None)
    return f"{device.platform}: {kind}", bandwidth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/triage-gemma3-270m")
    parser.add_argument(
        "--chats", type=int, default=None, help="default: 512, or 10 for presets over 100 MB"
    )
    parser.add_argument("--max_batch", type=int, default=8)
    parser.add_argument("--max_prompt_tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--length_buckets", default=None, help="e.g. 320,384,448,512,1024")
    parser.add_argument("--max_batch_tokens", type=int, default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None, help="default: bench/results/<preset>.json")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one, print JSON
    parser.add_argument("--progress", action="store_true")
    parser.add_argument(
        "--sweep_rows",
        default=None,
        help="e.g. 1,2,4,8: run one variant with exactly that many rows per call instead",
    )
    parser.add_argument("--sweep_variant", default="constrained", choices=VARIANTS)
    parser.add_argument("--fixed_batches", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.variant:
        print(json.dumps(run_variant(args)))
        return 0

    if args.chats is None:
        args.chats = default_chats(args.model)
    if args.out is None:
        args.out = f"bench/results/{Path(args.model).name}.json"
    passed = [*(argv if argv is not None else sys.argv[1:]), "--chats", str(args.chats)]

    def child(variant: str, *extra: str) -> dict[str, Any] | None:
        cmd = [sys.executable, "-m", "bench.run", "--variant", variant, *passed, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return None
        return json.loads(proc.stdout.strip().splitlines()[-1])

    results: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    if args.sweep_rows:
        # The same chats in batches of exactly r rows each, no token cap: how batching pays.
        for rows in args.sweep_rows.split(","):
            print(f"bench: {args.sweep_variant}, {rows} rows per call ...", file=sys.stderr)
            result = child(
                args.sweep_variant,
                *("--max_batch", rows, "--fixed_batches", "--max_batch_tokens", str(10**9)),
            )
            if result is None:
                return 1
            sweep[rows] = result
    else:
        for variant in args.variants.split(","):
            print(f"bench: {variant} on {args.model} ({args.chats} chats) ...", file=sys.stderr)
            result = child(variant)
            if result is None:
                return 1
            results[variant] = result

    device, bandwidth = _device()
    report: dict[str, Any] = {
        "model": args.model,
        "chats": args.chats,
        "max_batch": args.max_batch,
        "device": device,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "variants": results,
    }
    if sweep:
        report["rows_sweep"] = {"variant": args.sweep_variant, "rows": sweep}
    if bandwidth:  # tokens/s against the memory-bandwidth bound (weights read once per step)
        for result in results.values():
            avg_batch = args.chats / result["batches"]
            bound = bandwidth * 1e9 / result["weight_bytes"] * avg_batch
            result["bandwidth_bound_tokens_per_s"] = round(bound, 1)
            result["fraction_of_bound"] = round(result["tokens_per_s"] / bound, 4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")

    columns = (
        "chats_per_s",
        "tokens_per_s",
        "compilations",
        "p50_batch_ms",
        "p99_batch_ms",
        "peak_rss_mb",
        "parsed",
    )
    print(f"{'variant':12s}" + "".join(f"{c:>14s}" for c in columns))
    for name, r in results.items():
        print(f"{name:12s}" + "".join(f"{r[c]:>14}" for c in columns))
    for rows, r in sweep.items():
        print(f"{rows + ' rows':12s}" + "".join(f"{r[c]:>14}" for c in columns))
    if "reference" in results and "ours" in results:
        ref, naive, ours = results["reference"], results.get("naive"), results["ours"]
        print(
            f"ours vs reference: {ours['chats_per_s'] / ref['chats_per_s']:.1f}x chats/s, "
            f"memory {ours['peak_rss_mb'] / ref['peak_rss_mb']:.2f}x"
        )
        if naive:
            print(f"ours vs naive: {ours['chats_per_s'] / naive['chats_per_s']:.1f}x chats/s")
    if "ours" in results and "constrained" in results:
        ours, constrained = results["ours"], results["constrained"]
        print(
            f"constrained vs ours: {constrained['chats_per_s'] / ours['chats_per_s']:.2f}x "
            f"chats/s, transition table {constrained['automaton_table_mb']} MB "
            f"({constrained['automaton_states']} states)"
        )
    print(f"bench: wrote {args.out} ({device}; {report['machine']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
