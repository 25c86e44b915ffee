"""`make soak`: thousands of chats through the streaming pipeline on the emulators, under faults.

What it proves: every chat ends exactly once in summaries, drafts or dead letters, counted from
BigQuery and from a subscription on the drafts topic (not from the pipeline's own counters),
while BigQuery is unreachable twice, draft publishing fails for a while, and the pipeline
process is killed and started again. The model is a scripted stand-in (`tests/fakes.py`): the
pipeline, its sinks and their recovery are what is under test.

The chats: valid ones of each sentiment, invalid ones (not JSON, not UTF-8, `NaN`, missing or
empty fields), payloads just under and just over the 1 MiB limit, exact resends of earlier
chats, and chat ids reused for another chat. A resend must add nothing; a reused id must end
as a `conflicting_duplicate` dead letter (or take the place the first one did not).

The DirectRunner acknowledges a message when it pulls it, so a killed pipeline loses what it
had in flight. The recovery the README gives operators is what the soak does after the kill:
seek the subscription back (it retains acknowledged messages) to before the chats in flight,
then start again; row ids make the redelivered chats add nothing.

`python -m bench.soak --chats 10000` (the DirectRunner's reader pulls `--pull_size` messages a
bundle, 100 here, not its own 10: about 6 chats a second on 2 busy cores, not 1); the last
line is
`soak: N chats, F faults -> S summaries, D drafts, E dead letters, L lost, U duplicated`.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.tcp_proxy import TcpProxy
from triage.demo import PROJECT, local_services
from triage.gcp import PUBLISH_HOST_ENV, Infrastructure, ensure_infrastructure, ensure_subscription
from triage.records import Chat
from triage.validate import MAX_PAYLOAD_BYTES, parse_chat

__all__ = ["SoakResult", "make_messages", "run_soak"]

ROOT = Path(__file__).resolve().parent.parent
# Messages per pull (bench.soak_pipeline.pull_at_most); the DirectRunner's own is 10.
PULL_SIZE = 100
Key = tuple[str, ...]


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def key_of(payload: bytes) -> Key:
    """What a published message is, for counting: a valid chat by its id and message (a resend
    is the same chat), anything else by its bytes."""
    parsed = parse_chat(payload)
    if isinstance(parsed, Chat):
        return ("chat", parsed.chat_id, parsed.chat_message)
    return ("bytes", hashlib.sha256(payload).hexdigest())


def _chat(chat_id: str, text: str) -> bytes:
    return json.dumps(
        {"id": chat_id, "user_id": f"u{chat_id}", "chat_message": text}, ensure_ascii=False
    ).encode()


_INVALID = [
    b"{not json",
    b"\xff\xfe not utf-8",
    b'{"id": "%d", "user_id": "u", "chat_message": "hi", "score": NaN}',
    b'{"id": "%d", "user_id": "u"}',
    b'{"id": "%d", "user_id": "u", "chat_message": "   "}',
    b'[{"id": "%d"}]',
]
_TEXTS = {
    "[pos]": ["thanks, all sorted", "감사합니다, 해결됐어요", "ありがとう、助かりました"],
    "[neu]": ["what are your opening hours?", "영업시간이 어떻게 되나요?", "Horario?"],
    "[neg]": ["my order is two hours late", "피자가 차갑게 왔어요", "返金してください"],
}


def make_messages(n: int, seed: int = 7) -> list[bytes]:
    """`n` messages in publishing order (see the module doc for the mix)."""
    rng = random.Random(seed)
    valid: list[tuple[str, bytes]] = []
    out: list[bytes] = []
    for i in range(n):
        roll = rng.random()
        if valid and roll < 0.05:  # an exact resend of an earlier chat
            out.append(rng.choice(valid)[1])
        elif valid and roll < 0.06:  # an earlier id, another chat
            chat_id = rng.choice(valid)[0]
            out.append(_chat(chat_id, f"[pos] another chat under id {chat_id}, #{i}"))
        elif roll < 0.14:
            template = rng.choice(_INVALID)
            out.append(template % i if b"%d" in template else template + str(i).encode())
        elif roll < 0.143:  # just under the limit: valid
            body = _chat(f"c{i}", "[pos] ")
            out.append(_chat(f"c{i}", "[pos] " + "x" * (MAX_PAYLOAD_BYTES - len(body) - 8)))
        elif roll < 0.146:  # just over the limit
            out.append(_chat(f"c{i}", "[pos] " + "y" * MAX_PAYLOAD_BYTES))
        else:
            marker = rng.choices(["[pos]", "[neu]", "[neg]"], weights=[5, 3, 2])[0]
            chat = _chat(f"c{i}", f"{marker} {rng.choice(_TEXTS[marker])} #{i}")
            valid.append((f"c{i}", chat))
            out.append(chat)
    return out


@dataclass
class SoakResult:
    chats: int
    distinct: int
    faults: list[str]
    summaries: int = 0
    drafts: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicated: int = 0
    draft_redeliveries: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return (
            f"soak: {self.chats} chats, {len(self.faults)} faults -> {self.summaries} summaries, "
            f"{self.drafts} drafts, {self.dead_letters} dead letters, {self.lost} lost, "
            f"{self.duplicated} duplicated"
        )


class _Pipeline:
    """The pipeline process (bench/soak_pipeline.py), its peak memory read while it lives."""

    def __init__(self, infra: Infrastructure, env: dict[str, str], log: Path, pull_size: int):
        self._args = [
            sys.executable,
            "-m",
            "bench.soak_pipeline",
            f"--input_subscription={infra.input_subscription}",
            f"--summaries_table={infra.summaries_table}",
            f"--dead_letter_table={infra.dead_letter_table}",
            f"--drafts_topic={infra.drafts_topic}",
            f"--dead_letter_blobs={log.parent / 'blobs'}",
            "--write_retry_secs=120",
            f"--pull_size={pull_size}",
        ]
        self._env = env
        self._log = log
        self.peak_kb = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self._log, "ab") as log:
            self.proc = subprocess.Popen(
                self._args, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )

    def sample_memory(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
        except OSError:
            pass

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_memory()
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.sample_memory()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _count(bq: Any, infra: Infrastructure, drafts: dict[str, Any]) -> dict[str, Any]:
    """Outcomes by chat key, read from BigQuery and the drafts audit subscription."""
    by_key: collections.Counter[Key] = collections.Counter()
    summaries = list(
        bq.query(f"SELECT row_id, chat_id, chat_message FROM `{infra.summaries_table}`").result()
    )
    for row in summaries:
        by_key[("chat", row["chat_id"], row["chat_message"])] += 1
    dead = list(
        bq.query(
            f"SELECT row_id, stage, payload, payload_sha256 FROM `{infra.dead_letter_table}`"
        ).result()
    )
    for row in dead:
        by_key[_dead_key(row)] += 1
    for body in drafts.values():
        by_key[("chat", body["chat_id"], body["chat_message"])] += 1
    rows = [r["row_id"] for r in summaries] + [r["row_id"] for r in dead]
    return {
        "by_key": by_key,
        "summaries": len(summaries),
        "dead_letters": len(dead),
        "drafts": len(drafts),
        "duplicate_rows": len(rows) - len(set(rows)),
    }


IDLE_SECS = 120.0


def _rows(bq: Any, table: str) -> int:
    return next(iter(bq.query(f"SELECT COUNT(*) AS n FROM `{table}`").result()))["n"]


def _dead_key(row: Any) -> Key:
    if row["stage"] == "validate":
        return ("bytes", row["payload_sha256"])
    body = json.loads(row["payload"])  # the chat, or the row that could not be written
    chat_id = body.get("chat_id", body.get("id"))
    return ("chat", str(chat_id), body["chat_message"])


def _pull_drafts(subscription: str, into: dict[str, Any], seen: list[int]) -> None:
    """Drafts by draft id: a redelivered draft (same id) is the same draft."""
    from google.api_core import exceptions

    from triage.gcp import subscriber_client

    subscriber = subscriber_client()
    try:
        while True:
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 500},
                    timeout=5,
                    retry=None,
                )
            except exceptions.DeadlineExceeded:
                return
            if not response.received_messages:
                return
            for received in response.received_messages:
                seen[0] += 1
                into[received.message.attributes["draft_id"]] = json.loads(received.message.data)
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [r.ack_id for r in response.received_messages],
                }
            )
    finally:
        subscriber.close()


def _publish(topic: str, messages: list[bytes], seconds: float) -> None:
    """Publish at an even rate over `seconds`, as a chat system upstream would."""
    from triage.gcp import publisher_client

    publisher = publisher_client()
    start = time.monotonic()
    futures = []
    for i, payload in enumerate(messages):
        delay = start + seconds * i / len(messages) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        futures.append(publisher.publish(topic, payload))
    for future in futures:
        future.result(timeout=120)


def run_soak(
    n: int,
    *,
    fault_secs: float = 30.0,
    publish_secs: float = 120.0,
    timeout_secs: float = 1800.0,
    pull_size: int = PULL_SIZE,
    workdir: Path | None = None,
    progress: Callable[[str], None] = _say,
) -> SoakResult:
    """The soak on fresh emulators; returns what was counted (see `SoakResult.line`)."""
    import tempfile

    from triage.gcp import bigquery_client, subscriber_client

    workdir = workdir or Path(tempfile.mkdtemp(prefix="triage-soak-"))
    messages = make_messages(n)
    expected = {key_of(m) for m in messages}
    result = SoakResult(chats=n, distinct=len(expected), faults=[])
    with local_services() as (pubsub, bigquery):
        infra = Infrastructure.named(PROJECT, prefix="soak-")
        ensure_infrastructure(infra)
        audit = f"projects/{PROJECT}/subscriptions/soak-drafts-audit"
        subscriber = subscriber_client()
        ensure_subscription(subscriber, audit, infra.drafts_topic)
        bq_port = int(bigquery.endpoint.rsplit(":", 1)[1])
        bq_proxy = TcpProxy(bq_port).start()
        pub_proxy = TcpProxy(int(pubsub.host.rsplit(":", 1)[1])).start()
        env = {
            **os.environ,
            "BIGQUERY_EMULATOR_HOST": bq_proxy.endpoint,
            PUBLISH_HOST_ENV: f"127.0.0.1:{pub_proxy.port}",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        pipeline = _Pipeline(infra, env, workdir / "pipeline.log", pull_size)
        bq = bigquery_client(PROJECT)
        drafts: dict[str, Any] = {}
        delivered = [0]
        started_at = datetime.datetime.now(datetime.UTC)
        t0 = time.monotonic()
        pipeline.start()
        publisher = threading.Thread(
            target=_publish, args=(infra.input_topic, messages, publish_secs), daemon=True
        )
        publisher.start()
        progress(f"soak: {n} chats ({len(expected)} distinct) over {publish_secs:.0f} s")

        # The faults are timed from the first chat that ends: the pipeline takes a while to
        # start, and an outage before it writes anything tests nothing.
        while _rows(bq, infra.summaries_table) + _rows(bq, infra.dead_letter_table) == 0:
            if time.monotonic() - t0 > timeout_secs:
                raise RuntimeError(f"nothing ended in {timeout_secs:.0f} s: {workdir}")
            time.sleep(1)
        begun, t0 = t0, time.monotonic()
        progress(f"soak: the first chats ended after {t0 - begun:.0f} s; faults start now")

        def at(seconds: float) -> None:
            while time.monotonic() - t0 < seconds:
                pipeline.sample_memory()
                time.sleep(0.5)

        f = fault_secs
        steps: list[tuple[float, str, Callable[[], None]]] = [
            (0.5 * f, "BigQuery unreachable", bq_proxy.cut),
            (1.5 * f, "BigQuery back", bq_proxy.restore),
            (1.8 * f, "draft publishing failing", pub_proxy.cut),
            (2.8 * f, "draft publishing back", pub_proxy.restore),
            (3.1 * f, "pipeline killed", pipeline.kill),
        ]
        for when, what, action in steps:
            at(when)
            action()
            progress(f"soak: {time.monotonic() - t0:6.1f} s  {what}")
        result.faults += ["bigquery_outage", "publish_outage", "pipeline_killed"]
        # Recovery: everything the killed DirectRunner pulled was acknowledged; the retained
        # messages since the soak began are delivered again, and row ids absorb the repeats.
        from google.protobuf import timestamp_pb2

        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(started_at - datetime.timedelta(seconds=5))
        subscriber.seek(request={"subscription": infra.input_subscription, "time": stamp})
        pipeline.start()
        progress(f"soak: {time.monotonic() - t0:6.1f} s  pipeline restarted, subscription sought")
        restart = time.monotonic() - t0
        for when, what, action in [
            (restart + 1.0 * f, "BigQuery unreachable again", bq_proxy.cut),
            (restart + 2.0 * f, "BigQuery back", bq_proxy.restore),
        ]:
            at(when)
            action()
            progress(f"soak: {time.monotonic() - t0:6.1f} s  {what}")
        result.faults.append("bigquery_outage")
        publisher.join()

        # Counted cheaply while it runs (row counts: the full rows hold megabytes of chats),
        # in full once it has settled: all ended, or nothing new for IDLE_SECS.
        stable_since, last = time.monotonic(), -1
        while time.monotonic() - t0 < timeout_secs:
            pipeline.sample_memory()
            _pull_drafts(audit, drafts, delivered)
            done = _rows(bq, infra.summaries_table) + _rows(bq, infra.dead_letter_table)
            done += len(drafts)
            if done != last:
                progress(f"soak: {time.monotonic() - t0:6.1f} s  {done}/{len(expected)} ended")
                stable_since, last = time.monotonic(), done
            settled = time.monotonic() - stable_since
            if (done >= len(expected) and settled > 10) or settled > IDLE_SECS:
                break
            time.sleep(3)
        result.seconds = time.monotonic() - begun
        pipeline.stop()
        bq_proxy.cut()
        pub_proxy.cut()
        subscriber.close()
        _pull_drafts(audit, drafts, delivered)
        counted = _count(bq, infra, drafts)
        bq.close()

    by_key = counted["by_key"]
    result.summaries = counted["summaries"]
    result.drafts = counted["drafts"]
    result.dead_letters = counted["dead_letters"]
    result.lost = len(expected - set(by_key))
    result.duplicated = sum(c - 1 for c in by_key.values() if c > 1) + counted["duplicate_rows"]
    result.draft_redeliveries = delivered[0] - len(drafts)
    result.peak_rss_mb = round(pipeline.peak_kb / 1024, 1)
    result.details = {
        "lost": [repr(key)[:160] for key in sorted(expected - set(by_key))[:10]],
        "unexpected": len(set(by_key) - expected),
        "chats_per_s": round(len(expected) / result.seconds, 1),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--fault_secs", type=float, default=30.0)
    parser.add_argument("--publish_secs", type=float, default=120.0)
    parser.add_argument(
        "--pull_size", type=int, default=PULL_SIZE, help="messages per DirectRunner pull"
    )
    parser.add_argument(
        "--timeout_secs", type=float, default=None, help="give up (default: 0.5 s per chat)"
    )
    parser.add_argument("--out", default=None, help="JSON report (default: bench/results/)")
    args = parser.parse_args(argv)
    result = run_soak(
        args.chats,
        fault_secs=args.fault_secs,
        publish_secs=args.publish_secs,
        pull_size=args.pull_size,
        timeout_secs=args.timeout_secs or max(1800.0, 0.5 * args.chats),
    )
    out = Path(args.out or ROOT / "bench" / "results" / f"soak-{args.chats}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {k: v for k, v in result.__dict__.items()}
    out.write_text(json.dumps(report, indent=2) + "\n")
    _say(
        f"soak: {result.distinct} distinct chats in {result.seconds:.0f} s "
        f"({result.details['chats_per_s']} chats/s), pipeline peak RSS {result.peak_rss_mb} MB, "
        f"{result.draft_redeliveries} draft messages delivered twice (same draft_id)"
    )
    print(result.line())
    return 0 if result.lost == 0 and result.duplicated == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
