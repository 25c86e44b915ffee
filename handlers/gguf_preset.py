"""Convert a Gemma 3 GGUF file (llama.cpp's format) into a keras-hub preset directory.

Real Gemma weights cannot be downloaded on build machines, but a registry package ships Google's
pretrained Gemma 3 270M as a GGUF file. This module reads it with ggml's own `gguf` package
(dequantization included), maps llama.cpp's tensor layout onto keras-hub's `Gemma3Backbone`,
rebuilds the SentencePiece tokenizer from the vocabulary stored in the file, and saves a preset
that `keras_hub.models.CausalLM.from_preset(DIR)` loads like any Kaggle preset.

Three layout facts matter (each was checked by its effect on the loss of real text):
llama.cpp stores every Gemma norm weight as `1 + w` while keras-hub's RMSNorm adds the 1 itself;
Gemma's Q/K rows are not permuted as llama-style models' are; arrays come out in Hugging Face
layout, so the per-head reshapes are those of keras-hub's own Hugging Face converter.

Usage::

    triage import-gguf models/gemma-3-270m-q4_k_m.gguf --out models/gemma3-270m
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GGUFImportError", "GemmaGGUF", "import_gguf", "main", "read_gguf"]

LOG = logging.getLogger(__name__)

# keras-hub's Gemma3Backbone fixes these (gemma3_backbone.py): five sliding-window layers, then
# one global layer; RoPE base 10,000 on the local layers and 1,000,000 on the global ones.
_SLIDING_PATTERN = 6
_LOCAL_ROPE_BASE = 10_000.0
_GLOBAL_ROPE_BASE = 1_000_000.0
# SentencePiece piece types (sentencepiece_model.proto); llama.cpp uses the same numbers.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_SPACE = "\u2581"


class GGUFImportError(Exception):
    """A file that cannot become a keras-hub preset; the message says why, for a person."""


@dataclass(frozen=True)
class GemmaGGUF:
    """What the converter needs from a GGUF file: the backbone config, the tokenizer proto,
    and a way to read each tensor (dequantized, float32, Hugging Face layout)."""

    path: Path
    config: dict[str, Any]
    proto: bytes
    tensor: Callable[[str], np.ndarray]


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _supported_quant_types() -> set[str]:
    from gguf import GGMLQuantizationType
    from gguf.quants import _type_traits

    plain = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16}
    # Quant types whose dequantization the gguf package implements.
    return {t.name for t in plain | set(_type_traits)}


def _open(path: Path) -> Any:
    from gguf import GGUFReader

    if not path.is_file():
        raise GGUFImportError(f"{path}: no such file")
    try:
        reader = GGUFReader(path)
    except (ValueError, KeyError, IndexError, OSError) as err:
        raise GGUFImportError(
            f"{path}: not a readable GGUF file (truncated or damaged: {err})"
        ) from err
    size = path.stat().st_size
    for tensor in reader.tensors:
        end = int(tensor.data_offset) + int(tensor.n_bytes)
        if end > size:
            raise GGUFImportError(
                f"{path}: truncated: tensor {tensor.name} ends at byte {end}, "
                f"the file has {size} bytes"
            )
    return reader


def _backbone_config(reader: Any, vocab_size: int, names: set[str]) -> dict[str, Any]:
    arch = _field(reader, "general.architecture")
    if arch != "gemma3":
        raise GGUFImportError(
            f"architecture {arch!r} is not supported: this converter reads Gemma 3 GGUFs "
            "(general.architecture = 'gemma3')"
        )

    def need(key: str) -> Any:
        value = _field(reader, f"gemma3.{key}")
        if value is None:
            raise GGUFImportError(f"missing hyperparameter gemma3.{key}")
        return value

    key_length = int(need("attention.key_length"))
    value_length = int(_field(reader, "gemma3.attention.value_length", key_length))
    if value_length != key_length:
        raise GGUFImportError(
            f"key length {key_length} != value length {value_length}: keras-hub's Gemma 3 "
            "attention uses one head_dim for both"
        )
    checks = {
        "rope.freq_base": (_GLOBAL_ROPE_BASE, "global RoPE base"),
        "rope.freq_base_swa": (_LOCAL_ROPE_BASE, "sliding-window RoPE base"),
        "attention.sliding_window_pattern": (_SLIDING_PATTERN, "sliding-window layer pattern"),
    }
    for key, (expected, what) in checks.items():
        value = _field(reader, f"gemma3.{key}")
        if value is not None and not np.isclose(float(value), expected):
            raise GGUFImportError(
                f"gemma3.{key} = {value}: keras-hub's Gemma3Backbone fixes the {what} at "
                f"{expected:g} and cannot represent another value"
            )
    scaling = _field(reader, "gemma3.rope.scaling.type", "none")
    if scaling not in ("none", "linear"):
        raise GGUFImportError(f"RoPE scaling {scaling!r}: keras-hub supports linear scaling only")
    if "output.weight" in names:
        raise GGUFImportError(
            "the file has an untied output projection (output.weight): keras-hub's Gemma 3 "
            "ties it to the token embedding"
        )
    layers = int(need("block_count"))
    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    window = _field(reader, "gemma3.attention.sliding_window")
    soft_cap = _field(reader, "gemma3.final_logit_softcapping")
    attn_cap = _field(reader, "gemma3.attn_logit_softcapping")
    return {
        "vocabulary_size": vocab_size,
        "image_size": None,
        "num_layers": layers,
        "num_query_heads": heads,
        "num_key_value_heads": int(need("attention.head_count_kv")),
        "hidden_dim": hidden,
        "intermediate_dim": int(need("feed_forward_length")),
        "head_dim": key_length,
        # llama.cpp scales queries by 1/sqrt(head_dim), except the 27B (62 layers), which uses
        # hidden/heads: keras-hub's query_head_dim_normalize=False.
        "query_head_dim_normalize": layers != 62,
        "use_query_key_norm": True,
        "use_post_ffw_norm": True,
        "use_post_attention_norm": True,
        "attention_logit_soft_cap": float(attn_cap) if attn_cap else None,
        "final_logit_soft_cap": float(soft_cap) if soft_cap else None,
        "use_sliding_window_attention": window is not None,
        "sliding_window_size": int(window or 4096),
        "local_rope_scaling_factor": 1.0,
        "global_rope_scaling_factor": float(_field(reader, "gemma3.rope.scaling.factor", 1.0)),
        "layer_norm_epsilon": float(
            _field(reader, "gemma3.attention.layer_norm_rms_epsilon", 1e-6)
        ),
    }


@contextlib.contextmanager
def _protobuf_version_check_relaxed() -> Iterator[None]:
    """sentencepiece's generated `sentencepiece_model_pb2` asks for protobuf 7, TensorFlow pins
    protobuf 6: the message is unchanged between them, only the generated code's check differs."""
    from google.protobuf import runtime_version

    original = runtime_version.ValidateProtobufRuntimeVersion
    runtime_version.ValidateProtobufRuntimeVersion = lambda *args, **kwargs: None
    try:
        yield
    finally:
        runtime_version.ValidateProtobufRuntimeVersion = original


def _tokenizer_proto(reader: Any) -> tuple[bytes, int]:
    """A SentencePiece `ModelProto` rebuilt from the vocabulary stored in the GGUF file."""
    if _field(reader, "tokenizer.ggml.model") != "llama":
        raise GGUFImportError(
            f"tokenizer model {_field(reader, 'tokenizer.ggml.model')!r}: expected a "
            "SentencePiece vocabulary ('llama')"
        )
    pieces = _field(reader, "tokenizer.ggml.tokens")
    scores = _field(reader, "tokenizer.ggml.scores")
    types = _field(reader, "tokenizer.ggml.token_type")
    if not pieces or len(pieces) != len(scores) or len(pieces) != len(types):
        raise GGUFImportError("the tokenizer vocabulary is missing or inconsistent")
    ids = {
        name: int(_field(reader, f"tokenizer.ggml.{name}_token_id", default))
        for name, default in (("padding", 0), ("eos", 1), ("bos", 2), ("unknown", 3))
    }
    with _protobuf_version_check_relaxed():
        from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    keep_control = {ids["padding"], ids["eos"], ids["bos"]}
    for i, (piece, score, kind) in enumerate(zip(pieces, scores, types, strict=True)):
        kind = int(kind)
        if i == ids["unknown"]:
            # llama.cpp stores <unk> as a control token; SentencePiece needs one unknown piece.
            kind = _UNKNOWN
        elif kind == _CONTROL and i not in keep_control:
            # Turn markers, <mask>, <unusedN>: user-defined, so prompt text that spells them
            # becomes the one token (as in Google's own tokenizer).
            kind = _USER_DEFINED
        if kind == _USER_DEFINED and piece.strip(" ") == "" and piece:
            # llama.cpp wrote the whitespace-run pieces with spaces; SentencePiece escapes
            # spaces to U+2581 before matching, so the pieces must say U+2581.
            piece = piece.replace(" ", _SPACE)
        proto.pieces.add(piece=piece, score=float(score), type=kind)
    trainer = proto.trainer_spec
    trainer.model_type = model_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.unk_id, trainer.bos_id = ids["unknown"], ids["bos"]
    trainer.eos_id, trainer.pad_id = ids["eos"], ids["padding"]
    trainer.unk_piece, trainer.bos_piece = pieces[ids["unknown"]], pieces[ids["bos"]]
    trainer.eos_piece, trainer.pad_piece = pieces[ids["eos"]], pieces[ids["padding"]]
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix", False))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString(), len(pieces)


def read_gguf(path: str | os.PathLike[str]) -> GemmaGGUF:
    """Open and check a Gemma 3 GGUF file; tensors are dequantized only when asked for."""
    from gguf.quants import dequantize

    path = Path(path)
    reader = _open(path)
    tensors = {t.name: t for t in reader.tensors}
    supported = _supported_quant_types()
    odd = sorted({t.tensor_type.name for t in tensors.values()} - supported)
    if odd:
        raise GGUFImportError(
            f"unsupported quantization type(s) {', '.join(odd)}; the gguf package dequantizes "
            f"{', '.join(sorted(supported))}"
        )
    proto, vocab_size = _tokenizer_proto(reader)
    config = _backbone_config(reader, vocab_size, set(tensors))
    embedding = tensors.get("token_embd.weight")
    if embedding is None or int(embedding.n_elements) != vocab_size * config["hidden_dim"]:
        raise GGUFImportError(
            "token_embd.weight is missing or does not match the vocabulary and hidden size"
        )

    def tensor(name: str) -> np.ndarray:
        t = tensors.get(name)
        if t is None:
            raise GGUFImportError(f"tensor {name} is missing")
        data = dequantize(t.data, t.tensor_type)
        # GGUF lists shapes innermost first; numpy's order is the reverse (Hugging Face layout).
        return np.asarray(data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])

    return GemmaGGUF(
        path=path,
        config=config,
        proto=proto,
        tensor=tensor,
    )


def _norm(values: np.ndarray) -> np.ndarray:
    """llama.cpp stores Gemma norm scales as 1 + w; keras-hub's RMSNorm adds the 1 itself."""
    return values - 1.0


def _heads_in(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """q/k/v projections: HF [heads*head_dim, hidden] -> keras [heads, hidden, head_dim]."""
    heads, hidden, head_dim = shape
    return values.reshape(heads, head_dim, hidden).transpose(0, 2, 1)


def _heads_out(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Output projection: HF [hidden, heads*head_dim] -> keras [heads, head_dim, hidden]."""
    heads, head_dim, hidden = shape
    return values.reshape(hidden, heads, head_dim).transpose(1, 2, 0)


def _assign(variable: Any, values: np.ndarray, name: str) -> None:
    if tuple(variable.shape) != values.shape:
        raise GGUFImportError(
            f"{name}: shape {values.shape} does not fit keras-hub's {tuple(variable.shape)}"
        )
    variable.assign(values)


def _load_weights(backbone: Any, gguf: GemmaGGUF, progress: Callable[[str], None]) -> None:
    t = gguf.tensor
    _assign(backbone.get_layer("token_embedding").embeddings, t("token_embd.weight"), "token_embd")
    for i in range(backbone.num_layers):
        block = backbone.get_layer(f"decoder_block_{i}")
        attention = block.attention
        p = f"blk.{i}."
        norms = {
            "attn_norm": block.pre_attention_norm,
            "post_attention_norm": block.post_attention_norm,
            "ffn_norm": block.pre_ffw_norm,
            "post_ffw_norm": block.post_ffw_norm,
            "attn_q_norm": attention.query_norm,
            "attn_k_norm": attention.key_norm,
        }
        for name, layer in norms.items():
            _assign(layer.scale, _norm(t(p + name + ".weight")), p + name)
        for name, dense in (
            ("attn_q", attention.query_dense),
            ("attn_k", attention.key_dense),
            ("attn_v", attention.value_dense),
        ):
            kernel = dense.kernel
            _assign(kernel, _heads_in(t(p + name + ".weight"), tuple(kernel.shape)), p + name)
        out = attention.output_dense.kernel
        _assign(out, _heads_out(t(p + "attn_output.weight"), tuple(out.shape)), p + "attn_output")
        for name, dense in (
            ("ffn_gate", block.gating_ffw),
            ("ffn_up", block.gating_ffw_2),
            ("ffn_down", block.ffw_linear),
        ):
            _assign(dense.kernel, t(p + name + ".weight").T, p + name)
        progress(f"layer {i + 1}/{backbone.num_layers}")
    _assign(
        backbone.get_layer("final_normalization").scale,
        _norm(t("output_norm.weight")),
        "output_norm",
    )


def import_gguf(
    gguf_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Convert `gguf_path` into a keras-hub Gemma3CausalLM preset at `out_dir`."""
    if dtype not in ("float32", "bfloat16"):
        raise GGUFImportError(f"--dtype {dtype}: choose float32 or bfloat16")
    progress = progress or (lambda message: LOG.info("import-gguf: %s", message))
    gguf = read_gguf(gguf_path)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras_hub

    config = gguf.config
    progress(
        f"{gguf.path.name}: Gemma 3, {config['num_layers']} layers, hidden {config['hidden_dim']}, "
        f"vocabulary {config['vocabulary_size']}"
    )
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=gguf.proto, has_vision_tokens=False)
    backbone = keras_hub.models.Gemma3Backbone(**config, dtype=dtype)
    _load_weights(backbone, gguf, progress)
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer=tokenizer)
    causal_lm = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    causal_lm.save_to_preset(str(out))
    progress(f"saved {backbone.count_params():,} parameters ({dtype}) to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="triage import-gguf",
        description="Convert a Gemma 3 GGUF file into a keras-hub preset directory.",
    )
    parser.add_argument("gguf", help="a Gemma 3 .gguf file (llama.cpp's format)")
    parser.add_argument("--out", required=True, help="the preset directory to write")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"import-gguf: {message}", file=sys.stderr, flush=True)

    try:
        import_gguf(args.gguf, args.out, dtype=args.dtype, progress=progress)
    except GGUFImportError as err:
        print(f"import-gguf: error: {err}", file=sys.stderr)
        return 2
    progress(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
