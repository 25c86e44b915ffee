"""The input contract: `parse_chat` turns raw message bytes into a `Chat` or a `Rejection`."""

from __future__ import annotations

import codecs
import dataclasses
import json
import pickle
import random
from typing import Any

import pytest

from triage.records import Chat
from triage.validate import MAX_ID_CHARS, MAX_PAYLOAD_BYTES, Rejection, parse_chat

# Every reason code parse_chat can produce, read from triage/validate.py.
REASONS = {
    "not_bytes",
    "payload_too_large",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_id",
    "invalid_id",
    "missing_user_id",
    "invalid_user_id",
    "missing_chat_message",
    "invalid_chat_message",
    "empty_chat_message",
}


def encode(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def message(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "c-1", "user_id": "u-1", "chat_message": "My pizza was late."}
    base.update(overrides)
    return base


def without(key: str) -> dict[str, Any]:
    obj = message()
    del obj[key]
    return obj


def rejected(result: Chat | Rejection, reason: str) -> Rejection:
    assert isinstance(result, Rejection), f"expected a rejection ({reason}), got {result!r}"
    assert result.reason == reason, result
    assert result.reason in REASONS
    assert result.detail
    return result


# --- accepted -------------------------------------------------------------------------------


def test_valid_string_ids():
    payload = encode(message())
    chat = parse_chat(payload)
    assert chat == Chat(
        chat_id="c-1",
        user_id="u-1",
        chat_message="My pizza was late.",
        payload=payload,
        attempt=1,
    )


def test_valid_integer_ids_become_strings():
    chat = parse_chat(encode(message(id=42, user_id=7)))
    assert isinstance(chat, Chat)
    assert chat.chat_id == "42"
    assert chat.user_id == "7"


@pytest.mark.parametrize("value, text", [(0, "0"), (-5, "-5"), (10**20, str(10**20))])
def test_integer_id_edge_values(value, text):
    chat = parse_chat(encode(message(id=value)))
    assert isinstance(chat, Chat)
    assert chat.chat_id == text


def test_id_of_exactly_max_chars_is_accepted():
    chat = parse_chat(encode(message(id="x" * MAX_ID_CHARS)))
    assert isinstance(chat, Chat)
    assert chat.chat_id == "x" * MAX_ID_CHARS


def test_attempt_is_carried():
    chat = parse_chat(encode(message()), attempt=3)
    assert isinstance(chat, Chat)
    assert chat.attempt == 3


def test_extra_fields_are_accepted_and_kept_only_as_bytes():
    """Unused fields travel in the payload, not parsed: a 1 MiB `[{}, ...]` was 25 MB each."""
    obj = message(channel="web", meta={"lang": "ko", "tags": [1, 2]}, score=None)
    payload = encode(obj)
    chat = parse_chat(payload)
    assert isinstance(chat, Chat)
    assert chat.payload == payload
    assert {f.name for f in dataclasses.fields(Chat)} == {
        "chat_id",
        "user_id",
        "chat_message",
        "payload",
        "attempt",
        "message_id",
        "attributes",
    }
    filler = encode(message(filler=[{}] * 150_000))
    assert len(filler) < MAX_PAYLOAD_BYTES
    parsed = parse_chat(filler)
    assert isinstance(parsed, Chat)
    assert len(pickle.dumps(parsed)) < 2 * len(filler)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["extra", "nested", "id"])
def test_non_finite_number_literals_are_not_json(literal, where):
    body = {
        "extra": '{"id": "c-1", "user_id": "u-1", "chat_message": "hi", "score": %s}',
        "nested": '{"id": "c-1", "user_id": "u-1", "chat_message": "hi", "m": {"a": [1, %s]}}',
        "id": '{"id": %s, "user_id": "u-1", "chat_message": "hi"}',
    }[where] % literal
    result = parse_chat(body.encode())
    assert isinstance(result, Rejection)
    assert result.reason == "not_json" and literal in result.detail


def test_leading_utf8_bom_is_accepted_and_kept_in_payload():
    payload = codecs.BOM_UTF8 + encode(message())
    chat = parse_chat(payload)
    assert isinstance(chat, Chat)
    assert chat.chat_id == "c-1"
    assert chat.payload == payload


def test_payload_is_kept_byte_exact():
    # Odd spacing, key order and escapes: a re-serialisation would differ from these bytes.
    payload = (
        b'  {"chat_message" :"caf\\u00e9 \\/ late",\n\t"user_id":"u-9", "id":  12 ,"x":1.50}  \r\n'
    )
    chat = parse_chat(payload)
    assert isinstance(chat, Chat)
    assert chat.chat_message == "café / late"
    assert chat.payload == payload
    assert type(chat.payload) is bytes


def test_bytearray_payload_is_accepted_as_bytes():
    payload = encode(message())
    chat = parse_chat(bytearray(payload))
    assert isinstance(chat, Chat)
    assert chat.payload == payload
    assert type(chat.payload) is bytes


@pytest.mark.parametrize(
    "text",
    [
        "피자가 한 시간 늦게 왔어요. 환불해 주세요.",
        "ピザが冷めていました。",
        "Pizza was cold 🍕😡👎🏽",
        "Ünïcödé façade — “quotes”",
    ],
)
def test_multilingual_messages_are_accepted(text):
    chat = parse_chat(encode(message(chat_message=text, user_id="사용자-1")))
    assert isinstance(chat, Chat)
    assert chat.chat_message == text
    assert chat.user_id == "사용자-1"


def test_message_is_not_stripped():
    chat = parse_chat(encode(message(chat_message="  late pizza \n")))
    assert isinstance(chat, Chat)
    assert chat.chat_message == "  late pizza \n"


# --- not a JSON object ----------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["text", 123, None, {"id": 1}])
def test_non_bytes_is_rejected(payload):
    rejected(parse_chat(payload), "not_bytes")


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe{}",
        b'{"id": "c-1", "user_id": "u", "chat_message": "caf\xe9"}',  # Latin-1, not UTF-8
        b'{"chat_message": "\xed\xa0\x80"}',  # an encoded surrogate is not valid UTF-8
        b"\xc3",  # truncated multi-byte sequence
        "hello".encode("utf-16"),
    ],
)
def test_not_utf8(payload):
    rejected(parse_chat(payload), "not_utf8")


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"   ",
        b"{",
        b"not json",
        b'{"id": "c-1",}',
        b"{'id': 'c-1'}",
        codecs.BOM_UTF8 + codecs.BOM_UTF8 + b"{}",
        b'{"id": 1} {"id": 2}',
    ],
)
def test_not_json(payload):
    rejected(parse_chat(payload), "not_json")


@pytest.mark.parametrize("payload", [b"[]", b'[{"id": 1}]', b'"a string"', b"42", b"1.5", b"null"])
def test_not_an_object(payload):
    rejected(parse_chat(payload), "not_object")


@pytest.mark.parametrize("opener", ["[", "{", '{"a":'])
def test_deeply_nested_json_never_raises(opener):
    result = parse_chat((opener * 100_000).encode())
    assert isinstance(result, Rejection)
    assert result.reason in {"not_json", "not_object"}


def test_deeply_nested_but_complete_json_is_rejected_not_raised():
    payload = b'{"id": 1, "user_id": 2, "chat_message": "x", "deep": ' + b"[" * 100_000
    payload += b"]" * 100_000 + b"}"
    result = parse_chat(payload)
    # Either a clean rejection, or (if the decoder copes) a valid chat; never an exception.
    assert isinstance(result, (Chat, Rejection))
    if isinstance(result, Rejection):
        assert result.reason == "not_json"


# --- ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["id", "user_id"])
def test_missing_id(key):
    rejected(parse_chat(encode(without(key))), f"missing_{key}")


@pytest.mark.parametrize("key", ["id", "user_id"])
@pytest.mark.parametrize(
    "value", [True, False, 1.0, 1.5, None, [], ["c-1"], {}, {"id": 1}], ids=repr
)
def test_id_of_wrong_type(key, value):
    result = rejected(parse_chat(encode(message(**{key: value}))), f"invalid_{key}")
    assert result.chat_id is None


@pytest.mark.parametrize("key", ["id", "user_id"])
@pytest.mark.parametrize("value", ["", " ", "\t\n"], ids=repr)
def test_empty_id(key, value):
    rejected(parse_chat(encode(message(**{key: value}))), f"invalid_{key}")


@pytest.mark.parametrize("key", ["id", "user_id"])
def test_id_over_max_chars(key):
    rejected(parse_chat(encode(message(**{key: "x" * (MAX_ID_CHARS + 1)}))), f"invalid_{key}")


def test_integer_id_over_max_chars():
    rejected(parse_chat(encode(message(id=10**MAX_ID_CHARS))), "invalid_id")


@pytest.mark.parametrize("key", ["id", "user_id"])
def test_id_with_lone_surrogate(key):
    payload = encode(message(**{key: "PLACEHOLDER"})).replace(b"PLACEHOLDER", b"c\\ud800")
    rejected(parse_chat(payload), f"invalid_{key}")


def test_id_is_checked_before_user_id():
    rejected(parse_chat(encode({"chat_message": "x"})), "missing_id")


# --- chat_message ---------------------------------------------------------------------------


def test_missing_chat_message_keeps_chat_id():
    result = rejected(parse_chat(encode(without("chat_message"))), "missing_chat_message")
    assert result.chat_id == "c-1"


@pytest.mark.parametrize("value", ["", " ", "\n\t  \r\n", "\u3000"], ids=repr)
def test_empty_chat_message(value):
    result = rejected(parse_chat(encode(message(chat_message=value))), "empty_chat_message")
    assert result.chat_id == "c-1"


@pytest.mark.parametrize("value", [0, 3.5, True, [], ["hi"], {"text": "hi"}, None], ids=repr)
def test_chat_message_not_a_string(value):
    result = rejected(parse_chat(encode(message(chat_message=value))), "invalid_chat_message")
    assert result.chat_id == "c-1"


def test_chat_id_in_rejection_is_the_string_form_of_an_integer_id():
    result = rejected(parse_chat(encode(message(id=99, chat_message=None))), "invalid_chat_message")
    assert result.chat_id == "99"


@pytest.mark.parametrize(
    "escape", [b"\\ud800", b"\\udfff", b"\\ud83d", b"late \\ud83d pizza", b"\\udc00\\ud800"]
)
def test_lone_surrogate_in_chat_message_is_rejected(escape):
    payload = b'{"id": "c-1", "user_id": "u-1", "chat_message": "' + escape + b'"}'
    result = rejected(parse_chat(payload), "invalid_chat_message")
    assert result.chat_id == "c-1"


def test_escaped_surrogate_pair_is_a_valid_character():
    payload = b'{"id": "c-1", "user_id": "u-1", "chat_message": "pizza \\ud83c\\udf55"}'
    chat = parse_chat(payload)
    assert isinstance(chat, Chat)
    assert chat.chat_message == "pizza 🍕"
    chat.chat_message.encode("utf-8")


# --- size -----------------------------------------------------------------------------------


def payload_of_size(size: int) -> bytes:
    head = encode(message(chat_message=""))
    filler = size - len(head)
    payload = encode(message(chat_message="a" * filler))
    assert len(payload) == size
    return payload


def test_payload_exactly_at_limit_is_not_rejected_for_size():
    payload = payload_of_size(MAX_PAYLOAD_BYTES)
    chat = parse_chat(payload)
    assert isinstance(chat, Chat)
    assert chat.payload == payload


def test_payload_one_byte_over_limit_is_rejected():
    rejected(parse_chat(payload_of_size(MAX_PAYLOAD_BYTES + 1)), "payload_too_large")


def test_size_limit_counts_the_bom():
    body = payload_of_size(MAX_PAYLOAD_BYTES - len(codecs.BOM_UTF8) + 1)
    rejected(parse_chat(codecs.BOM_UTF8 + body), "payload_too_large")


def test_oversized_garbage_is_rejected_for_size_first():
    rejected(parse_chat(b"\xff" * (MAX_PAYLOAD_BYTES + 1)), "payload_too_large")


# --- never raises (seeded fuzz; hypothesis is not installed in this environment) -------------

_PIECES = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b":",
    b",",
    b"\\",
    b"\\u",
    b"d800",
    b"null",
    b"true",
    b"1",
    b"-0.5e9",
    b'"id"',
    b'"user_id"',
    b'"chat_message"',
    b"\xef\xbb\xbf",
    "피자".encode(),
    b" ",
    b"\x00",
]
_BAD_PIECES = [b"\xff", b"\xc3", b"\xed\xa0\x80"]


def piece(rng: random.Random) -> bytes:
    return rng.choice(_BAD_PIECES if rng.random() < 0.005 else _PIECES)


def test_parse_chat_never_raises_on_arbitrary_bytes():
    rng = random.Random(20240611)
    valid = encode(message(extra=[1, {"a": None}]))
    for _ in range(3000):
        kind = rng.random()
        if kind < 0.15:
            payload = rng.randbytes(rng.randrange(0, 64))
        elif kind < 0.7:
            payload = b"".join(piece(rng) for _ in range(rng.randrange(0, 40)))
        else:
            data = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(data))
                data[i : i + rng.randrange(0, 3)] = piece(rng)
            payload = bytes(data)
        result = parse_chat(payload)
        assert isinstance(result, (Chat, Rejection)), payload
        if isinstance(result, Rejection):
            assert result.reason in REASONS, (payload, result)
        else:
            assert result.payload == payload
            result.chat_message.encode("utf-8")
            assert result.chat_message.strip()


def test_count_lines_splits_as_the_reader_does(tmp_path):
    from triage.sources import count_lines

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n  \n{"b": 2}\n\n{"c": 3}')  # no newline at the end
    assert count_lines(str(path)) == (6, 3)
    path.write_bytes(b"x\n")
    assert count_lines(str(path)) == (1, 0)
    path.write_bytes(b"")
    assert count_lines(str(path)) == (0, 0)
