"""The real keras-hub Gemma code on the tiny random preset: batching, new-token bounds, stops."""

from __future__ import annotations

import numpy as np
import pytest
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult

from handlers.gemma import GemmaGenerator, GemmaModelHandler, load_token_counter
from triage.prompts import load_template

pytestmark = pytest.mark.model

PROMPTS = [
    load_template("triage").render("The pizza was cold.", user_id="7").text,
    load_template("triage").render("피자가 늦게 왔어요. " * 20, user_id="8").text,
    "short",
]


@pytest.fixture(scope="module")
def handler(tiny_preset):
    return GemmaModelHandler(tiny_preset, max_new_tokens=12, max_batch_size=4, warm_up=False)


@pytest.fixture(scope="module")
def model(handler):
    return handler.load_model()


def test_loads_any_preset_as_a_gemma_causal_lm(model):
    assert type(model.causal_lm).__name__ == "GemmaCausalLM"
    # <eos> and the instruct turn end are both stop tokens, and they are different tokens.
    tokenizer = model.causal_lm.preprocessor.tokenizer
    assert set(model.stop_token_ids) == {
        tokenizer.token_to_id("<eos>"),
        tokenizer.token_to_id("<end_of_turn>"),
    }
    assert len(model.stop_token_ids) == 2


def test_batch_returns_only_completions_bounded_in_new_tokens(handler, model):
    results = list(handler.run_inference(PROMPTS, model))
    assert [r.example for r in results] == PROMPTS
    assert all(isinstance(r, PredictionResult) for r in results)
    assert all(r.model_id == handler.model_id for r in results)
    for prompt, (_text, n_prompt, n_new) in zip(
        PROMPTS, model.generate(PROMPTS, max_new_tokens=12), strict=True
    ):
        # Rows of different prompt lengths all get at most 12 new tokens.
        assert 0 <= n_new <= 12
        assert n_prompt == len(model.causal_lm.preprocessor.tokenizer.tokenize(prompt)) + 1
    for r in results:
        assert "<start_of_turn>" not in r.inference  # the prompt is not echoed back
        assert len(r.inference) < 12 * 20


def test_new_token_budget_is_respected_per_row(model):
    one = model.generate(PROMPTS, max_new_tokens=1)
    assert all(n_new <= 1 for _, _, n_new in one)
    # In a batch, a short prompt could run on while the longest one finishes: it must not.
    mixed = model.generate(["short", PROMPTS[1]], max_new_tokens=5)
    assert all(n_new <= 5 for _, _, n_new in mixed)


def test_greedy_decoding_is_deterministic(model):
    assert model.generate(PROMPTS, 8) == model.generate(PROMPTS, 8)


def test_generation_stops_at_a_stop_token(model):
    """Greedy decoding is deterministic, so make the first token it emits a stop token: the
    completion must then be empty, where without it the row runs on."""
    causal_lm = model.causal_lm
    tokenizer = causal_lm.preprocessor.tokenizer
    probe = GemmaGenerator(causal_lm, ("<eos>",), "probe")
    _, _, n_new = probe.generate([PROMPTS[0]], 8)[0]
    assert n_new > 0, "the tiny model stopped at once; pick another prompt"
    # The first token greedy decoding emits, read from the model's own output ids.
    inputs = causal_lm.preprocessor.generate_preprocess([PROMPTS[0]], sequence_length=1024)
    outputs = causal_lm.make_generate_function()(inputs, stop_token_ids=probe.stop_token_ids)
    start = int(np.asarray(inputs["padding_mask"])[0].sum())
    first = int(np.asarray(outputs["token_ids"])[0, start])
    stop_piece = tokenizer.id_to_token(first)
    assert tokenizer.token_to_id(stop_piece) == first
    stopping = GemmaGenerator(causal_lm, ("<eos>", stop_piece), "probe")
    assert stopping.generate([PROMPTS[0]], 8)[0][1:] == (probe.generate([PROMPTS[0]], 8)[0][1], 0)
    assert stopping.generate([PROMPTS[0]], 8)[0][0] == ""


def test_keyed_handler_passes_keys_through(handler, model):
    keyed = KeyedModelHandler(handler)
    out = list(keyed.run_inference([("a", "short"), ("b", PROMPTS[0])], model))
    assert [k for k, _ in out] == ["a", "b"]
    assert [p.example for _, p in out] == ["short", PROMPTS[0]]


def test_token_counter_uses_the_preset_tokenizer(tiny_preset, model):
    count = load_token_counter(tiny_preset)
    tokenizer = model.causal_lm.preprocessor.tokenizer
    assert count("<start_of_turn>user") == len(tokenizer.tokenize("<start_of_turn>user")) + 1
    # The turn markers are single tokens, as in real Gemma vocabularies.
    assert count("<end_of_turn>") == 2


def test_rejects_a_zero_token_budget(tiny_preset):
    with pytest.raises(ValueError):
        GemmaModelHandler(tiny_preset, max_new_tokens=0)


def test_exposes_beam_batching_and_sharing_options(tiny_preset):
    h = GemmaModelHandler(
        tiny_preset, min_batch_size=2, max_batch_size=16, large_model=True, model_copies=1
    )
    assert h.batch_elements_kwargs() == {"min_batch_size": 2, "max_batch_size": 16}
    assert h.share_model_across_processes()
    assert h.model_copies() == 1
    assert h._env_vars["KERAS_BACKEND"] == "jax"


def test_padding_rows_never_reach_results(tiny_preset):
    """Three prompts run as a batch of four (the bucket): three results, in order."""
    handler = GemmaModelHandler(
        tiny_preset, max_new_tokens=6, max_batch_size=4, max_batch_tokens=10**6, warm_up=False
    )
    model = handler.load_model()
    assert model.batch_buckets == (1, 2, 4)
    calls: list[int] = []
    generate_padded = model._generate_padded

    def spy(prompts, *args):
        calls.append(len(prompts))
        return generate_padded(prompts, *args)

    model._generate_padded = spy
    results = list(handler.run_inference(PROMPTS, model))
    assert calls == [4]  # padded to the bucket ...
    assert [r.example for r in results] == PROMPTS  # ... and only the real rows come back
    # Larger than the largest bucket: split, still one result per prompt, in order.
    many = [f"prompt {i}" for i in range(9)]
    assert [r.example for r in handler.run_inference(many, model)] == many
    assert calls[1:] == [4, 4, 1]


def test_token_cap_splits_batches_instead_of_growing_them(tiny_preset):
    handler = GemmaModelHandler(
        tiny_preset, max_new_tokens=4, max_batch_size=4, max_batch_tokens=300, warm_up=False
    )
    model = handler.load_model()
    assert all(b * length <= 300 or b == 1 for b, length in model.shapes(4))
    prompts = ["word " * 60, "word " * 70, "word " * 80]
    assert [r.example for r in handler.run_inference(prompts, model)] == prompts


def test_compilations_stay_bounded_over_a_long_stream(tiny_preset):
    """After warm-up, a stream of batches of every size and many prompt lengths compiles
    nothing new: the compiled programs are bounded by the bucket count, not the traffic."""
    import random

    from handlers.compilations import CompilationCounter

    handler = GemmaModelHandler(
        tiny_preset,
        max_new_tokens=4,
        max_batch_size=4,
        length_buckets=(64, 128),
        warm_up=True,
    )
    counter = CompilationCounter()
    model = handler.load_model()
    after_warm_up = counter.count
    assert model.shapes(4) == [(b, p + 4) for b in (1, 2, 4) for p in (64, 128)]
    rng = random.Random(7)
    for _ in range(30):
        size = rng.randint(1, 4)
        prompts = ["word " * rng.randint(1, 30) for _ in range(size)]
        assert len(list(handler.run_inference(prompts, model))) == size
    assert counter.count == after_warm_up  # nothing compiled after warm-up
