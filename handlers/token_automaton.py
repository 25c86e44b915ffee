"""A JSON schema compiled to a dense token-level automaton over one model's vocabulary.

`outlines-core` turns the schema into a regular expression and indexes it against the
vocabulary: for every automaton state, which token ids may come next and where they lead. This
module turns that index into plain arrays a jitted generation loop can gather from on the
device (see `handlers/constrained.py`), and keeps them on disk, because indexing a 256k-token
vocabulary takes far longer than loading a table.

The arrays, for S states (the last one, `done`, absorbs the stop tokens) and V tokens:

- `class_next[S, C]` and `token_class[V]`: the state after a token is
  `class_next[state, token_class[token]]`, -1 where the token is not allowed. Tokens that act
  alike in every state share a class: for the reply schema a 262,144-token Gemma vocabulary
  falls into about 120 classes, so the table takes kilobytes instead of a dense `[S, V]`
  table's 34 MB (`next_state` still gives that dense view, for tests and tools).
- `min_tokens[S]`: the fewest tokens that complete a reply from a state (0 when accepting).
- `min_chars[S]`: the fewest characters that complete it.
- `token_chars[V]`: characters a token adds (UTF-8 lead bytes, so byte tokens add 0 or 1).

With the last three the loop can refuse any token after which the reply could no longer be
finished within its token budget or its character cap, so a reply is complete by construction
without a counted repetition in the regular expression (which would multiply the states).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TokenAutomaton",
    "automaton_for",
    "dense_table",
    "regex_for_schema",
    "token_bytes",
]

LOG = logging.getLogger(__name__)

# Bump when the cached arrays change meaning.
_FORMAT = 2
# Pieces that are markers rather than text (`<start_of_turn>`, `<unused7>`, `[@BOS@]`): never
# allowed as one token inside a constrained reply. Text can still spell "<" with other pieces.
_MARKER = re.compile(r"^(<[^<>\s]+>|\[[^\[\]\s]+\])$")
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_UNREACHABLE = np.iinfo(np.int32).max // 4


def regex_for_schema(schema: dict[str, Any], whitespace: str = r"[ ]?") -> str:
    """The regular expression outlines-core derives from a JSON schema (properties in order)."""
    from outlines_core import json_schema

    return json_schema.build_regex_from_schema(json.dumps(schema), whitespace)


def token_bytes(tokenizer: Any) -> list[bytes | None]:
    """What each token id writes into the text, or None for ids that are not text.

    Works for keras-hub SentencePiece tokenizers (Gemma's): "▁" is a space, `<0xAB>` pieces
    are single bytes, control, unknown and marker pieces are not text.
    """
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=tokenizer.proto)
    special = set(getattr(tokenizer, "special_token_ids", None) or [])
    out: list[bytes | None] = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if i in special or sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            out.append(None)
        elif sp.is_byte(i):
            match = _BYTE_PIECE.match(piece)
            out.append(bytes([int(match.group(1), 16)]) if match else None)
        elif _MARKER.match(piece):
            out.append(None)
        else:
            out.append(piece.replace("\u2581", " ").encode("utf-8"))
    return out


def _lead_bytes(data: bytes) -> int:
    """Characters `data` adds to UTF-8 text: every byte that is not a continuation byte."""
    return sum(1 for b in data if b & 0xC0 != 0x80)


@dataclass(frozen=True)
class TokenAutomaton:
    class_next: np.ndarray  # [S, C] int16 or int32, -1 = not allowed
    token_class: np.ndarray  # [V] int16 or int32: each token's column in class_next
    min_tokens: np.ndarray  # [S] int32
    min_chars: np.ndarray  # [S] int32
    token_chars: np.ndarray  # [V] int16
    initial: int
    accepting: np.ndarray  # [S] bool
    regex: str

    @property
    def num_states(self) -> int:
        return int(self.class_next.shape[0])

    @property
    def vocabulary_size(self) -> int:
        return int(self.token_class.shape[0])

    @property
    def next_state(self) -> np.ndarray:
        """The dense [S, V] view (built on demand; the device never holds it)."""
        return self.class_next[:, self.token_class]

    @property
    def nbytes(self) -> int:
        """Memory the arrays take on the device: what constrained decoding adds per model."""
        return sum(
            a.nbytes
            for a in (
                self.class_next,
                self.token_class,
                self.min_tokens,
                self.min_chars,
                self.token_chars,
            )
        )

    def walk(self, token_ids: Sequence[int]) -> int:
        """The state after `token_ids` from the initial state; -1 once a token is refused."""
        state = self.initial
        for token in token_ids:
            state = int(self.class_next[state, self.token_class[token]])
            if state < 0:
                return -1
        return state

    @classmethod
    def build(
        cls, regex: str, vocabulary: Sequence[bytes | None], stop_ids: Sequence[int]
    ) -> TokenAutomaton:
        """Index `regex` over `vocabulary` (bytes per token id) with outlines-core."""
        table, accepting, initial = dense_table(regex, vocabulary, stop_ids)
        # Columns that are equal in every state become one class.
        class_next, token_class = np.unique(table, axis=1, return_inverse=True)
        token_class = token_class.reshape(-1)
        class_dtype = np.int16 if class_next.shape[1] < np.iinfo(np.int16).max else np.int32
        token_chars = np.array([_lead_bytes(t) if t else 0 for t in vocabulary], dtype=np.int64)
        # Within a class every token leads to the same state, so a class costs its cheapest
        # token's characters on a shortest path.
        class_chars = np.full(class_next.shape[1], _UNREACHABLE, dtype=np.int64)
        np.minimum.at(class_chars, token_class, token_chars)
        class_next = np.ascontiguousarray(class_next)
        return cls(
            class_next=class_next,
            token_class=token_class.astype(class_dtype),
            min_tokens=_shortest(class_next, accepting, np.ones(class_next.shape[1], np.int64)),
            min_chars=_shortest(class_next, accepting, class_chars),
            token_chars=np.minimum(token_chars, np.iinfo(np.int16).max).astype(np.int16),
            initial=initial,
            accepting=accepting,
            regex=regex,
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            class_next=self.class_next,
            token_class=self.token_class,
            min_tokens=self.min_tokens,
            min_chars=self.min_chars,
            token_chars=self.token_chars,
            initial=np.int64(self.initial),
            accepting=self.accepting,
            regex=np.array(self.regex),
        )
        os.replace(tmp, path)  # atomic: workers sharing a cache never read half a file

    @classmethod
    def load(cls, path: Path) -> TokenAutomaton:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                class_next=data["class_next"],
                token_class=data["token_class"],
                min_tokens=data["min_tokens"],
                min_chars=data["min_chars"],
                token_chars=data["token_chars"],
                initial=int(data["initial"]),
                accepting=data["accepting"],
                regex=str(data["regex"]),
            )


def dense_table(
    regex: str, vocabulary: Sequence[bytes | None], stop_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, int]:
    """outlines-core's index as a dense `[S, V]` next-state table (-1 = refused), with the
    accepting states and the initial one. Stop tokens lead to `done`, the last state."""
    from outlines_core import Index, Vocabulary

    if not stop_ids:
        raise ValueError("a constrained reply needs at least one stop token")
    stop = set(stop_ids)
    by_text: dict[bytes, list[int]] = {}
    for token_id, text in enumerate(vocabulary):
        if text and token_id not in stop:
            by_text.setdefault(text, []).append(token_id)
    index = Index(regex, Vocabulary(min(stop), by_text))
    transitions = index.get_transitions()
    finals = set(index.get_final_states())
    # outlines numbers states sparsely; renumber densely and add `done` last.
    ids = sorted(set(transitions) | finals | {index.get_initial_state()})
    dense = {s: i for i, s in enumerate(ids)}
    done = len(ids)
    dtype = np.int16 if done + 1 < np.iinfo(np.int16).max else np.int32
    table = np.full((done + 1, len(vocabulary)), -1, dtype=dtype)
    for state, moves in transitions.items():
        row = table[dense[state]]
        for token_id, target in moves.items():
            if token_id not in stop:
                row[token_id] = dense[target]
    accepting = np.zeros(done + 1, dtype=bool)
    for state in finals:
        table[dense[state], list(stop)] = done
        accepting[dense[state]] = True
    table[done, list(stop)] = done
    accepting[done] = True
    return table, accepting, dense[index.get_initial_state()]


def _shortest(table: np.ndarray, accepting: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Least total `cost` of columns (token classes) from each state to an accepting one
    (Bellman-Ford).

    Costs are non-negative, so S rounds suffice; unreachable states keep a huge value and so
    are never entered by the budget check.
    """
    dist = np.where(accepting, 0, _UNREACHABLE).astype(np.int64)
    allowed = table >= 0
    targets = np.where(allowed, table, 0).astype(np.int64)
    for _ in range(len(dist)):
        via = np.where(allowed, cost[None, :] + dist[targets], _UNREACHABLE).min(axis=1)
        new = np.minimum(dist, via)
        if np.array_equal(new, dist):
            break
        dist = new
    return np.minimum(dist, _UNREACHABLE).astype(np.int32)


def default_cache_dir() -> Path:
    root = os.environ.get("TRIAGE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "chat-triage"
    )
    return Path(root) / "automata"


def automaton_for(
    tokenizer: Any,
    schema: dict[str, Any] | str,
    stop_ids: Sequence[int],
    cache_dir: Path | None = None,
) -> TokenAutomaton:
    """The automaton for (tokenizer, schema, stop ids), from the disk cache when it is there.
    `schema` is a JSON schema, or a regex (a string) for replies that are not JSON.

    The cache key hashes the tokenizer's own model bytes, so two presets that share a
    tokenizer share one file and a retrained tokenizer never reads a stale table.
    """
    regex = schema if isinstance(schema, str) else regex_for_schema(schema)
    key = hashlib.sha256()
    for part in (str(_FORMAT), regex, ",".join(map(str, sorted(stop_ids)))):
        key.update(part.encode() + b"\0")
    key.update(bytes(tokenizer.proto))
    path = (cache_dir or default_cache_dir()) / f"{key.hexdigest()[:32]}.npz"
    if path.exists():
        try:
            return TokenAutomaton.load(path)
        except (OSError, ValueError, KeyError) as err:  # a damaged file: rebuild it
            LOG.warning("rebuilding automaton cache %s: %s", path, err)
    started = time.perf_counter()
    automaton = TokenAutomaton.build(regex, token_bytes(tokenizer), stop_ids)
    LOG.info(
        "built reply automaton: %d states x %d token classes over %d tokens (%.2f MB) in %.1f s",
        automaton.num_states,
        automaton.class_next.shape[1],
        automaton.vocabulary_size,
        automaton.nbytes / 1e6,
        time.perf_counter() - started,
    )
    try:
        automaton.save(path)
    except OSError as err:  # a read-only cache costs a rebuild next time, nothing else
        LOG.warning("cannot cache automaton at %s: %s", path, err)
    return automaton
