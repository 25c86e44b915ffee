"""On the GPU machine: one LoRA run from the packed weights, then the rating accuracy on the
written development split and the hand-written set (JSON on stdout, adapter in /tmp/adapters).

`python3 train.py NAME '{"lr": 1e-3, "rank": 16, "layers": 12, "epochs": 2, "boost": 4,
"synth": 160, "per_lang": 100, "tpb": 1024, "seed": 1}'`, from the repository root, with
keras and keras-hub on PYTHONPATH (sweep.sh installs them from carried wheels) and the packed
blocks 0-13 in /tmp/w (pack.py's .gpu0 and .gpu1, carried in earlier calls).
"""

import collections
import json
import math
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.getcwd())

import jax
import keras
import keras_hub
import numpy as np

from triage.finetune import _answer_only_model, _Batches, _Encoded, enable_lora

jax.config.update("jax_compilation_cache_dir", "/tmp/jaxcache")
PACKED = "/tmp/g2"


def _coarse_shape(row):
    """Widths in steps of 256 (the CPU uses 128): fewer XLA compilations per run."""
    width = 256 * math.ceil((len(row.ids) - 1) / 256)
    answer = len(row.ids) - row.answer_start
    return width, 128 if answer <= 128 else 256 * math.ceil(answer / 256)


def backbone_from_pack():
    config = json.load(open(f"{PACKED}/config.json"))
    weights = {}
    for path in ("/tmp/w/w0.npz", "/tmp/w/w1.npz", f"{PACKED}/w2.npz"):
        with np.load(path) as z:
            weights.update({k: z[k] for k in z.files})
    backbone = keras_hub.models.Gemma3Backbone.from_config(config)
    for weight in backbone.weights:
        key = weight.path.replace("/", "::")
        if key + "|f" in weights:
            weight.assign(weights[key + "|f"])
        else:
            weight.assign(weights[key + "|q"].astype(np.float32) * weights[key + "|s"])
    return backbone


def rate(backbone, data, split):
    """Greedy rating under the constraint: '▁-' against '▁', then '1' against '0'."""
    sp = data["special"]
    ids_all, labels, langs = (data[f"{split}_{k}"] for k in ("ids", "labels", "langs"))
    predicted = {}
    order = sorted(range(len(ids_all)), key=lambda i: len(ids_all[i]))
    for start in range(0, len(order), 32):
        idx = order[start : start + 32]
        width = 512 * math.ceil(max(len(ids_all[i]) for i in idx) / 512)
        x = np.zeros((len(idx), width), "int32")
        mask = np.zeros((len(idx), width), bool)
        for r, i in enumerate(idx):
            x[r, : len(ids_all[i])] = ids_all[i]
            mask[r, : len(ids_all[i])] = True
        hidden = np.asarray(backbone({"token_ids": x, "padding_mask": mask}))
        ends = np.array([len(ids_all[i]) for i in idx])
        rows = np.arange(len(idx))
        first = np.asarray(backbone.token_embedding(hidden[rows, ends - 2], reverse=True))
        second = np.asarray(backbone.token_embedding(hidden[rows, ends - 1], reverse=True))
        for r, i in enumerate(idx):
            if first[r, sp["NEG"]] > first[r, sp["SP"]]:
                predicted[i] = -1
            else:
                predicted[i] = 1 if second[r, sp["ONE"]] > second[r, sp["ZERO"]] else 0
    right = collections.defaultdict(list)
    confusion = collections.Counter()
    for i, gold in enumerate(labels):
        right[langs[i]].append(predicted[i] == gold)
        right["all"].append(predicted[i] == gold)
        confusion[f"{gold}->{predicted[i]}"] += 1
    accuracy = {k: round(100 * float(np.mean(v)), 1) for k, v in sorted(right.items())}
    return accuracy | {"confusion": dict(confusion)}


def main() -> None:
    name, conf = sys.argv[1], json.loads(sys.argv[2])
    started = time.time()
    data = json.load(open(f"{PACKED}/data.json"))
    _Batches._shape = staticmethod(_coarse_shape)
    keras.utils.set_random_seed(conf.get("seed", 0))
    backbone = backbone_from_pack()
    enable_lora(backbone, conf["rank"], conf["layers"])
    per_lang = conf.get("per_lang", 1000)
    encoded = [
        _Encoded(ids, start, tuple(boosted))
        for (ids, start, boosted), rank in zip(
            data["written_sentiment"], data["written_rank"], strict=True
        )
        if rank < per_lang
    ]
    encoded += [_Encoded(i, a, tuple(b)) for i, a, b in data["synth_sentiment"][: conf["synth"]]]
    batches = _Batches(encoded, 16, conf.get("seed", 0), conf["boost"], conf.get("tpb", 1024))
    steps = conf["epochs"] * len(batches.batches)
    schedule = keras.optimizers.schedules.CosineDecay(conf["lr"], decay_steps=steps, alpha=0.1)

    class Holder:  # what _answer_only_model reads
        pass

    Holder.backbone = backbone
    model = _answer_only_model(Holder)
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(batches.dataset, epochs=conf["epochs"], verbose=0, shuffle=False)
    result = {
        "name": name,
        "conf": conf,
        "steps": steps,
        "train_s": round(time.time() - started),
        "loss": [round(float(v), 4) for v in history.history["loss"]],
        "dev": rate(backbone, data, "dev"),
        "hand": rate(backbone, data, "hand"),
    }
    os.makedirs("/tmp/adapters", exist_ok=True)
    backbone.save_lora_weights(f"/tmp/adapters/adapter-{name}.lora.h5")
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
