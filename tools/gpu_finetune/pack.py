"""Pack the base Gemma 3 270M and the training data for a GPU machine that accepts 64 MiB a call.

Writes `.gpu0/w0.npz`, `.gpu1/w1.npz` (decoder blocks 0-6 and 7-13) and `.gpu2/` (blocks 14-17,
the embedding, the config, the encoded data, `train.py`, `sweep.sh`) under the repository root.
Every matrix is int8 with a float32 scale per output channel; the vocabulary is cut to the
tokens the training, development and hand-written chats use (about 22,000 of 262,144), which
is exact for the loss on answer tokens and for rating the hand-written chats. The LoRA factors
trained on this copy are merged into the float32 base afterwards (`triage merge-adapter`).

Run from the repository root: `.venv/bin/python tools/gpu_finetune/pack.py`.
"""

import json
import os
import re
import shutil
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras_hub
import numpy as np

from triage.finetune import _encode, build_examples
from triage.prompts import load_template
from triage.synthetic import generate
from triage.training_set import read_written

ROOT = Path.cwd()
BASE = ROOT / "models" / "gemma3-270m"
TRIAGE, APOLOGY = "triage-v3", "apology-v2"
MAX_LENGTH = 640


def _encode_records(tokenizer, records):
    examples = build_examples(records, TRIAGE, APOLOGY)
    encoded = _encode(tokenizer, examples, MAX_LENGTH)
    return [[e.ids, e.answer_start, list(e.boosted)] for e in encoded]


def main() -> None:
    causal_lm = keras_hub.models.CausalLM.from_preset(str(BASE))
    tokenizer = causal_lm.preprocessor.tokenizer
    train, dev = read_written(split="train"), read_written(split="dev")
    hand = [json.loads(line) for line in (ROOT / "eval" / "handwritten.jsonl").open()]

    data: dict = {"written_sentiment": [], "written_rank": []}
    seen: dict[str, int] = {}
    for record in train:  # rank within its language: lets a run train on the first N of each
        rank = seen.get(record["language"], 0)
        seen[record["language"]] = rank + 1
        encoded = _encode_records(tokenizer, [record])
        data["written_sentiment"] += encoded
        data["written_rank"] += [rank] * len(encoded)
    data["synth_sentiment"] = _encode_records(tokenizer, generate(600, seed=1))

    # Rating a chat: the prompt, '{"sentiment":' and the space token; the model then says
    # '▁-' (dissatisfied) or, after '▁', '1' or '0'.
    prefix = [int(i) for i in tokenizer.tokenize('{"sentiment":')]
    space, minus, one, zero = (tokenizer.token_to_id(t) for t in ("▁", "▁-", "1", "0"))
    template = load_template("triage", TRIAGE)

    def prompt_ids(chat: str) -> list[int]:
        text = template.render(chat, user_id="customer").text
        return [int(i) for i in tokenizer.tokenize(text)]

    for name, records in (("dev", dev), ("hand", hand)):
        data[f"{name}_labels"] = [r["sentiment"] for r in records]
        data[f"{name}_langs"] = [r["language"] for r in records]
        data[f"{name}_ids"] = [
            [
                tokenizer.start_token_id,
                *prompt_ids(r["chat_message"]),
                *prefix,
                space,
            ][-1024:]
            for r in records
        ]

    used = set(range(110)) | {space, minus, one, zero, tokenizer.end_token_id}
    used.add(tokenizer.token_to_id("<end_of_turn>"))
    for key in ("dev_ids", "hand_ids"):
        for ids in data[key]:
            used.update(ids)
    for key in ("written_sentiment", "synth_sentiment"):
        for ids, _, _ in data[key]:
            used.update(ids)
    vocab = np.array(sorted(used), dtype=np.int64)
    remap = {int(t): i for i, t in enumerate(vocab)}
    for key in ("dev_ids", "hand_ids"):
        data[key] = [[remap[i] for i in ids] for ids in data[key]]
    for key in ("written_sentiment", "synth_sentiment"):
        data[key] = [[[remap[i] for i in ids], a, b] for ids, a, b in data[key]]
    data["special"] = {
        "SP": remap[space],
        "NEG": remap[minus],
        "ONE": remap[one],
        "ZERO": remap[zero],
    }

    config = json.loads((BASE / "config.json").read_text())["config"]
    config["vocabulary_size"] = len(vocab)
    chunks: list[dict[str, np.ndarray]] = [{}, {}, {}]
    for weight in causal_lm.backbone.weights:
        array = np.asarray(weight.numpy(), dtype=np.float32)
        if "token_embedding" in weight.path:
            array = array[vocab]
        block = re.search(r"decoder_block_(\d+)", weight.path)
        part = 2 if not block else min(int(block.group(1)) // 7, 2)
        key = weight.path.replace("/", "::")
        if array.ndim >= 2:
            scale = np.abs(array).max(axis=tuple(range(array.ndim - 1)), keepdims=True) / 127.0
            scale[scale == 0] = 1.0
            chunks[part][key + "|q"] = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
            chunks[part][key + "|s"] = scale.astype(np.float32)
        else:
            chunks[part][key + "|f"] = array
    here = Path(__file__).parent
    for part, arrays in enumerate(chunks):
        folder = ROOT / f".gpu{part}"
        folder.mkdir(exist_ok=True)
        np.savez(folder / f"w{part}.npz", **arrays)
    (ROOT / ".gpu2" / "config.json").write_text(json.dumps(config))
    (ROOT / ".gpu2" / "data.json").write_text(json.dumps(data))
    for name in ("train.py", "sweep.sh"):
        shutil.copy(here / name, ROOT / ".gpu2" / name)
    print(f"vocabulary {len(vocab)}; {len(data['written_sentiment'])} written examples")


if __name__ == "__main__":
    main()
