"""Constrained generation: the automaton state rides through keras-hub's jitted sampling loop.

keras-hub's `Sampler.get_next_token` sees only probabilities, so it cannot know where in the
reply a row is. `ConstrainedSampler` overrides the loop itself: next to the token ids and the
KV cache it carries, per row, the automaton state and the characters written so far; at each
step it gathers the row of allowed tokens from the class table (`handlers/token_automaton.py`)
on the device, masks the logits, and lets the wrapped sampler (greedy, top-k, random, ...)
choose among what is left. No token goes back to the host until the batch is done.

A token is allowed when the automaton accepts it and the reply can still be finished after it:
within the row's remaining new-token budget and within the character cap. Stop tokens are
allowed only in accepting states. Rows that are still reading their prompt (longer prompts in
a padded batch) keep their state unchanged.

`ConstrainedGenerate` compiles generation with this sampler next to the model's own generate
function, sharing its weights: the triage stage uses it, the apology stage keeps free text.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from handlers.token_automaton import TokenAutomaton

__all__ = ["AutomatonArrays", "ConstrainedGenerate", "constrained_sampler"]


class AutomatonArrays(NamedTuple):
    """The automaton and the budgets as device arrays: jit arguments, not baked constants, so
    a 256k-token table is neither copied into every compiled program nor re-sent per call."""

    class_next: Any
    token_class: Any
    min_tokens: Any
    min_chars: Any
    token_chars: Any
    initial: Any
    max_new_tokens: Any
    max_chars: Any


def _sampler_class() -> type:
    """Defined on first use: subclassing keras-hub's Sampler imports keras, which must happen
    only after the handler has chosen its backend."""
    from keras import ops
    from keras_hub.samplers import Sampler
    from keras_hub.src.utils.tensor_utils import any_equal

    class ConstrainedSampler(Sampler):
        def __init__(self, base: Sampler):
            super().__init__(temperature=getattr(base, "temperature", 1.0))
            self.base = base
            self._arrays: AutomatonArrays | None = None

        @property
        def variables(self) -> list[Any]:
            # The wrapped sampler's seed state, so random samplers stay stateless in the jit.
            return self.base.variables

        @contextlib.contextmanager
        def bound(self, arrays: AutomatonArrays) -> Iterator[None]:
            """Arrays for the trace under way (the jit's own arguments)."""
            self._arrays = arrays
            try:
                yield
            finally:
                self._arrays = None

        def allowed(self, targets: Any, chars_used: Any, tokens_left: Any) -> Any:
            """[B, V] tokens that keep each row's reply finishable, given each row's
            [B, V] `targets` (next states, -1 where the automaton refuses)."""
            a = self._arrays
            ok = targets >= 0
            safe = ops.where(ok, targets, 0)
            ok = ok & (ops.take(a.min_tokens, safe) <= (tokens_left - 1)[:, None])
            chars_after = chars_used[:, None] + ops.cast(a.token_chars, "int32")[None, :]
            ok = ok & (chars_after + ops.take(a.min_chars, safe) <= a.max_chars)
            # No token satisfies the budgets (a budget smaller than the shortest reply): follow
            # the automaton alone; the parser then rejects the cut reply and repair takes it.
            fallback = targets >= 0
            return ops.where(ops.any(ok, axis=-1, keepdims=True), ok, fallback)

        def __call__(
            self,
            next: Any,
            prompt: Any,
            cache: Any = None,
            index: Any = 0,
            mask: Any = None,
            stop_token_ids: Any = None,
            hidden_states: Any = None,
            model: Any = None,
            **kwargs: Any,
        ) -> Any:
            a = self._arrays
            if a is None:
                raise RuntimeError("ConstrainedSampler runs only inside ConstrainedGenerate")
            max_length = ops.cast(ops.shape(prompt)[-1], "int32")
            index = ops.cast(index, "int32")
            mask = ops.zeros_like(prompt, dtype="bool") if mask is None else ops.cast(mask, "bool")
            cache = () if cache is None else cache
            batch = ops.shape(prompt)[0]
            # A row's reply may use positions [prompt length, prompt length + max_new_tokens).
            reply_end = ops.sum(ops.cast(mask, "int32"), axis=-1) + a.max_new_tokens
            state = ops.full((batch,), a.initial, dtype="int32")
            chars_used = ops.zeros((batch,), dtype="int32")

            def cond(prompt, cache, index, mask, state, chars_used):
                if stop_token_ids is None:
                    return ops.convert_to_tensor(True, dtype="bool")
                ended = ops.any(any_equal(prompt, stop_token_ids, ~mask), axis=-1)
                return ops.logical_not(ops.all(ended))

            def body(prompt, cache, index, mask, state, chars_used):
                logits, _, cache = next(prompt, cache, index)
                by_class = ops.take(a.class_next, state, axis=0)  # [B, C]
                targets = ops.cast(ops.take(by_class, a.token_class, axis=1), "int32")
                ok = self.allowed(targets, chars_used, reply_end - index)
                logits = ops.where(ok, ops.cast(logits, "float32"), -np.inf)
                token = ops.cast(
                    self.base.get_next_token(self.base.compute_probabilities(logits)), "int32"
                )
                reading = mask[:, index]
                token = ops.where(reading, ops.cast(prompt[:, index], "int32"), token)
                moved = ops.take_along_axis(targets, token[:, None], axis=1)[:, 0]
                state = ops.where(reading, state, moved)
                chars_used = ops.where(
                    reading,
                    chars_used,
                    chars_used + ops.cast(ops.take(a.token_chars, token), "int32"),
                )
                prompt = ops.slice_update(
                    prompt, [0, index], ops.cast(token, prompt.dtype)[:, None]
                )
                return (prompt, cache, index + 1, mask, state, chars_used)

            prompt, *_ = self.run_loop(
                cond,
                body,
                loop_vars=(prompt, cache, index, mask, state, chars_used),
                maximum_iterations=(max_length - index),
                model=model,
            )
            return prompt

    return ConstrainedSampler


def constrained_sampler(base: Any) -> Any:
    """A `ConstrainedSampler` around a keras-hub sampler (greedy, top_k, random, ...)."""
    return _sampler_class()(base)


@contextlib.contextmanager
def _sampler_swapped(causal_lm: Any, sampler: Any) -> Iterator[None]:
    """`generate_step` calls `self.sampler`: point it at ours for the length of one trace.

    Tracing runs under the model's lock, so the unconstrained function never sees the swap.
    """
    original = causal_lm.sampler
    causal_lm.sampler = sampler
    try:
        yield
    finally:
        causal_lm.sampler = original


class ConstrainedGenerate:
    """`causal_lm.make_generate_function()`'s twin, with the automaton as an argument.

    Mirrors keras-hub's JAX path (weights passed as state into one jitted function) so the
    model's own `generate_step`, cache and stop handling are reused unchanged.
    """

    def __init__(self, causal_lm: Any, automaton: TokenAutomaton, max_chars: int):
        import jax
        import jax.numpy as jnp
        import keras

        vocabulary = int(causal_lm.preprocessor.tokenizer.vocabulary_size())
        if automaton.vocabulary_size != vocabulary:
            raise ValueError(
                f"automaton covers {automaton.vocabulary_size} tokens, "
                f"the model's vocabulary has {vocabulary}"
            )
        self.automaton = automaton
        self.max_chars = max_chars
        self.sampler = constrained_sampler(causal_lm.sampler)
        self._lm = causal_lm
        self._arrays = {
            "class_next": jnp.asarray(automaton.class_next),
            "token_class": jnp.asarray(automaton.token_class),
            "min_tokens": jnp.asarray(automaton.min_tokens),
            "min_chars": jnp.asarray(automaton.min_chars),
            "token_chars": jnp.asarray(automaton.token_chars),
            "initial": jnp.asarray(automaton.initial, dtype=jnp.int32),
            "max_chars": jnp.asarray(max_chars, dtype=jnp.int32),
        }
        sampler = self.sampler

        @partial(jax.jit, static_argnames=["stop_token_ids"])
        def compiled(inputs, stop_token_ids, state, arrays):
            sampler_vars, trainable, non_trainable = state
            mapping = itertools.chain(
                zip(sampler.variables, sampler_vars, strict=True),
                zip(causal_lm.trainable_variables, trainable, strict=True),
                zip(causal_lm.non_trainable_variables, non_trainable, strict=True),
            )
            with (
                keras.StatelessScope(state_mapping=mapping) as scope,
                sampler.bound(arrays),
                _sampler_swapped(causal_lm, sampler),
            ):
                outputs = causal_lm.generate_step(inputs, stop_token_ids)
            updated = []
            for v in sampler.variables:
                new = scope.get_current_value(v)
                updated.append(new if new is not None else v)
            return outputs, updated

        self._compiled = compiled

    def __call__(self, inputs: dict[str, Any], stop_token_ids: list[int], max_new_tokens: int):
        import jax.numpy as jnp
        from keras import ops

        arrays = AutomatonArrays(
            max_new_tokens=jnp.asarray(max_new_tokens, dtype=jnp.int32), **self._arrays
        )
        state = (
            [v.value for v in self.sampler.variables],
            [v.value for v in self._lm.trainable_variables],
            [v.value for v in self._lm.non_trainable_variables],
        )
        inputs = {k: ops.convert_to_tensor(v) for k, v in inputs.items()}
        outputs, sampler_vars = self._compiled(inputs, tuple(stop_token_ids), state, arrays)
        for ref, value in zip(self.sampler.variables, sampler_vars, strict=True):
            ref.assign(value)
        return outputs
