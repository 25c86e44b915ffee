"""What `triage finetune` trains: the adapted top of the backbone, computed only where it must be.

A LoRA run on this project's 2-core CPU spent most of each step on work that changes nothing:
- Keras applies LoRA by adding `A @ B` to the frozen kernel, so the backward pass computes the
  full kernel gradient of every adapted projection; `x @ W + (x @ A) @ B` needs only the two
  small factor gradients (the same function, ~10% of a step).
- The loss needs logits only at answer positions, and only over the tokens the training set
  uses (17,171 of 262,144 for ours): the full softmax over the vocabulary took more than half
  of a step. The committed adapter was trained on a GPU with the same restriction.
- The blocks below the adapted ones are frozen, so their output for a batch is the same in
  every epoch: it is computed once per chat and kept (about 1 GB for our data).
Together they cut a step from ~11 s to ~4 s without changing what is learned.

The compact vocabulary has a cost: nothing holds down the other ~245,000 logits, and as the
adapters trained some of them rose (a CPU build's Japanese and Korean drafts ran on into code
identifiers and Cyrillic instead of stopping). The full cross-entropy is the compact one plus
the leak, log(Z_all / Z_compact): the probability the model puts outside the data's tokens.
Computing it exactly reads the whole 262,144 x 640 embedding twice a step (+7%), so the leak
is taken at `GUARD_SLOTS` answer positions per chat (always the one that must predict
`<end_of_turn>`), with the outside sum estimated from `GUARD_NEGATIVES` tokens drawn for each
batch and scaled by outside / drawn (+0.5%). The leak is ~0 while nothing drifts, so it adds
no weight to any answer token: it only pushes the outside back down.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "GUARD_NEGATIVES",
    "GUARD_SLOTS",
    "adapted_head",
    "compact_vocabulary",
    "fast_lora",
    "FrozenPrefix",
    "guard_draw",
    "leak_loss",
]

GUARD_SLOTS = 4
GUARD_NEGATIVES = 16_384


def _adapter(x: Any, a: Any, b: Any) -> Any:
    """`(x @ a).reshape(-1, rank) @ b`: the LoRA branch on flattened operands, with its
    gradients written so that XLA's CPU backend transposes only the thin factors. Autodiff's
    own `x.T @ g` and `low.T @ g` made it copy every activation transposed first: a quarter
    of a step."""
    import jax

    rank = b.shape[0]

    @jax.custom_vjp
    def branch(x: Any, a: Any, b: Any) -> Any:
        return (x @ a).reshape(-1, rank) @ b

    def forward(x: Any, a: Any, b: Any) -> Any:
        low = (x @ a).reshape(-1, rank)
        return low @ b, (x, a, b, low)

    def backward(saved: Any, g: Any) -> Any:
        x, a, b, low = saved
        g_low = (g @ b.T).reshape(x.shape[0], -1)
        return g_low @ a.T, (g_low.T @ x).T, low.T @ g

    branch.defvjp(forward, backward)
    return branch(x, a, b)


def _lora_call(self: Any, inputs: Any, training: Any = None) -> Any:
    """`EinsumDense.call` with the adapter applied to the input, not merged into the kernel.

    For the Gemma projections `fast_lora` accepts: the kernel's last axis is the output's,
    and the axes the input shares with the kernel are its last ones, in the kernel's order."""
    from keras import ops

    x = ops.einsum(self.equation, inputs, self._kernel)
    lhs, kernel = self.equation.split("->")[0].split(",")
    shared = [c for c in kernel[:-1] if c in lhs]  # contracted with the input
    free = [c for c in kernel[:-1] if c not in lhs]  # e.g. the heads of a query projection
    a = ops.transpose(
        self.lora_kernel_a, [kernel.index(c) for c in shared + free] + [len(kernel) - 1]
    )
    contracted = math.prod(a.shape[: len(shared)])
    adapted = _adapter(
        ops.reshape(inputs, (-1, contracted)),
        ops.reshape(a, (contracted, -1)),
        ops.convert_to_tensor(self.lora_kernel_b),
    )
    x = x + ops.reshape(adapted, x.shape) * (self.lora_alpha / self.lora_rank)
    if self.bias is not None:
        x = ops.add(x, self.bias)
    if self.activation is not None:
        x = self.activation(x)
    return x


def fast_lora(backbone: Any) -> int:
    """Switch every LoRA-enabled `EinsumDense` of `backbone` to `_lora_call`; returns how many.

    Only the training computation changes: the saved kernels are still `W + A @ B`."""
    import keras

    switched = 0
    for layer in backbone._flatten_layers(include_self=False):
        if not (isinstance(layer, keras.layers.EinsumDense) and layer.lora_enabled):
            continue
        inputs, output = layer.equation.split("->")
        lhs, kernel = inputs.split(",")
        shared = "".join(c for c in kernel[:-1] if c in lhs)
        if (
            kernel[-1] != output[-1]
            or not lhs.endswith(shared)
            or getattr(layer, "quantization_mode", None)
        ):
            continue  # the merged form stays correct where the factored one would not be
        layer.call = types.MethodType(_lora_call, layer)
        switched += 1
    return switched


def compact_vocabulary(rows: Sequence[Sequence[int]], size: int) -> tuple[Any, Any]:
    """The token ids the rows use (sorted, with 0) and a map from a token id to its index."""
    used = np.unique(np.concatenate([np.asarray(r, dtype="int64") for r in rows] + [[0]]))
    index = np.zeros(size, dtype="int32")
    index[used] = np.arange(len(used), dtype="int32")
    return used.astype("int32"), index


class FrozenPrefix:
    """The embedding and the frozen blocks below `start`, run once per batch before training.

    Computed up front, not while `fit` runs: Keras detaches the trained model's variables from
    their layers during an epoch, and the embedding is shared with the head."""

    def __init__(self, backbone: Any, start: int):
        import keras
        from keras import ops

        scale = math.sqrt(backbone.hidden_dim)

        class Prefix(keras.Model):
            def __init__(self) -> None:
                super().__init__()
                self.embedding = backbone.token_embedding
                self.blocks = list(backbone.transformer_layers[:start])

            def call(self, inputs: dict[str, Any]) -> Any:
                x = self.embedding(inputs["token_ids"])
                x = x * ops.cast(scale, x.dtype)
                for block in self.blocks:
                    x = block(x, padding_mask=inputs["padding_mask"])
                return x

        self.start = start
        self._model = Prefix()
        self._cache: dict[Any, Any] = {}

    def compute(self, batches: Sequence[Sequence[Any]], batch: Any, progress: Any = None) -> None:
        """Run the prefix on `batch(i)`'s token ids for every i, keeping each row's result by
        its key in `batches[i]`: rows of one width can then be dealt into other batches."""
        for i, keys in enumerate(batches):
            token_ids, padding_mask = batch(i)
            inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
            hidden = np.asarray(self._model.predict_on_batch(inputs))
            for row, key in enumerate(keys):
                self._cache[key] = hidden[row]
            if progress:
                progress(i + 1, len(batches))

    def __call__(self, keys: Sequence[Any]) -> Any:
        return np.stack([self._cache[key] for key in keys])


def guard_draw(
    rng: Any, targets: Sequence[int], outside: Any, negatives: int = GUARD_NEGATIVES
) -> tuple[Any, Any]:
    """Guard slots for rows with `targets` answer slots each (the last slot, which predicts
    `<end_of_turn>`, then random ones; rows with none get slot 0) and `negatives` token ids
    drawn without replacement from `outside`."""
    slots = np.zeros((len(targets), GUARD_SLOTS), dtype="int32")
    for row, n in enumerate(targets):
        if n:
            slots[row, 0] = n - 1
            slots[row, 1:] = rng.integers(0, n, GUARD_SLOTS - 1)
    drawn = rng.choice(outside, size=min(negatives, len(outside)), replace=False)
    return slots, np.asarray(drawn, dtype="int32")


def leak_loss(y_true: Any, y_pred: Any) -> Any:
    """The guard output is already the loss term (the leak); Keras still hands a target."""
    del y_true
    return y_pred


def adapted_head(backbone: Any, start: int, vocabulary: Any) -> Any:
    """Blocks `start`.., the final norm and the tied output projection restricted to
    `vocabulary`, at the answer positions only: the model `finetune` fits.

    With `guard_slots` and `negatives` in its inputs it returns `{"answer", "guard"}`: the
    guard is the estimated leak at those slots (see the module docstring); `negatives` has one
    row per chat, all equal, as Keras splits inputs by their first axis."""
    import keras
    from keras import ops

    cap = getattr(backbone, "final_logit_soft_cap", None)
    vocab = np.asarray(vocabulary, dtype="int32")
    outside = backbone.vocabulary_size - len(vocab)

    def capped(logits: Any) -> Any:
        return ops.tanh(logits / cap) * cap if cap else logits

    class Head(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = list(backbone.transformer_layers[start:])
            self.norm = backbone.layer_norm
            self.embedding = backbone.token_embedding

        def call(self, inputs: dict[str, Any]) -> Any:
            x = inputs["hidden"]
            for block in self.blocks:
                x = block(x, padding_mask=inputs["padding_mask"])
            x = self.norm(x)
            x = ops.take_along_axis(x, ops.expand_dims(inputs["answer_positions"], -1), axis=1)
            kernel = ops.take(self.embedding.embeddings, vocab, axis=0)
            logits = capped(ops.matmul(x, ops.transpose(kernel)))
            if "guard_slots" not in inputs:
                return logits
            slots = ops.expand_dims(inputs["guard_slots"], -1)
            drawn = inputs["negatives"][0]
            rows = ops.take(self.embedding.embeddings, drawn, axis=0)
            at_slots = ops.take_along_axis(x, slots, axis=1)
            lift = math.log(outside / ops.shape(drawn)[0])
            beyond = capped(ops.matmul(at_slots, ops.transpose(rows))) + lift
            inside = ops.logsumexp(ops.take_along_axis(logits, slots, axis=1), axis=-1)
            whole = ops.logaddexp(inside, ops.logsumexp(beyond, axis=-1))
            return {"answer": logits, "guard": whole - inside}

    return Head()
