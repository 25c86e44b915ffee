"""Build a tiny, randomly initialised Gemma 2-architecture preset, fully offline.

Real Gemma weights cannot be downloaded on build machines, yet tests must run the real keras-hub
Gemma code (tokenizer, backbone, cache, sampler) end to end. This preset has the real
architecture flags and a real SentencePiece tokenizer with Gemma's special and turn tokens, just
very few, random weights: its replies are noise, which is exactly what the error path needs.

Usage::

    python -m handlers.tiny_preset models/tiny-gemma2 --corpus prompts/*.toml
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["build_tiny_preset"]

# Gemma's chat turn markers; real Gemma vocabularies hold each as one token.
TURN_TOKENS = ("<start_of_turn>", "<end_of_turn>")

_SAMPLE_TEXT = (
    "The pizza arrived cold and an hour late. I want a refund!",
    "Thank you, the delivery was fast and the burger was great.",
    "Can I change the address of my order? Sure, done.",
    "My app keeps crashing when I try to use loyalty points.",
    "Does the pasta contain nuts? I have an allergy.",
    '{"sentiment": -1, "summary": "Customer is upset about a late order."}',
    '{"sentiment": 1, "summary": "Customer praised the quick delivery."}',
    '{"sentiment": 0, "summary": "Customer asked about opening hours."}',
    "피자가 너무 늦게 도착했어요. 환불해 주세요. 배달이 빨라서 좋았습니다. 감사합니다.",
    "주문이 잘못 왔어요. 직원이 불친절했습니다. 포인트는 어떻게 적립하나요?",
    "ピザが冷めていました。返金してください。配達が早くて助かりました。ありがとう。",
    "注文と違う商品が届きました。アプリが動きません。ポイントはいつ付きますか？",
    "We are sorry for the trouble. A support agent will contact you shortly.",
    "0123456789 !?.,:;'\"()[]{}<>/\\@#$%^&*-_=+~`|",
)


def _corpus(extra: Iterable[str]) -> Iterator[str]:
    for _ in range(20):
        yield from _SAMPLE_TEXT
    yield from extra


def _train_tokenizer(lines: Iterable[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        pad_id=0,
        bos_id=1,
        eos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        bos_piece="<bos>",
        eos_piece="<eos>",
        unk_piece="<unk>",
        user_defined_symbols=list(TURN_TOKENS),
        # As in Gemma's own tokenizer: no dummy "▁" prefix, whitespace kept as written.
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        minloglevel=2,
    )
    return buffer.getvalue()


def build_tiny_preset(
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 1024,
    num_layers: int = 2,
    hidden_dim: int = 64,
    seed: int = 0,
    corpus: Iterable[str] = (),
) -> Path:
    """Write a tiny Gemma 2-architecture preset to `out_dir` and return its path.

    Deterministic under `seed`. `CausalLM.from_preset(out_dir)` loads it back as a GemmaCausalLM.
    """
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import keras_hub

    keras.utils.set_random_seed(seed)
    proto = _train_tokenizer(_corpus(corpus), vocab_size)
    tokenizer = keras_hub.models.GemmaTokenizer(proto=proto)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=num_layers,
        num_query_heads=max(2, hidden_dim // 32),
        num_key_value_heads=1,
        hidden_dim=hidden_dim,
        intermediate_dim=hidden_dim * 2,
        head_dim=32,
        # Gemma 2 architecture flags, as in the real gemma2 presets.
        query_head_dim_normalize=True,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        final_logit_soft_cap=30.0,
        attention_logit_soft_cap=50.0,
        use_sliding_window_attention=True,
        sliding_window_size=512,
    )
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer=tokenizer)
    model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_to_preset(str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab_size", type=int, default=1024)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--hidden_dim", type=int, default=64)
    parser.add_argument(
        "--corpus", nargs="*", default=[], help="text files whose lines also train the tokenizer"
    )
    args = parser.parse_args(argv)
    lines = [
        line for path in args.corpus for line in Path(path).read_text("utf-8").splitlines() if line
    ]
    path = build_tiny_preset(
        args.out_dir,
        vocab_size=args.vocab_size,
        num_layers=args.num_layers,
        hidden_dim=args.hidden_dim,
        seed=args.seed,
        corpus=lines,
    )
    print(f"tiny Gemma 2 preset written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
