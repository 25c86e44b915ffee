"""`triage import-gguf` on small GGUF files written here with ggml's own `gguf` writer.

Each file is laid out as llama.cpp writes Gemma 3 (Hugging Face array layout, norm weights
stored as 1 + w), so the tests pin the mapping index by index and the errors a person sees.
The real Gemma 3 270M is checked end to end in `test_gemma3_real.py`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from handlers.gguf_preset import GGUFImportError, import_gguf, main, read_gguf

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN = 2, 8, 2, 1, 4, 16
WORDS = ["\u2581the", "\u2581order", "\u2581late", "\u2581refund", "e", "t", "o", "\u2581"]
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]


def _vocabulary() -> tuple[list[str], list[int]]:
    """llama.cpp's view of a Gemma vocabulary: <unk> and the turn markers as control tokens,
    a whitespace run written with plain spaces."""
    tokens = [*SPECIAL, "<start_of_turn>", "<end_of_turn>", "   "]
    types = [3, 3, 3, 3, 3, 3, 3, 4]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    tokens += WORDS
    types += [1] * len(WORDS)
    return tokens, types


def _tensors(rng: np.random.Generator, vocab: int) -> dict[str, np.ndarray]:
    """Random weights in Hugging Face layout ([out, in]), as gguf's reader returns them."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    shapes = {"token_embd.weight": (vocab, HIDDEN), "output_norm.weight": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"blk.{i}."
        shapes |= {
            p + "attn_norm.weight": (HIDDEN,),
            p + "post_attention_norm.weight": (HIDDEN,),
            p + "ffn_norm.weight": (HIDDEN,),
            p + "post_ffw_norm.weight": (HIDDEN,),
            p + "attn_q_norm.weight": (HEAD_DIM,),
            p + "attn_k_norm.weight": (HEAD_DIM,),
            p + "attn_q.weight": (q, HIDDEN),
            p + "attn_k.weight": (kv, HIDDEN),
            p + "attn_v.weight": (kv, HIDDEN),
            p + "attn_output.weight": (HIDDEN, q),
            p + "ffn_gate.weight": (FFN, HIDDEN),
            p + "ffn_up.weight": (FFN, HIDDEN),
            p + "ffn_down.weight": (HIDDEN, FFN),
        }
    return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


def write_gguf(
    path: Path,
    *,
    arch: str = "gemma3",
    kv: dict[str, float] | None = None,
    odd_tensor: str | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A small Gemma 3 GGUF file; returns the tensors as written (norms already 1 + w)."""
    import gguf

    tokens, types = _vocabulary()
    tensors = _tensors(np.random.default_rng(seed), len(tokens))
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_context_length(512)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(512)
    for key, value in (kv or {}).items():
        writer.add_float32(f"{arch}.{key}", value)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([-1000.0 if t != 1 else -float(i) for i, t in enumerate(types)])
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    for name, array in tensors.items():
        if name == odd_tensor:  # raw bytes of a quantization type gguf cannot dequantize
            blocks = array.size // 256 + 1
            raw = np.zeros((blocks, 292), dtype=np.uint8)  # bytes: 292 per 256-value block
            writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType.Q8_K)
        else:
            writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def test_tensors_map_onto_keras_hub_index_by_index(tmp_path):
    import keras_hub

    written = write_gguf(tmp_path / "m.gguf")
    import_gguf(tmp_path / "m.gguf", tmp_path / "preset")
    lm = keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset"))
    assert type(lm).__name__ == "Gemma3CausalLM"
    backbone = lm.backbone
    np.testing.assert_array_equal(
        backbone.get_layer("token_embedding").embeddings.numpy(), written["token_embd.weight"]
    )
    for i in range(LAYERS):
        block, p = backbone.get_layer(f"decoder_block_{i}"), f"blk.{i}."
        # Norms: llama.cpp's 1 + w becomes keras-hub's w.
        np.testing.assert_allclose(
            block.pre_attention_norm.scale.numpy(), written[p + "attn_norm.weight"] - 1, atol=1e-6
        )
        np.testing.assert_allclose(
            block.attention.key_norm.scale.numpy(), written[p + "attn_k_norm.weight"] - 1, atol=1e-6
        )
        # Row h * head_dim + d of the Hugging Face q projection is head h, dimension d.
        query = block.attention.query_dense.kernel.numpy()  # [heads, hidden, head_dim]
        w_q = written[p + "attn_q.weight"]
        for h in range(HEADS):
            for d in range(HEAD_DIM):
                np.testing.assert_array_equal(query[h, :, d], w_q[h * HEAD_DIM + d])
        out = block.attention.output_dense.kernel.numpy()  # [heads, head_dim, hidden]
        w_o = written[p + "attn_output.weight"]
        np.testing.assert_array_equal(out[1, 2], w_o[:, 1 * HEAD_DIM + 2])
        np.testing.assert_array_equal(
            block.gating_ffw.kernel.numpy(), written[p + "ffn_gate.weight"].T
        )
        np.testing.assert_array_equal(
            block.ffw_linear.kernel.numpy(), written[p + "ffn_down.weight"].T
        )
    config = json.loads((tmp_path / "preset" / "config.json").read_text())["config"]
    assert config["num_layers"] == LAYERS and config["head_dim"] == HEAD_DIM
    assert config["query_head_dim_normalize"] is True


def test_tokenizer_fixes_make_markers_and_spaces_single_tokens(tmp_path):
    import keras_hub

    write_gguf(tmp_path / "m.gguf")
    import_gguf(tmp_path / "m.gguf", tmp_path / "preset")
    tokenizer = keras_hub.models.Tokenizer.from_preset(str(tmp_path / "preset"))
    ids = [int(i) for i in tokenizer.tokenize("<start_of_turn>the order<end_of_turn>")]
    assert ids[0] == 5 and ids[-1] == 6  # the turn markers, not their characters
    assert [int(i) for i in tokenizer.tokenize("   ")] == [7]  # the whitespace-run piece
    assert tokenizer.token_to_id("<unk>") == 3
    # Unknown characters fall back to bytes instead of <unk>.
    assert [int(i) for i in tokenizer.tokenize("é")] == [8 + 0xC3, 8 + 0xA9]


def test_bfloat16_preset(tmp_path):
    import keras_hub

    write_gguf(tmp_path / "m.gguf")
    import_gguf(tmp_path / "m.gguf", tmp_path / "preset", dtype="bfloat16")
    lm = keras_hub.models.CausalLM.from_preset(str(tmp_path / "preset"), dtype="bfloat16")
    assert lm.backbone.get_layer("token_embedding").embeddings.dtype == "bfloat16"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b"not a gguf file at all"), "not a readable GGUF"),
        (lambda p: write_gguf(p, arch="llama"), "architecture 'llama' is not supported"),
        (lambda p: write_gguf(p, odd_tensor="blk.0.ffn_up.weight"), "unsupported quantization"),
        (lambda p: write_gguf(p, kv={"rope.freq_base_swa": 50_000.0}), "cannot represent"),
    ],
    ids=["missing", "not-gguf", "architecture", "quant-type", "hyperparameter"],
)
def test_bad_files_give_one_clear_error(tmp_path, capsys, make, message):
    path = tmp_path / "m.gguf"
    make(path)
    with pytest.raises(GGUFImportError, match=message):
        read_gguf(path)
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_named_as_such(tmp_path, capsys):
    path = tmp_path / "m.gguf"
    write_gguf(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "truncated" in err and "Traceback" not in err
