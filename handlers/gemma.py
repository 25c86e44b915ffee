"""A Beam `ModelHandler` for keras-hub Gemma causal LMs: prompts in, completions out.

This module knows only the model. It imports nothing from `triage/`: what to stop on and how
many tokens to allow come in as parameters, so the same handler serves the triage prompt, the
apology prompt and any later one.

Example Usage::

    handler = KeyedModelHandler(GemmaModelHandler("models/tiny-gemma2", max_new_tokens=256))
    results = keyed_prompts | RunInference(handler).with_exception_handling()

Compared with the published reference handler (one `generate()` per chat, `max_length` counting
prompt plus reply), this one generates a whole batch in one call, bounds the *new* tokens of every
row, and stops at the instruct model's end-of-turn token as well as at `<eos>`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

if TYPE_CHECKING:
    from handlers.constrained import ConstrainedGenerate

__all__ = [
    "DEFAULT_LENGTH_BUCKETS",
    "DEFAULT_STOP_TOKENS",
    "GemmaGenerator",
    "GemmaModelHandler",
    "load_token_counter",
]

LOG = logging.getLogger(__name__)

# `<end_of_turn>` ends a Gemma instruct turn and is not the tokenizer's `<eos>`; base models end
# with `<eos>`. Tokens missing from a vocabulary are ignored.
DEFAULT_STOP_TOKENS = ("<eos>", "<end_of_turn>")
_DEFAULT_ENV = {"KERAS_BACKEND": "jax"}
# Prompt lengths (tokens) batches are padded up to: a few shapes cover the usual chats.
DEFAULT_LENGTH_BUCKETS = (384, 512, 1024)


def _select_backend(env_vars: dict[str, str]) -> None:
    """Keras reads KERAS_BACKEND once, at its first import: set it before importing keras."""
    for key, value in env_vars.items():
        os.environ.setdefault(key, value)


class GemmaGenerator:
    """A loaded causal LM with its stop tokens; what `load_model` returns.

    A plain object with one method, so Beam can weak-reference it and, with `large_model=True`,
    proxy `generate` calls to the process that holds the model.
    """

    def __init__(
        self,
        causal_lm: Any,
        stop_tokens: Sequence[str],
        model_id: str,
        lock: threading.Lock | None = None,
        batch_buckets: Sequence[int] = (),
        length_buckets: Sequence[int] = (),
        max_batch_tokens: int | None = None,
        constrained: ConstrainedGenerate | None = None,
    ):
        self.causal_lm = causal_lm
        # When set, every reply is generated inside the automaton (handlers/constrained.py).
        self.constrained = constrained
        self.model_id = model_id
        # Shapes are padded up to these, so the number of compiled programs is bounded by the
        # bucket count, not by the traffic. Empty: exact shapes (one compile per new shape).
        self.batch_buckets = tuple(sorted(set(batch_buckets)))
        self.length_buckets = tuple(sorted(set(length_buckets)))
        # Rows x sequence length per call: bounds the activation memory of the prefill. A batch
        # over it runs as smaller bucket-sized batches.
        self.max_batch_tokens = max_batch_tokens
        tokenizer = causal_lm.preprocessor.tokenizer
        self._tokenizer = tokenizer
        unk = getattr(tokenizer, "unk_token_id", None)
        known = {tokenizer.token_to_id(t) for t in stop_tokens}
        self.stop_token_ids = sorted(i for i in known if i is not None and i != unk)
        if not self.stop_token_ids:
            raise ValueError(
                f"{model_id}: none of the stop tokens {stop_tokens} is in the vocabulary"
            )
        self._strip_ids = set(getattr(tokenizer, "special_token_ids", []) or [])
        # Calls share the model's one compiled generate function and its cache.
        self._lock = lock or threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self._tokenizer.tokenize(list(texts))]

    @staticmethod
    def _bucket(value: int, buckets: Sequence[int], step: int) -> int:
        """The smallest bucket that holds `value`; past the largest, the next multiple of step."""
        for bucket in buckets:
            if value <= bucket:
                return bucket
        return -(-value // step) * step if buckets else value

    def _fits(self, rows: int, length: int) -> bool:
        return rows == 1 or self.max_batch_tokens is None or rows * length <= self.max_batch_tokens

    def shapes(self, max_new_tokens: int) -> list[tuple[int, int]]:
        """Every (batch, sequence length) this generator compiles for, given the buckets."""
        return [
            (b, p + max_new_tokens)
            for b in self.batch_buckets
            for p in self.length_buckets
            if self._fits(b, p + max_new_tokens)
        ]

    def warm_up(self, max_new_tokens: int) -> int:
        """Compile every bucket shape now, so no live chat waits for a compile. Returns the
        number of shapes run."""
        shapes = self.shapes(max_new_tokens)
        for batch, length in shapes:
            self._generate_padded(["warm-up"] * batch, [2] * batch, length, max_new_tokens)
        return len(shapes)

    def generate(self, prompts: Sequence[str], max_new_tokens: int) -> list[tuple[str, int, int]]:
        """Generate for the whole batch in one compiled call.

        Returns, per prompt, (completion text, prompt tokens, completion tokens). Each row gets
        at most `max_new_tokens` new tokens and is cut at its first stop token. The batch is
        padded to a batch bucket with copies of its first prompt (they finish when it does, and
        are never returned), and the sequence to a length bucket.
        """
        prompts = list(prompts)
        limit = self.batch_buckets[-1] if self.batch_buckets else len(prompts)
        if len(prompts) > limit:  # larger than the largest bucket: in bucket-sized pieces
            return [
                result
                for i in range(0, len(prompts), limit)
                for result in self.generate(prompts[i : i + limit], max_new_tokens)
            ]
        prompt_lengths = [n + 1 for n in self.count_tokens(prompts)]  # +1 for <bos>
        rows = self._bucket(len(prompts), self.batch_buckets, step=1)
        prompt_room = self._bucket(max(prompt_lengths), self.length_buckets, step=256)
        length = prompt_room + max_new_tokens
        if not self._fits(rows, length):  # too many tokens at once: halve the batch
            half = (len(prompts) + 1) // 2
            return self.generate(prompts[:half], max_new_tokens) + self.generate(
                prompts[half:], max_new_tokens
            )
        padded = prompts + [prompts[0]] * (rows - len(prompts))
        padded_lengths = prompt_lengths + [prompt_lengths[0]] * (rows - len(prompts))
        results = self._generate_padded(padded, padded_lengths, length, max_new_tokens)
        return results[: len(prompts)]

    def _generate_padded(
        self,
        prompts: list[str],
        prompt_lengths: list[int],
        max_length: int,
        max_new_tokens: int,
    ) -> list[tuple[str, int, int]]:
        import numpy as np

        preprocessor = self.causal_lm.preprocessor
        with self._lock:
            inputs = preprocessor.generate_preprocess(prompts, sequence_length=max_length)
            if self.constrained is not None:
                outputs = self.constrained(inputs, self.stop_token_ids, max_new_tokens)
            else:
                generate_fn = self.causal_lm.make_generate_function()
                outputs = generate_fn(inputs, stop_token_ids=self.stop_token_ids)
        token_ids = np.asarray(outputs["token_ids"])
        mask = np.asarray(outputs["padding_mask"]).astype(bool)
        stop = set(self.stop_token_ids)
        rows: list[list[int]] = []
        for row, start in enumerate(np.asarray(inputs["padding_mask"]).sum(axis=1)):
            end = min(int(start) + max_new_tokens, max_length)
            completion: list[int] = []
            for token, keep in zip(token_ids[row, start:end], mask[row, start:end], strict=True):
                if not keep or int(token) in stop:
                    break
                completion.append(int(token))
            rows.append(completion)
        texts = self._tokenizer.detokenize(
            [[t for t in ids if t not in self._strip_ids] for ids in rows]
        )
        texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts]
        return [
            (text, n_prompt, len(ids))
            for text, n_prompt, ids in zip(texts, prompt_lengths, rows, strict=True)
        ]


class _SharedModel(NamedTuple):
    causal_lm: Any
    lock: threading.Lock
    # (stop ids, new-token budget, constrained) already compiled
    warmed: set[tuple[tuple[int, ...], int, bool]]
    # Constrained generate functions by (schema, character cap, stop ids): one per reply kind.
    constrained: dict[tuple[str, int, tuple[int, ...]], ConstrainedGenerate]


# One loaded model per (preset, dtype, sampler) per process: the triage and apology stages use
# the same weights, so they share them instead of holding two copies in memory.
_LOADED: dict[tuple[str, str | None, str], _SharedModel] = {}
_LOADED_LOCK = threading.Lock()


def _default_batch_tokens() -> int:
    import jax

    # Measured on a 2-core CPU (make bench): one row per call beats padded batches of 2 to 8
    # (38 vs 28 chats/s), since every padded row costs full compute there. Accelerators are
    # bound by memory bandwidth and want large batches.
    return 1024 if jax.default_backend() == "cpu" else 65536


def _powers_of_two(limit: int) -> list[int]:
    sizes, size = [], 1
    while size < limit:
        sizes.append(size)
        size *= 2
    return [*sizes, limit]


class GemmaModelHandler(ModelHandler[str, PredictionResult, GemmaGenerator]):
    """Runs a keras-hub Gemma causal LM (Gemma 2 by default; Gemma 3 presets work unchanged).

    Args:
      model_preset: anything `keras_hub.models.CausalLM.from_preset` accepts: a local preset
        directory, a `gs://` path or a Kaggle handle such as
        `kaggle://google/gemma-2/keras/gemma2_instruct_2b_en`.
      max_new_tokens: the most tokens generated per prompt (the prompt does not count).
      stop_tokens: generation of a row ends at the first of these that is in the vocabulary.
      sampler: a keras-hub sampler name; greedy by default so replies are reproducible.
      dtype: weights dtype, e.g. "bfloat16" on GPUs; None keeps the preset's.
      env_vars: set before keras is imported; `KERAS_BACKEND=jax` unless given.
      **batching_kwargs: Beam's own options, passed through: `min_batch_size`,
        `max_batch_size`, `max_batch_duration_secs`, `batch_length_fn`,
        `batch_bucket_boundaries`, `large_model`, `model_copies`.
      batch_buckets: batch sizes a batch is padded up to; default powers of two up to
        `max_batch_size`.
      length_buckets: prompt lengths (tokens, with <bos>) a batch is padded up to; a prompt
        longer than the largest is padded to the next multiple of 256.
      max_batch_tokens: rows x sequence length per generate call, which bounds activation
        memory; larger batches run in pieces. Default 1024 on CPU, 65536 on accelerators.
      warm_up: compile every bucket shape in `load_model`, before the first live batch.
      reply_schema: a JSON schema every reply must match: generation is constrained to it
        token by token (handlers/constrained.py), so replies are valid by construction. A
        string is a regex instead (apology drafts: free text without digits).
        None: free text.
      max_reply_chars: with `reply_schema`, the most characters a reply may have; the
        automaton closes the reply in time to stay within it and within `max_new_tokens`.
    """

    def __init__(
        self,
        model_preset: str,
        *,
        max_new_tokens: int = 256,
        stop_tokens: Iterable[str] = DEFAULT_STOP_TOKENS,
        sampler: str = "greedy",
        dtype: str | None = None,
        env_vars: dict[str, str] | None = None,
        batch_buckets: Sequence[int] | None = None,
        length_buckets: Sequence[int] = DEFAULT_LENGTH_BUCKETS,
        max_batch_tokens: int | None = None,
        warm_up: bool = True,
        reply_schema: dict[str, Any] | str | None = None,
        max_reply_chars: int | None = None,
        **batching_kwargs: Any,
    ):
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        super().__init__(env_vars={**_DEFAULT_ENV, **(env_vars or {})}, **batching_kwargs)
        max_batch = batching_kwargs.get("max_batch_size") or 8
        self._batch_buckets = tuple(batch_buckets or _powers_of_two(max_batch))
        self._length_buckets = tuple(length_buckets)
        self._max_batch_tokens = max_batch_tokens
        self._warm_up = warm_up
        self._reply_schema = reply_schema
        self._max_reply_chars = max_reply_chars
        self._preset = model_preset
        self._max_new_tokens = max_new_tokens
        self._stop_tokens = tuple(stop_tokens)
        self._sampler = sampler
        self._dtype = dtype
        self._completion_tokens = Metrics.distribution("gemma", "completion_tokens")
        self._prompt_tokens = Metrics.distribution("gemma", "prompt_tokens")

    @property
    def model_id(self) -> str:
        return self._preset

    def load_model(self) -> GemmaGenerator:
        key = (self._preset, self._dtype, self._sampler)
        with _LOADED_LOCK:
            if key not in _LOADED:
                _select_backend(self._env_vars)
                import keras_hub

                LOG.info("loading %s", self._preset)
                kwargs = {"dtype": self._dtype} if self._dtype else {}
                causal_lm = keras_hub.models.CausalLM.from_preset(self._preset, **kwargs)
                causal_lm.compile(sampler=self._sampler)
                _LOADED[key] = _SharedModel(causal_lm, threading.Lock(), set(), {})
            shared = _LOADED[key]
        generator = GemmaGenerator(
            shared.causal_lm,
            self._stop_tokens,
            self._preset,
            shared.lock,
            batch_buckets=self._batch_buckets,
            length_buckets=self._length_buckets,
            max_batch_tokens=self._max_batch_tokens or _default_batch_tokens(),
        )
        if self._reply_schema is not None:
            generator.constrained = self._constrained(shared, generator.stop_token_ids)
        if self._warm_up:
            # Stages that share the model and its shapes (triage and repair) warm up once.
            todo = (
                tuple(generator.stop_token_ids),
                self._max_new_tokens,
                generator.constrained is not None,
            )
            with _LOADED_LOCK:
                first = todo not in shared.warmed
                shared.warmed.add(todo)
            if first:
                LOG.info("warming up %d shapes", generator.warm_up(self._max_new_tokens))
        return generator

    def _constrained(self, shared: _SharedModel, stop_ids: list[int]) -> ConstrainedGenerate:
        from handlers.constrained import ConstrainedGenerate
        from handlers.token_automaton import automaton_for

        cap = self._max_reply_chars or 2**30
        key = (json.dumps(self._reply_schema, sort_keys=True), cap, tuple(stop_ids))
        # (a string schema is a regex: json.dumps keeps it distinct from any JSON schema)
        with _LOADED_LOCK:
            if key not in shared.constrained:
                tokenizer = shared.causal_lm.preprocessor.tokenizer
                automaton = automaton_for(tokenizer, self._reply_schema, stop_ids)
                LOG.info(
                    "constrained decoding: %d states, %.2f MB table",
                    automaton.num_states,
                    automaton.nbytes / 1e6,
                )
                shared.constrained[key] = ConstrainedGenerate(shared.causal_lm, automaton, cap)
            return shared.constrained[key]

    def run_inference(
        self,
        batch: Sequence[str],
        model: GemmaGenerator,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        results = model.generate(list(batch), self._max_new_tokens)
        predictions = []
        for prompt, (text, n_prompt, n_new) in zip(batch, results, strict=True):
            self._prompt_tokens.update(n_prompt)
            self._completion_tokens.update(n_new)
            predictions.append(PredictionResult(prompt, text, self._preset))
        return predictions

    def get_metrics_namespace(self) -> str:
        return "gemma"

    def share_model_across_processes(self) -> bool:
        return self._share_across_processes


@functools.lru_cache(maxsize=8)
def load_token_counter(model_preset: str) -> Any:
    """A `str -> int` token counter from the preset's own tokenizer (no model weights loaded).

    Prompt budgets are set in tokens; counting them with the model's tokenizer makes a budget
    exact instead of a guess from characters.
    """
    _select_backend(_DEFAULT_ENV)
    import keras_hub

    tokenizer = keras_hub.models.Tokenizer.from_preset(model_preset)

    def count(text: str) -> int:
        return len(tokenizer.tokenize(text)) + 1  # +1 for <bos>

    return count
