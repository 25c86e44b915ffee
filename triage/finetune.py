"""`triage finetune`: adapt a keras-hub Gemma preset to support chats, on the pipeline's prompts.

Training examples are rendered with the exact templates the pipeline uses (`prompts/`), so the
model learns the task as it will be asked; the loss covers only the answer tokens (the JSON
triage object, or the approved draft) and the `<end_of_turn>` that ends them, so the model learns
to answer and to stop, not to reproduce prompts. Real presets are tuned with LoRA; tiny ones are
trained in full. Deterministic under a seed. The result is a preset directory that
`--model_preset` accepts.

Input JSON lines: triage examples `{"chat_message", "sentiment", "summary"}` and, optionally,
approved drafts `{"chat_message", "draft"}` (with `summary` when known); `user_id` is optional.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["END_OF_TURN", "TrainingExample", "build_examples", "finetune", "main"]

END_OF_TURN = "<end_of_turn>"
# Backbones larger than this get LoRA adapters by default; smaller ones are trained in full.
LORA_THRESHOLD_PARAMS = 50_000_000


@dataclass(frozen=True)
class TrainingExample:
    """One prompt and the answer the model should give to it."""

    prompt: str
    answer: str


def _answer_json(sentiment: int, summary: str) -> str:
    return json.dumps({"sentiment": sentiment, "summary": summary}, ensure_ascii=False)


def build_examples(
    records: Iterable[dict[str, Any]],
    triage_version: str | None = None,
    apology_version: str | None = None,
) -> list[TrainingExample]:
    """Render each record with the pipeline's templates: a triage example for every record
    with `sentiment` and `summary`, and an apology example for every record with a `draft`."""
    from triage.prompts import load_template

    triage = load_template("triage", triage_version)
    apology = load_template("apology", apology_version)
    examples = []
    for record in records:
        chat = record["chat_message"]
        user_id = str(record.get("user_id", "customer"))
        summary = record.get("summary")
        if "sentiment" in record and summary:
            prompt = triage.render(chat, user_id=user_id).text
            examples.append(
                TrainingExample(prompt, _answer_json(int(record["sentiment"]), summary))
            )
        if record.get("draft"):
            prompt = apology.render(chat, user_id=user_id, summary=summary or "").text
            examples.append(TrainingExample(prompt, str(record["draft"]).strip()))
    return examples


def _encode(
    tokenizer: Any, examples: Sequence[TrainingExample], max_length: int
) -> list[tuple[list[int], int]]:
    """Token ids of <bos> + prompt + answer + <end_of_turn>, and where the answer starts.
    Examples longer than `max_length` are dropped (shortening them would teach truncation)."""
    end = tokenizer.token_to_id(END_OF_TURN)
    stop = [end] if end != getattr(tokenizer, "unk_token_id", None) else [tokenizer.end_token_id]
    prompts = tokenizer.tokenize([e.prompt for e in examples])
    answers = tokenizer.tokenize([e.answer for e in examples])
    encoded = []
    for p, a in zip(prompts, answers, strict=True):
        ids = [tokenizer.start_token_id, *map(int, p), *map(int, a), *stop]
        if len(ids) <= max_length + 1:
            encoded.append((ids, 1 + len(p)))
    return encoded


class _Batches:
    """Batches of similar length, padded to a multiple of 64: few shapes, few compilations."""

    def __init__(self, encoded: list[tuple[list[int], int]], batch_size: int, seed: int):
        import keras
        import numpy as np

        self._np = np
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        self.batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        self._encoded = encoded
        self._rng = random.Random(seed)

        outer = self

        class Dataset(keras.utils.PyDataset):
            def __len__(self) -> int:
                return len(outer.batches)

            def __getitem__(self, index: int) -> Any:
                return outer.batch(index)

            def on_epoch_end(self) -> None:
                outer._rng.shuffle(outer.batches)

        self.dataset = Dataset()
        self._rng.shuffle(self.batches)

    def batch(self, index: int) -> Any:
        np = self._np
        rows = [self._encoded[i] for i in self.batches[index]]
        width = 64 * math.ceil(max(len(ids) - 1 for ids, _ in rows) / 64)
        x = np.zeros((len(rows), width), dtype="int32")
        y = np.zeros((len(rows), width), dtype="int32")
        mask = np.zeros((len(rows), width), dtype="bool")
        weight = np.zeros((len(rows), width), dtype="float32")
        for r, (ids, answer_start) in enumerate(rows):
            n = len(ids) - 1
            x[r, :n] = ids[:-1]
            y[r, :n] = ids[1:]
            mask[r, :n] = True
            weight[r, answer_start - 1 : n] = 1.0  # predict the answer and its end, nothing else
        return {"token_ids": x, "padding_mask": mask}, y, weight


def finetune(
    base_preset: str,
    examples: Sequence[TrainingExample],
    out_dir: str,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float | None = None,
    lora_rank: int | None = None,
    max_length: int = 1024,
    seed: int = 0,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train and save a preset to `out_dir`; returns what was done (for logs and tests).

    `lora_rank`: None picks LoRA (rank 8) for backbones over 50M parameters and full training
    below; 0 forces full training.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    causal_lm = keras_hub.models.CausalLM.from_preset(base_preset)
    params = causal_lm.backbone.count_params()
    rank = lora_rank if lora_rank is not None else (8 if params > LORA_THRESHOLD_PARAMS else 0)
    if rank:
        causal_lm.backbone.enable_lora(rank)
    lr = learning_rate if learning_rate is not None else (2e-4 if rank else 3e-3)

    preprocessor = causal_lm.preprocessor
    encoded = _encode(preprocessor.tokenizer, examples, max_length)
    if not encoded:
        raise ValueError(f"no example fits in {max_length} tokens")
    batches = _Batches(encoded, batch_size, seed)
    steps = epochs * len(batches.batches)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr, decay_steps=steps, warmup_target=None, alpha=0.1
    )
    causal_lm.preprocessor = None  # inputs arrive tokenized, with their loss weights
    causal_lm.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    # keras.Model.fit itself: keras-hub's fit would route batches through tf.data conversion.
    history = keras.Model.fit(
        causal_lm, batches.dataset, epochs=epochs, verbose=verbose, shuffle=False
    )
    causal_lm.preprocessor = preprocessor
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(out_dir)
    return {
        "examples": len(encoded),
        "dropped": len(examples) - len(encoded),
        "steps": steps,
        "lora_rank": rank,
        "params": params,
        "final_loss": float(history.history["loss"][-1]),
    }


def read_jsonl(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--model_preset", required=True, help="base preset to start from")
    parser.add_argument("--examples", required=True, nargs="+", help="JSON-lines files")
    parser.add_argument("--out", required=True, help="directory of the new preset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--lora_rank", type=int, default=None, help="0 = full training")
    parser.add_argument("--max_length", type=int, default=1024, help="tokens per example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--triage_prompt_version", default=None)
    parser.add_argument("--apology_prompt_version", default=None)
    args = parser.parse_args(argv)

    records = [r for path in args.examples for r in read_jsonl(path)]
    examples = build_examples(records, args.triage_prompt_version, args.apology_prompt_version)
    print(f"finetune: {len(examples)} examples from {len(records)} records", file=sys.stderr)
    report = finetune(
        args.model_preset,
        examples,
        args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        lora_rank=args.lora_rank,
        max_length=args.max_length,
        seed=args.seed,
    )
    print(f"finetune: saved {args.out}: {json.dumps(report)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
