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
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from triage.training_model import (
    GUARD_NEGATIVES,
    GUARD_SLOTS,
    FrozenPrefix,
    adapted_head,
    compact_vocabulary,
    fast_lora,
    guard_draw,
    leak_loss,
)

__all__ = [
    "END_OF_TURN",
    "TrainingExample",
    "build_examples",
    "enable_lora",
    "finetune",
    "main",
    "merge_adapter",
]

END_OF_TURN = "<end_of_turn>"
# Adam's first steps and the odd batch of one long chat move the adapters most: the GPU sweeps
# collapsed at 1.5e-3 and varied 68-88% across seeds at 1e-3. A short linear warmup (5% of the
# steps) and a global gradient norm cap are the usual guards; neither costs a step.
CLIP_NORM = 1.0
# Backbones larger than this get LoRA adapters by default; smaller ones are trained in full.
LORA_THRESHOLD_PARAMS = 50_000_000


@dataclass(frozen=True)
class TrainingExample:
    """One prompt and the answer the model should give to it."""

    prompt: str
    answer: str
    task: str = "triage"  # or "apology"


def _answer_json(sentiment: int, summary: str) -> str:
    """The rating first, read from the chat: trained summary-first, the model wrote a stock
    outcome phrase and copied the rating from it, so the weighted rating tokens decided nothing
    (46.5% on the hand-written set). The pipeline's parser accepts either order."""
    return json.dumps({"sentiment": sentiment, "summary": summary}, ensure_ascii=False)


def build_examples(
    records: Iterable[dict[str, Any]],
    triage_version: str | None = None,
    apology_version: str | None = None,
) -> list[TrainingExample]:
    """Render each record with the pipeline's templates: a triage example for every record
    with `sentiment` and `summary`, and an apology example for every record with a `draft`
    (with its `similar` cases, as `triage.retrieval.context.context_for_prompt` lists them,
    for templates that show them)."""
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
            similar = json.dumps(record.get("similar") or [], ensure_ascii=False)
            prompt = apology.render(
                chat, user_id=user_id, summary=summary or "", similar=similar
            ).text
            examples.append(TrainingExample(prompt, str(record["draft"]).strip(), "apology"))
    return examples


SENTIMENT_KEY = '"sentiment": '
# Lora targets: every projection of attention and feed-forward in Gemma 2/3 decoder blocks.
LORA_TARGETS = (
    "query",
    "key",
    "value",
    "attention_output",
    "ffw_gating",
    "ffw_gating_2",
    "ffw_linear",
)


@dataclass(frozen=True)
class _Encoded:
    ids: list[int]  # <bos> prompt answer <end_of_turn>
    answer_start: int  # index in ids of the first answer token
    boosted: tuple[int, int]  # answer-relative token span whose loss is weighted up
    task: str = "triage"


def _encode(tokenizer: Any, examples: Sequence[TrainingExample], max_length: int) -> list[_Encoded]:
    """Token ids of <bos> + prompt + answer + <end_of_turn>, and where the answer starts.
    Examples longer than `max_length` are dropped (shortening them would teach truncation).

    The sentiment value of a triage answer is one or two tokens among ~40; it is the number
    the product routes on, so its span is recorded to weight its loss up."""
    end = tokenizer.token_to_id(END_OF_TURN)
    stop = [end] if end != getattr(tokenizer, "unk_token_id", None) else [tokenizer.end_token_id]
    prompts = tokenizer.tokenize([e.prompt for e in examples])
    answers = tokenizer.tokenize([e.answer for e in examples])
    encoded = []
    for example, p, a in zip(examples, prompts, answers, strict=True):
        ids = [tokenizer.start_token_id, *map(int, p), *map(int, a), *stop]
        if len(ids) > max_length + 1:
            continue
        boosted = (0, 0)
        key = example.answer.find(SENTIMENT_KEY) if example.answer.startswith("{") else -1
        if key >= 0:  # the tokens from the key's space to the value's end
            value = re.match(r"-?\d+", example.answer[key + len(SENTIMENT_KEY) :])
            end = key + len(SENTIMENT_KEY) + (value.end() if value else 0)
            start = len(tokenizer.tokenize(example.answer[: key + len(SENTIMENT_KEY) - 1]))
            boosted = (start, len(tokenizer.tokenize(example.answer[:end])))
        encoded.append(_Encoded(ids, 1 + len(p), boosted, example.task))
    return encoded


class _Batches:
    """Batches of about `tokens_per_batch` tokens, padded to a width of 128, 256, 384, ... and
    answers to 64 or 128 tokens: few shapes, so few XLA compilations (each costs ~20 s on CPU).
    Targets are only the answer tokens and their positions.

    `fixed_shapes` (the LoRA path) pads widths to 64, 128, 192, ... (less padding) and keeps
    one shape per width: every batch gets the same rows and answer slots, a short last batch
    is filled with weightless copies, and weights are scaled so that each batch's loss (a
    mean over its slots) is what the variable shapes give. Ours: 8 shapes instead of 10, and
    8% fewer padded tokens."""

    def __init__(
        self,
        encoded: list[_Encoded],
        batch_size: int,
        seed: int,
        boost: float,
        tokens_per_batch: int | None = None,
        prefix: Any = None,
        target_index: Any = None,
        fixed_shapes: bool = False,
        guard_outside: Any = None,
        passes: int = 1,
        apology_passes: int | None = None,
    ):
        import keras
        import numpy as np

        self._np = np
        self._boost = boost
        self._fixed = fixed_shapes
        self._answer_width = max(self._shape(row)[1] for row in encoded)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, row in enumerate(encoded):
            key = (self._width(row), 0) if fixed_shapes else self._shape(row)
            groups.setdefault(key, []).append(i)
        self._groups: list[tuple[list[int], int]] = []  # chats of one shape, rows per batch
        self._rows: dict[int, int] = {}  # width -> rows of every batch of it (fixed shapes)
        for (width, _), members in sorted(groups.items()):
            size = max(1, tokens_per_batch // width) if tokens_per_batch else batch_size
            self._rows[width] = size
            self._groups.append((members, size))
        self._encoded = encoded
        self._rng = random.Random(seed)
        self._seed = seed
        self._epoch = -1
        # `passes` > 1: all passes dealt up front, as one Keras epoch (Keras wants the same
        # number of batches in every epoch; passes that leave examples out differ).
        self._passes = passes
        self._only_in: dict[int, int] = {}  # example -> the one pass it is trained in
        if apology_passes is not None and apology_passes < passes:
            drafts = [i for i, row in enumerate(encoded) if row.task == "apology"]
            self._rng.shuffle(drafts)
            for k, i in enumerate(drafts):
                self._only_in[i] = k % passes  # fewer passes: see `finetune`
        self.batch_pass: list[tuple[int, int]] = []  # batch -> (pass, index in the pass)
        self.batches: list[list[int]] = []
        self.deal()
        self._guard_outside = guard_outside  # token ids outside the compact vocabulary
        self._prefix = prefix  # FrozenPrefix: inputs become the hidden states it computes
        self._target_index = target_index  # token id -> index in a compact vocabulary

        outer = self

        class Dataset(keras.utils.PyDataset):
            def __len__(self) -> int:
                return len(outer.batches)

            def __getitem__(self, index: int) -> Any:
                return outer.batch(index)

            def on_epoch_end(self) -> None:
                outer.deal()

        self.dataset = Dataset()

    def deal(self) -> None:
        """New batches for an epoch: each shape's chats shuffled and cut, the batches shuffled.

        Batches used to be neighbours by length, the same in every epoch: with 1 to 5 rows per
        batch, a third of them held one language and two thirds one task, and which came last
        decided a lot (seeds ranged from 68% to 88% on the hand-written chats). Dealing again
        each epoch keeps every shape, so no compilation and no padding is added."""
        self.batches, self.batch_pass = [], []
        for _ in range(self._passes):
            self._epoch += 1
            dealt_pass = self._deal_pass(self._epoch)
            self.batch_pass += [(self._epoch, j) for j in range(len(dealt_pass))]
            self.batches += dealt_pass

    def _deal_pass(self, epoch: int) -> list[list[int]]:
        batches = []
        for members, size in self._groups:
            this = epoch % self._passes
            dealt = [i for i in members if self._only_in.get(i, this) == this]
            self._rng.shuffle(dealt)
            batches += [dealt[i : i + size] for i in range(0, len(dealt), size)]
        self._rng.shuffle(batches)
        return batches

    def cover(self) -> list[list[int]]:
        """Every example once, in batches of its shape: what the frozen prefix runs on."""
        return [
            members[i : i + size]
            for members, size in self._groups
            for i in range(0, len(members), size)
        ]

    @staticmethod
    def _shape(row: _Encoded) -> tuple[int, int]:
        width = 128 * math.ceil((len(row.ids) - 1) / 128)
        answer = len(row.ids) - row.answer_start
        return width, 64 if answer <= 64 else 128 * math.ceil(answer / 128)

    def _width(self, row: _Encoded) -> int:
        return 64 * math.ceil((len(row.ids) - 1) / 64) if self._fixed else self._shape(row)[0]

    def members(self, index: int | list[int]) -> list[int]:
        """The chats of batch `index` (or these chats), with weightless copies of its first
        filling a short batch to its shape's rows (fixed shapes)."""
        members = list(self.batches[index] if isinstance(index, int) else index)
        if self._fixed:
            width = max(self._width(self._encoded[i]) for i in members)
            members += [members[0]] * (self._rows[width] - len(members))
        return members

    def arrays(self, index: int | list[int]) -> tuple[Any, Any, Any, Any, Any]:
        """Token ids, padding mask, answer positions, targets and weights of batch `index`
        (or of these chats)."""
        np = self._np
        real = len(self.batches[index] if isinstance(index, int) else index)
        rows = [self._encoded[i] for i in self.members(index)]
        width = max(self._width(r) for r in rows)
        answer_width = max(self._shape(r)[1] for r in rows)
        scale = 1.0
        if self._fixed:  # the same loss in the batch's one shape: see the class docstring
            scale = len(rows) * self._answer_width / (real * answer_width)
            answer_width = self._answer_width
        x = np.zeros((len(rows), width), dtype="int32")
        mask = np.zeros((len(rows), width), dtype="bool")
        positions = np.zeros((len(rows), answer_width), dtype="int32")
        y = np.zeros((len(rows), answer_width), dtype="int32")
        weight = np.zeros((len(rows), answer_width), dtype="float32")
        for r, row in enumerate(rows):
            n = len(row.ids) - 1
            x[r, :n] = row.ids[:-1]
            mask[r, :n] = True
            # Position t predicts token t+1: the answer and its end, from the prompt's last token.
            targets = len(row.ids) - row.answer_start
            positions[r, :targets] = np.arange(row.answer_start - 1, n)
            y[r, :targets] = row.ids[row.answer_start :]
            weight[r, :targets] = scale
            lo, hi = row.boosted
            weight[r, lo:hi] = self._boost * scale
        weight[real:] = 0.0
        return x, mask, positions, y, weight

    def batch(self, index: int) -> Any:
        x, mask, positions, y, weight = self.arrays(index)
        if self._target_index is not None:
            y = self._target_index[y]
        if self._prefix is not None:
            hidden = self._prefix(self.members(index))
            inputs = {"hidden": hidden, "padding_mask": mask, "answer_positions": positions}
            if self._guard_outside is None:
                return inputs, y, weight
            return self._guarded(index, inputs, y, weight)
        inputs = {"token_ids": x, "padding_mask": mask, "answer_positions": positions}
        return inputs, y, weight

    def _guarded(self, index: int, inputs: dict[str, Any], y: Any, weight: Any) -> Any:
        """Add the sampled outside-vocabulary guard (triage.training_model) to a batch: its
        slots, its draw (the same for a batch in a given epoch, whatever the run's order) and
        targets; filler rows carry no weight."""
        np = self._np
        epoch, within = self.batch_pass[index] if self._passes > 1 else (self._epoch, index)
        rng = np.random.default_rng((self._seed, epoch, within))
        targets = np.count_nonzero(weight, axis=1)
        targets[len(self.batches[index]) :] = 0
        slots, drawn = guard_draw(rng, targets, self._guard_outside)
        inputs["guard_slots"] = slots
        inputs["negatives"] = np.broadcast_to(drawn, (len(slots), len(drawn)))
        guard_weight = (targets > 0).astype("float32")[:, None].repeat(slots.shape[1], axis=1)
        return (
            inputs,
            {"answer": y, "guard": np.zeros(slots.shape, dtype="float32")},  # see leak_loss
            {"answer": weight, "guard": guard_weight},
        )


def _progress(total_steps: int, every: int = 10) -> Any:
    """A callback printing step, loss and time left to stderr: a run takes most of an hour."""
    import keras

    class Progress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.started = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.step += 1
            if self.step % every and self.step != total_steps:
                return
            elapsed = time.monotonic() - self.started
            left = elapsed / self.step * (total_steps - self.step)
            loss = (logs or {}).get("loss", float("nan"))
            print(
                f"finetune: step {self.step}/{total_steps}, loss {float(loss):.4f}, "
                f"{elapsed / 60:.1f} min elapsed, about {left / 60:.1f} min left",
                file=sys.stderr,
                flush=True,
            )

    return Progress()


def _pass_losses(batch_pass: Sequence[tuple[int, int]]) -> Any:
    """A callback that splits one Keras epoch's running-mean losses back into the passes
    `_Batches` dealt into it: the report keeps one loss per epoch of data."""
    import keras

    class PassLosses(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.logs: list[dict[str, float]] = []

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.logs.append({k: float(v) for k, v in (logs or {}).items()})

        def means(self) -> dict[str, list[float]]:
            """Per pass: (running mean x steps at its end - the same at its start) / steps."""
            ends = [
                i
                for i in range(len(self.logs))
                if i + 1 == len(self.logs) or batch_pass[i + 1][0] != batch_pass[i][0]
            ]
            out: dict[str, list[float]] = {}
            for name in self.logs[0] if self.logs else ():
                values, before = [], (0, 0.0)
                for end in ends:
                    total = self.logs[end][name] * (end + 1)
                    values.append((total - before[1]) / (end + 1 - before[0]))
                    before = (end + 1, total)
                out[name] = values
            return out

    return PassLosses()


def _prefix_progress(blocks: int, every: int = 50) -> Any:
    def report(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            print(
                f"finetune: frozen blocks 0-{blocks - 1} run on batch {done}/{total}",
                file=sys.stderr,
                flush=True,
            )

    return report


def _answer_only_model(causal_lm: Any) -> Any:
    """The causal LM, computing logits only at answer positions.

    The output projection (vocabulary x hidden: 262,144 x 640 for Gemma 3) costs more than the
    whole decoder for a long prompt; the loss needs it only where an answer token is predicted.
    """
    import keras
    from keras import ops

    backbone = causal_lm.backbone
    cap = getattr(backbone, "final_logit_soft_cap", None)

    class AnswerOnly(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone

        def call(self, inputs: dict[str, Any]) -> Any:
            hidden = self.backbone(
                {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}
            )
            at = ops.expand_dims(inputs["answer_positions"], -1)
            hidden = ops.take_along_axis(hidden, at, axis=1)
            logits = self.backbone.token_embedding(hidden, reverse=True)
            if cap:
                logits = ops.tanh(logits / cap) * cap
            return logits

    return AnswerOnly()


def enable_lora(backbone: Any, rank: int, top_layers: int | None = None) -> int:
    """LoRA on every attention and feed-forward projection of the top `top_layers` decoder
    blocks (all when None); everything else frozen. Returns how many projections got adapters.

    Gradients then flow only through the adapted blocks, so tuning the top half costs about
    half the backward pass. The indices are recorded where keras-hub's `save_lora_weights` and
    `load_lora_weights` look for them."""
    backbone.enable_lora(rank, target_layer_names=[])  # freezes everything, records the rank
    blocks = list(backbone.transformer_layers)
    chosen = blocks if not top_layers else blocks[-top_layers:]
    targets = {
        id(layer)
        for block in chosen
        for layer in block._flatten_layers()
        if layer.name in LORA_TARGETS and hasattr(layer, "enable_lora")
    }
    for block in chosen:
        block.trainable = True  # recursive in Keras: re-freeze all but the adapted projections
        for layer in block._flatten_layers(include_self=False):
            layer.trainable = id(layer) in targets
    weighted = [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights]
    backbone._lora_enabled_layers = []
    for index, layer in enumerate(weighted):
        if id(layer) in targets:
            layer.enable_lora(rank)  # freezes the kernel, adds the trainable factors
            backbone._lora_enabled_layers.append(index)
    return len(backbone._lora_enabled_layers)


def _prefer_concurrent_cpu_schedule() -> None:
    """XLA's CPU scheduler that lets independent ops run side by side: a training step took
    12% less on our 2 cores (3.2 s instead of 3.6 s). Effective only before JAX starts."""
    flag = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()


def finetune(
    base_preset: str,
    examples: Sequence[TrainingExample],
    out_dir: str,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float | None = None,
    lora_rank: int | None = None,
    lora_layers: int | None = None,
    sentiment_weight: float = 4.0,
    max_length: int = 1024,
    max_steps: int | None = None,
    tokens_per_batch: int | None = None,
    adapter_out: str | None = None,
    seed: int = 0,
    verbose: int = 1,
    apology_epochs: int | None = None,
) -> dict[str, Any]:
    """Train and save a preset to `out_dir`; returns what was done (for logs and tests).

    `apology_epochs` < `epochs`: each apology example is trained in that many of the epochs
    (spread evenly), the triage examples in all: drafts learn their form sooner than ratings
    settle, and on 2 CPU cores every token counts (see the README's build time).

    `lora_rank`: None picks LoRA (rank 8) for backbones over 50M parameters and full training
    below; 0 forces full training. `lora_layers`: adapt only the top N decoder blocks.
    `adapter_out`: also save the LoRA weights alone (`*.lora.h5`, a few MB) to rebuild the
    preset from the base with `merge_adapter`.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    _prefer_concurrent_cpu_schedule()
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    causal_lm = keras_hub.models.CausalLM.from_preset(base_preset)
    backbone = causal_lm.backbone
    params = backbone.count_params()
    rank = lora_rank if lora_rank is not None else (8 if params > LORA_THRESHOLD_PARAMS else 0)
    adapted = enable_lora(backbone, rank, lora_layers) if rank else 0
    lr = learning_rate if learning_rate is not None else (2e-4 if rank else 3e-3)
    fewer_drafts = apology_epochs is not None and apology_epochs < epochs

    preprocessor = causal_lm.preprocessor
    encoded = _encode(preprocessor.tokenizer, examples, max_length)
    if not encoded:
        raise ValueError(f"no example fits in {max_length} tokens")
    speedups: dict[str, Any] = {}
    if rank:  # frozen below the adapted blocks: train only the top, see triage.training_model
        start = backbone.num_layers - min(lora_layers or backbone.num_layers, backbone.num_layers)
        vocab, target_index = compact_vocabulary([e.ids for e in encoded], backbone.vocabulary_size)
        prefix = FrozenPrefix(backbone, start)
        speedups = {
            "factored_lora": fast_lora(backbone),
            "cached_blocks": start,
            "loss_vocabulary": len(vocab),
        }
        model = adapted_head(backbone, start, vocab)
        outside = np.setdiff1d(np.arange(backbone.vocabulary_size, dtype="int32"), vocab)
        speedups["outside_guard"] = {"slots": GUARD_SLOTS, "negatives": GUARD_NEGATIVES}
    else:
        prefix = target_index = outside = None
        model = _answer_only_model(causal_lm)
    batches = _Batches(
        encoded,
        batch_size,
        seed,
        sentiment_weight,
        tokens_per_batch,
        prefix,
        target_index,
        fixed_shapes=prefix is not None,
        guard_outside=outside,
        passes=epochs if fewer_drafts else 1,
        apology_passes=apology_epochs if fewer_drafts else None,
    )
    if prefix is not None:
        cover = batches.cover() if fewer_drafts else batches.batches
        prefix.compute(
            [tuple(b) for b in cover],
            lambda i: batches.arrays(cover[i])[:2],
            _prefix_progress(prefix.start) if verbose else None,
        )
    passes, epochs = (epochs, 1) if fewer_drafts else (1, epochs)  # see _Batches: one epoch
    steps_per_epoch = len(batches.batches)
    steps = epochs * steps_per_epoch
    if max_steps is not None:
        steps = min(steps, max_steps)
        epochs = math.ceil(steps / steps_per_epoch)
    warmup = steps // 20 if steps >= 100 else 0
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else lr,
        decay_steps=steps - warmup,
        alpha=0.1,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(
        optimizer=keras.optimizers.AdamW(
            learning_rate=schedule, weight_decay=0.01, global_clipnorm=CLIP_NORM
        ),
        loss={"answer": loss, "guard": leak_loss} if outside is not None else loss,
    )
    started = time.monotonic()
    by_pass = _pass_losses(batches.batch_pass) if passes > 1 else None
    history = model.fit(
        batches.dataset,
        epochs=epochs,
        steps_per_epoch=min(steps, steps_per_epoch) if max_steps is not None else None,
        verbose=0,
        shuffle=False,
        callbacks=([_progress(steps)] if verbose else []) + ([by_pass] if by_pass else []),
    )
    seconds = time.monotonic() - started
    losses = by_pass.means() if by_pass else history.history
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(out_dir)  # keras merges LoRA into the kernels it saves
    if adapter_out and rank:
        Path(adapter_out).parent.mkdir(parents=True, exist_ok=True)
        backbone.save_lora_weights(adapter_out)
    return {
        "examples": len(encoded),
        "dropped": len(examples) - len(encoded),
        "steps": steps,
        "batch_size": batch_size,
        "tokens_per_batch": tokens_per_batch,
        "lora_rank": rank,
        "lora_layers": lora_layers,
        "adapted_projections": adapted,
        "params": params,
        "train_seconds": round(seconds, 1),
        "learning_rate": lr,
        "warmup_steps": warmup,
        "global_clipnorm": CLIP_NORM,
        "batches": (
            f"{passes} epochs dealt up front; each draft in {apology_epochs} of them"
            if passes > 1
            else "dealt again each epoch"
        ),
        **speedups,
        "loss_per_epoch": [round(float(v), 4) for v in losses["loss"]],
        **{
            f"{name}_per_epoch": [round(float(v), 4) for v in losses[name]]
            for name in ("answer_loss", "guard_loss")
            if name in losses
        },
    }


def merge_adapter(
    base_preset: str, adapter: str, out_dir: str, lora_layers: int | None = None
) -> None:
    """Base preset + LoRA file -> a plain preset (the adapter merged into the kernels)."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import h5py
    import keras_hub

    with h5py.File(adapter, "r") as f:
        rank = (
            int(f["lora"]["vars"]["rank"][()])
            if "vars" in f["lora"]
            else int(f["lora"]["rank"][()])
        )
    causal_lm = keras_hub.models.CausalLM.from_preset(base_preset)
    enable_lora(causal_lm.backbone, rank, lora_layers)
    causal_lm.backbone.load_lora_weights(adapter)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage finetune", description=__doc__.splitlines()[0])
    parser.add_argument("--model_preset", required=True, help="base preset to start from")
    parser.add_argument("--examples", required=True, nargs="+", help="JSON-lines files")
    parser.add_argument("--out", required=True, help="directory of the new preset")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=None)
    parser.add_argument("--lora_rank", type=int, default=None, help="0 = full training")
    parser.add_argument("--lora_layers", type=int, default=None, help="adapt the top N blocks")
    parser.add_argument("--sentiment_weight", type=float, default=4.0)
    parser.add_argument("--max_steps", type=int, default=None)
    parser.add_argument(
        "--tokens_per_batch", type=int, default=None, help="batch by tokens, not --batch_size"
    )
    parser.add_argument("--adapter_out", default=None, help="also save the LoRA weights here")
    parser.add_argument("--report", default=None, help="write the training report (JSON) here")
    parser.add_argument("--max_length", type=int, default=1024, help="tokens per example")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--triage_prompt_version", default=None)
    parser.add_argument("--apology_prompt_version", default=None)
    parser.add_argument(
        "--apology_epochs",
        type=int,
        default=None,
        help="train each draft in only this many of the epochs (default: all)",
    )
    args = parser.parse_args(argv)

    from triage.evaluate import read_jsonl

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
        lora_layers=args.lora_layers,
        sentiment_weight=args.sentiment_weight,
        max_steps=args.max_steps,
        tokens_per_batch=args.tokens_per_batch,
        adapter_out=args.adapter_out,
        max_length=args.max_length,
        seed=args.seed,
        apology_epochs=args.apology_epochs,
    )
    from triage.prompts import PROMPTS_FILE, load_template

    versions = {
        "triage": load_template("triage", args.triage_prompt_version).version,
        "apology": load_template("apology", args.apology_prompt_version).version,
    }
    # The pipeline asks this preset in the wording it learned (triage.prompts.prompt_version).
    Path(args.out, PROMPTS_FILE).write_text(json.dumps(versions) + "\n", encoding="utf-8")
    report["prompts"] = versions
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"finetune: saved {args.out}: {json.dumps(report)}", file=sys.stderr)
    return 0


def main_merge(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triage merge-adapter", description="base preset + LoRA adapter -> a plain preset"
    )
    parser.add_argument("--model_preset", required=True, help="the base the adapter was tuned on")
    parser.add_argument("--adapter", required=True, help="*.lora.h5 from triage finetune")
    parser.add_argument("--report", required=True, help="its training report (JSON)")
    parser.add_argument("--out", required=True, help="directory of the merged preset")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text(encoding="utf-8"))
    merge_adapter(args.model_preset, args.adapter, args.out, report.get("lora_layers"))
    from triage.prompts import PROMPTS_FILE

    if report.get("prompts"):
        Path(args.out, PROMPTS_FILE).write_text(json.dumps(report["prompts"]) + "\n")
    print(f"merge-adapter: {args.adapter} + {args.model_preset} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
