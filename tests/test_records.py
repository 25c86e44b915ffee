"""Record types: JSON round trips and the BigQuery schemas derived from the dataclasses."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import json
import re

import pytest

from triage.records import (
    Chat,
    DeadLetter,
    Draft,
    Stage,
    TriageResult,
    bigquery_schema,
    from_dict,
    from_json,
    to_dict,
    to_json,
    utc_now,
)

TRIAGE = TriageResult(
    chat_id="c-1",
    user_id="u-1",
    chat_message="피자가 늦게 왔어요 🍕",
    sentiment=-1,
    summary='Late pizza; customer said "never again".',
    model_id="gemma2_instruct_2b_en",
    prompt_version="triage-v1",
    attempt=2,
    created_at="2024-06-11T10:00:00.000Z",
)
DRAFT = Draft(
    chat_id="c-1",
    user_id="u-1",
    chat_message="ピザが冷めていました。",
    sentiment=-1,
    summary="Cold pizza.",
    draft="We are sorry.\nA colleague will contact you.",
    model_id="gemma2_instruct_2b_en",
    prompt_version="triage-v1",
    apology_prompt_version="apology-v1",
    attempt=1,
    created_at="2024-06-11T10:00:01.000Z",
)
# Bytes that are not UTF-8 (and a BOM, NUL and newline) must survive as they are.
RAW = b'\xef\xbb\xbf{"id": "c-1", "chat_message": "caf\xe9"}\x00\n\xff'
DEAD = DeadLetter(
    stage=Stage.TRIAGE_PARSE.value,
    reason="truncated_json",
    detail="a JSON object is not closed",
    payload=RAW,
    chat_id="c-1",
    model_reply='{"sentiment": -1, "summary": "late piz',
    attempt=3,
    model_id="gemma2_instruct_2b_en",
    prompt_version="triage-v1",
    failed_at="2024-06-11T10:00:02.123Z",
)
DEAD_MINIMAL = DeadLetter(stage="validate", reason="not_json", detail="x", payload=b"")
CHAT = Chat(
    chat_id="c-1",
    user_id="u-1",
    chat_message="late",
    payload=RAW,
    attempt=2,
    attributes={"attempt": "2"},
)

# A draft with the reviewer's warnings: a repeated field, a list in JSON, a tuple again after.
DRAFT_WARNED = dataclasses.replace(
    DRAFT, warnings=("offers what nobody in the chat mentioned: refund",)
)
RECORDS = [TRIAGE, DRAFT, DRAFT_WARNED, DEAD, DEAD_MINIMAL, CHAT]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_round_trip(record):
    text = to_json(record)
    assert isinstance(text, str)
    back = from_json(type(record), text)
    assert back == record
    assert type(back) is type(record)
    # Also from bytes, as read off a file or a Pub/Sub message.
    assert from_json(type(record), text.encode("utf-8")) == record


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_has_every_field_in_order(record):
    data = json.loads(to_json(record))
    assert list(data) == [f.name for f in dataclasses.fields(record)]


@pytest.mark.parametrize("record", [DEAD, DEAD_MINIMAL, CHAT], ids=lambda r: type(r).__name__)
def test_bytes_payload_is_base64_text_in_json(record):
    data = json.loads(to_json(record))
    assert data["payload"] == base64.b64encode(record.payload).decode("ascii")
    assert base64.b64decode(data["payload"]) == record.payload
    assert isinstance(from_json(type(record), to_json(record)).payload, bytes)


def test_non_ascii_text_is_written_as_is():
    text = to_json(TRIAGE)
    assert "피자가 늦게 왔어요 🍕" in text
    assert "\\u" not in text


def test_dead_letter_nulls_round_trip():
    data = json.loads(to_json(DEAD_MINIMAL))
    assert data["chat_id"] is None
    assert data["model_reply"] is None
    assert data["model_id"] is None
    assert data["prompt_version"] is None
    assert data["payload"] == ""
    assert from_json(DeadLetter, to_json(DEAD_MINIMAL)).payload == b""


def test_enum_values_are_written_as_their_value():
    dead = dataclasses.replace(DEAD, stage=Stage.VALIDATE)
    data = json.loads(to_json(dead))
    assert data["stage"] == "validate"
    assert type(from_json(DeadLetter, to_json(dead)).stage) is str


def test_to_dict_and_from_dict_are_inverse():
    data = to_dict(DEAD)
    assert isinstance(data["payload"], str)
    assert from_dict(DeadLetter, data) == DEAD


def test_from_dict_ignores_unknown_keys():
    data = to_dict(TRIAGE)
    data["column_added_later"] = "x"
    assert from_dict(TriageResult, data) == TRIAGE


def test_from_dict_uses_defaults_for_missing_optional_fields():
    data = {"stage": "validate", "reason": "not_json", "detail": "x", "payload": "AAE="}
    dead = from_dict(DeadLetter, data)
    assert dead.payload == b"\x00\x01"
    assert dead.chat_id is None
    assert dead.attempt == 1


def test_utc_now_format():
    now = utc_now()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    parsed = datetime.datetime.fromisoformat(now.replace("Z", "+00:00"))
    delta = abs(datetime.datetime.now(datetime.UTC) - parsed)
    assert delta < datetime.timedelta(minutes=1)


def test_dead_letter_failed_at_defaults_to_now():
    dead = DeadLetter(stage="validate", reason="r", detail="d", payload=b"x")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", dead.failed_at)


# --- BigQuery schemas -----------------------------------------------------------------------


def by_name(schema: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {column["name"]: column for column in schema}


@pytest.mark.parametrize("cls", [TriageResult, Draft, DeadLetter])
def test_schema_has_every_field_exactly_once(cls):
    schema = bigquery_schema(cls)
    names = [column["name"] for column in schema]
    fields = [f.name for f in dataclasses.fields(cls)]
    assert names == fields
    for name in fields:
        assert names.count(name) == 1
    for column in schema:
        assert set(column) == {"name", "type", "mode"}
        assert column["mode"] in {"REQUIRED", "NULLABLE", "REPEATED"}
        assert column["type"] in {"STRING", "INTEGER", "FLOAT", "BOOLEAN", "BYTES", "TIMESTAMP"}


def test_dead_letter_schema():
    columns = by_name(bigquery_schema(DeadLetter))
    assert columns["payload"] == {"name": "payload", "type": "BYTES", "mode": "REQUIRED"}
    assert columns["chat_id"] == {"name": "chat_id", "type": "STRING", "mode": "NULLABLE"}
    assert columns["model_reply"]["mode"] == "NULLABLE"
    assert columns["model_id"]["mode"] == "NULLABLE"
    assert columns["prompt_version"]["mode"] == "NULLABLE"
    assert columns["failed_at"] == {"name": "failed_at", "type": "TIMESTAMP", "mode": "REQUIRED"}
    assert columns["attempt"] == {"name": "attempt", "type": "INTEGER", "mode": "REQUIRED"}
    assert columns["stage"] == {"name": "stage", "type": "STRING", "mode": "REQUIRED"}


@pytest.mark.parametrize("cls", [TriageResult, Draft])
def test_result_schemas(cls):
    columns = by_name(bigquery_schema(cls))
    assert columns["sentiment"] == {"name": "sentiment", "type": "INTEGER", "mode": "REQUIRED"}
    assert columns["created_at"]["type"] == "TIMESTAMP"
    assert columns["summary"] == {"name": "summary", "type": "STRING", "mode": "REQUIRED"}
    assert columns["attempt"]["type"] == "INTEGER"
    repeated = {"warnings", "similar_ids", "similar_scores"}  # lists: REPEATED columns
    assert all(c["mode"] == "REQUIRED" for n, c in columns.items() if n not in repeated)


def test_draft_schema_has_both_prompt_versions():
    columns = by_name(bigquery_schema(Draft))
    assert columns["draft"]["type"] == "STRING"
    assert columns["prompt_version"]["type"] == "STRING"
    assert columns["apology_prompt_version"]["type"] == "STRING"
    assert columns["warnings"] == {"name": "warnings", "type": "STRING", "mode": "REPEATED"}
    assert columns["similar_scores"] == {
        "name": "similar_scores",
        "type": "FLOAT",
        "mode": "REPEATED",
    }


@dataclasses.dataclass(frozen=True)
class _Scalars:
    text: str
    number: int
    ratio: float
    flag: bool
    blob: bytes
    maybe_text: str | None
    maybe_ratio: float | None = None
    created_at: str = ""


def test_schema_maps_every_scalar_type():
    assert bigquery_schema(_Scalars) == [
        {"name": "text", "type": "STRING", "mode": "REQUIRED"},
        {"name": "number", "type": "INTEGER", "mode": "REQUIRED"},
        {"name": "ratio", "type": "FLOAT", "mode": "REQUIRED"},
        {"name": "flag", "type": "BOOLEAN", "mode": "REQUIRED"},
        {"name": "blob", "type": "BYTES", "mode": "REQUIRED"},
        {"name": "maybe_text", "type": "STRING", "mode": "NULLABLE"},
        {"name": "maybe_ratio", "type": "FLOAT", "mode": "NULLABLE"},
        {"name": "created_at", "type": "TIMESTAMP", "mode": "REQUIRED"},
    ]


@dataclasses.dataclass(frozen=True)
class _Union:
    value: int | str


def test_schema_rejects_types_without_a_bigquery_type():
    # Chat.attributes is a dict: Chat is not a table row.
    with pytest.raises(TypeError, match="attributes"):
        bigquery_schema(Chat)
    with pytest.raises(TypeError, match="value"):
        bigquery_schema(_Union)
