"""The real Gemma 3 270M, converted from the registry GGUF by `make setup`, end to end.

A wrong mapping does not crash: it produces a model that loads, runs and writes nonsense. So the
checks are numbers a broken conversion cannot reach: the tokenizer agrees with the
`sentencepiece` library id for id, the per-token loss on plain English is that of a trained
model (about 2.2 nats; each known mapping trap gives 5 to 19), and greedy decoding knows a fact.
The model is loaded once for the whole session (`_LOADED` in handlers/gemma.py).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from handlers.gemma import GemmaModelHandler
from triage.options import TriageOptions
from triage.parse import CONSTRAINED_REPLY_CHARS, REPLY_SCHEMA, ParsedReply, parse_reply
from triage.pipeline import build_pipeline
from triage.prompts import load_template
from triage.sinks import WriteJsonLines

pytestmark = pytest.mark.gemma3

TRIAGE = load_template("triage")
# Plain English the model never saw in this form; a correct conversion scores ~2.23 nats/token.
PARAGRAPH = (
    "A bicycle is a simple machine with two wheels, a frame, pedals and a chain. When the rider "
    "pushes the pedals, the chain turns the back wheel and the bicycle moves forward. Bicycles "
    "became popular in the late nineteenth century because they were cheaper than horses and "
    "easier to look after. Today many people ride bicycles to work, to school or just for fun, "
    "and in some cities there are special lanes that keep cyclists safe from cars."
)
SAMPLE = [
    "Hello! Where is my order #A-1042? It was due yesterday.",
    "배달이 한 시간이나 늦었어요. 환불해 주세요.",
    "注文した商品がまだ届きません。確認していただけますか？",
    "Great service 👍🍕🚀 thanks!!!",
    '{"order_id": 42, "items": ["pizza", "cola"]}\n    return x**2  # code',
    "<start_of_turn>user\nmy card was charged twice<end_of_turn>\n<start_of_turn>model\n",
    "  two  spaces\tand\ttabs\n\n\nand newlines",
    "Ünïcödé façade naïve — “quotes” … ½ € ₩ ¥",
]


@pytest.fixture(scope="module")
def generator(gemma3_preset):
    handler = GemmaModelHandler(
        gemma3_preset,
        max_new_tokens=TRIAGE.max_reply_tokens,
        reply_schema=REPLY_SCHEMA,
        max_reply_chars=CONSTRAINED_REPLY_CHARS,
        warm_up=False,
    )
    return handler.load_model()


def test_tokenizer_matches_the_sentencepiece_library(generator):
    import sentencepiece as spm

    tokenizer = generator.causal_lm.preprocessor.tokenizer
    reference = spm.SentencePieceProcessor(model_proto=tokenizer.proto)
    assert tokenizer.vocabulary_size() == reference.get_piece_size() == 262144
    for text in SAMPLE:
        assert [int(i) for i in tokenizer.tokenize(text)] == reference.encode(text), text
    # Gemma's own ids: the turn markers are single tokens, as in Google's tokenizer.
    ids = [int(i) for i in tokenizer.tokenize("<start_of_turn>user\n")]
    assert ids[0] == 105 and tokenizer.token_to_id("<end_of_turn>") == 106
    assert [tokenizer.token_to_id(t) for t in ("<pad>", "<eos>", "<bos>")] == [0, 1, 2]
    assert set(generator.stop_token_ids) == {1, 106}


def test_loss_on_plain_english_is_a_trained_models(generator):
    import jax

    lm = generator.causal_lm
    ids = [2] + [int(i) for i in lm.preprocessor.tokenizer.tokenize(PARAGRAPH)]
    x = np.array([ids], dtype="int32")
    hidden = lm.backbone({"token_ids": x, "padding_mask": np.ones_like(x)})
    logits = np.asarray(lm.backbone.token_embedding(hidden, reverse=True)[0, :-1], "float32")
    nll = -jax.nn.log_softmax(logits, axis=-1)[np.arange(len(ids) - 1), ids[1:]]
    loss = float(np.mean(nll))
    assert len(ids) > 80
    assert loss <= 2.6, f"{loss:.2f} nats/token: the conversion is broken"


def test_greedy_continuation_is_stable_and_knows_a_fact(generator):
    prompt = "The capital of France is Paris. The capital of Germany is"
    first = generator.causal_lm.generate(prompt, max_length=24, strip_prompt=True)
    again = generator.causal_lm.generate(prompt, max_length=24, strip_prompt=True)
    assert first == again
    assert first.strip().startswith("Berlin"), first


def test_constrained_triage_replies_parse_at_full_vocabulary(generator):
    automaton = generator.constrained.automaton
    assert automaton.vocabulary_size == 262144
    assert automaton.nbytes < 2_000_000  # token classes, not a 34 MB dense table
    chats = [
        "Customer: My parcel never arrived and nobody answers my emails. Useless.",
        "Customer: 비밀번호를 바꾸고 싶어요.\nAgent: 설정 > 보안에서 바꿀 수 있어요.\n"
        "Customer: 감사합니다!",
    ]
    prompts = [TRIAGE.render(chat, user_id="u1").text for chat in chats]
    results = generator.generate(prompts, TRIAGE.max_reply_tokens)
    for text, _, n_new in results:
        assert isinstance(parse_reply(text), ParsedReply), text
        assert 0 < n_new <= TRIAGE.max_reply_tokens


def test_pipeline_runs_the_real_model_every_chat_in_one_place(generator, gemma3_preset, tmp_path):
    payloads = [
        b'{"id": "g1", "user_id": "u1", "chat_message": "Customer: The app charged me twice '
        b'for one ride and support is not answering. I am furious."}',
        b'{"id": "g2", "user_id": "u2", "chat_message": "Customer: Thanks, the new router '
        b'works perfectly now!"}',
        b'{"id": "g3", "user_id": "u3", "chat_message": 7}',
    ]
    options = TriageOptions(
        [
            f"--model_preset={gemma3_preset}",
            "--max_batch_size=2",
            "--max_new_tokens=48",
            "--no_warm_up",
        ]
    )
    pipeline = TestPipeline(options=options)
    outputs = build_pipeline(
        pipeline, beam.Create(payloads), WriteJsonLines(str(tmp_path)), options
    )
    ids = (
        outputs.summaries | "S" >> beam.Map(lambda s: s.chat_id),
        outputs.drafts | "D" >> beam.Map(lambda d: d.chat_id),
        outputs.dead_letters | "DL" >> beam.Map(lambda d: d.chat_id),
    ) | beam.Flatten()
    assert_that(ids, equal_to(["g1", "g2", "g3"]))
    invalid = outputs.dead_letters | beam.Filter(lambda d: d.stage == "validate")
    assert_that(invalid | beam.Map(lambda d: d.chat_id), equal_to(["g3"]), label="invalid")
    pipeline.run().wait_until_finish()
