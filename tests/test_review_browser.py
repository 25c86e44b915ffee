"""The review app in a real browser (headless Chromium) against the Pub/Sub and BigQuery
emulators: sign in, edit and approve one draft, reject another, and see that a chat carrying
a script renders as text. Then the `reviews` rows, the `approved` topic and the acks are read
back through the official clients. Screenshots go to the test's temporary directory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import uuid

import pytest

from review.auth import Reviewers, hash_password
from review.cli import ReviewServer, build_app, export_rows
from triage.demo import PROJECT
from triage.gcp import Infrastructure, ensure_infrastructure, ensure_subscription
from triage.pubsub_sink import draft_attributes
from triage.records import Draft, to_json

pytestmark = pytest.mark.emulators

XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'
PASSWORD = "correct horse battery"


def _draft(chat_id: str, chat: str, text: str, minutes_ago: int) -> Draft:
    created = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 60 * minutes_ago))
    return Draft(
        chat_id=chat_id,
        user_id="221",
        chat_message=chat,
        sentiment=-1,
        summary=f"summary of {chat_id}",
        draft=text,
        model_id="models/triage-gemma3-270m",
        prompt_version="triage-v1",
        apology_prompt_version="apology-v1",
        attempt=1,
        created_at=created,
    )


@pytest.fixture
def browser(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromium-driver are missing: run `make setup`")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def review_app(emulators, tmp_path):
    prefix = f"r{uuid.uuid4().hex[:8]}-"
    infra = Infrastructure.named(PROJECT, prefix=prefix)
    ensure_infrastructure(infra)
    from triage.gcp import publisher_client, subscriber_client

    approved_audit = f"projects/{PROJECT}/subscriptions/{prefix}approved-audit"
    subscriber = subscriber_client()
    ensure_subscription(subscriber, approved_audit, infra.approved_topic)
    publisher = publisher_client()
    drafts = [
        _draft("c1", "id 221: The fries were cold.\nid 12: So sorry!", "We are sorry.", 30),
        _draft("c2", "id 221: 피자가 늦게 왔어요.", "죄송합니다.", 20),
        _draft("c3", f"id 221: {XSS}\nid 12: hello", f"Reply {XSS}", 10),
    ]
    for d in drafts:
        publisher.publish(infra.drafts_topic, to_json(d).encode(), **draft_attributes(d)).result(
            timeout=30
        )
    args = argparse.Namespace(
        project=PROJECT,
        dataset="triage",
        prefix=prefix,
        subscription=None,
        reviews_table=None,
        approved_topic=None,
        state_dir=str(tmp_path / "state"),
        secure_cookies=False,
        host="127.0.0.1",
    )
    queue, app = build_app(args, Reviewers({"alice": hash_password(PASSWORD)}))
    deadline = time.monotonic() + 60
    while queue.store.count_waiting() < len(drafts) and time.monotonic() < deadline:
        queue.pull_once(timeout=5)
    assert queue.store.count_waiting() == len(drafts)
    server = ReviewServer(app, "127.0.0.1", 0)
    yield {
        "url": server.url.rstrip("/"),
        "infra": infra,
        "queue": queue,
        "subscriber": subscriber,
        "approved_audit": approved_audit,
    }
    server.stop()
    subscriber.close()


def _pull(subscriber, subscription: str, wait: float = 8.0) -> list:
    got, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 50}, timeout=5, retry=None
        )
        if response.received_messages:
            got += response.received_messages
            subscriber.acknowledge(
                request={
                    "subscription": subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        elif got:
            break
    return got


def test_agent_reviews_drafts_in_a_browser(browser, review_app, bq_direct, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(css: str, text: str = "") -> None:
        """Clicks that submit a form navigate: wait for the next page, never sleep."""
        located = (By.CSS_SELECTOR, css)
        WebDriverWait(browser, 30).until(
            expected_conditions.text_to_be_present_in_element(located, text)
            if text
            else expected_conditions.presence_of_element_located(located)
        )

    url = review_app["url"]
    browser.get(url + "/")
    assert "/login" in browser.current_url  # nothing without signing in
    browser.find_element(By.ID, "username").send_keys("alice")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    # The form submit navigates: wait for the queue page (a loaded machine can be slow).
    WebDriverWait(browser, 30).until(
        expected_conditions.presence_of_element_located((By.ID, "waiting"))
    )

    # The queue: oldest first, with the count and the reviewer's name.
    assert browser.find_element(By.ID, "waiting").text == "3"
    assert "alice" in browser.find_element(By.CLASS_NAME, "who").text
    ids = [
        r.get_attribute("data-draft-id")
        for r in browser.find_elements(By.CSS_SELECTOR, "tr[data-draft-id]")
    ]
    assert ids == ["c1/draft", "c2/draft", "c3/draft"]
    browser.save_screenshot(str(tmp_path / "queue.png"))

    # Edit and approve the first.
    browser.find_elements(By.CSS_SELECTOR, "button.open")[0].click()
    wait_for("#final_text")
    turns = browser.find_elements(By.CSS_SELECTOR, "#chat li .who")
    assert [t.text for t in turns] == ["id 221:", "id 12:"]  # labels shown as the chat's text
    assert "not verified" in browser.find_element(By.ID, "labels-note").text
    box = browser.find_element(By.ID, "final_text")
    assert box.get_attribute("value") == "We are sorry."
    box.clear()
    box.send_keys("We are sorry about the cold fries. A refund is on its way.")
    browser.save_screenshot(str(tmp_path / "draft.png"))
    browser.find_element(By.ID, "approve").click()
    wait_for(".flash", "c1:")
    assert "c1: approved (edited)" in browser.find_element(By.CLASS_NAME, "flash").text

    # Reject the second with a reason.
    browser.find_elements(By.CSS_SELECTOR, "button.open")[0].click()
    wait_for("#reason")
    browser.find_element(By.ID, "reason").send_keys("wrong language for this customer")
    browser.find_element(By.ID, "reject").click()
    wait_for(".flash", "c2:")
    assert "c2: rejected" in browser.find_element(By.CLASS_NAME, "flash").text
    assert browser.find_element(By.ID, "waiting").text == "1"

    # The third carries a script in the chat and in the draft: it must be inert text.
    browser.find_elements(By.CSS_SELECTOR, "button.open")[0].click()
    wait_for("#final_text")
    assert XSS in browser.find_element(By.ID, "chat").text
    assert XSS in browser.find_element(By.ID, "final_text").get_attribute("value")
    assert browser.title != "pwned"
    assert not browser.find_elements(By.CSS_SELECTOR, "#chat script, #chat img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    browser.save_screenshot(str(tmp_path / "xss.png"))
    assert (tmp_path / "queue.png").stat().st_size > 10_000

    # The dashboard reads the decisions back from the reviews table, in the background.
    deadline = time.monotonic() + 60
    while True:
        browser.get(url + "/")
        wait_for("#approved-today")
        if browser.find_element(By.ID, "approved-today").text == "1":
            break
        assert time.monotonic() < deadline, "the dashboard never counted the approval"
        time.sleep(1)
    assert browser.find_element(By.ID, "rejected-today").text == "1"
    assert "50% of 2" in browser.find_element(By.CSS_SELECTOR, ".rates").text
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    # Decisions are in BigQuery, with the signed-in reviewer.
    table = review_app["infra"].reviews_table
    rows = {
        r["chat_id"]: dict(r)
        for r in bq_direct.query(f"SELECT * FROM `{table}`").result(timeout=30)
    }
    assert set(rows) == {"c1", "c2"}
    assert rows["c1"]["decision"] == "approved" and rows["c1"]["edited"] is True
    assert rows["c1"]["final_text"].startswith("We are sorry about the cold fries.")
    assert rows["c1"]["draft"] == "We are sorry."
    assert rows["c2"]["decision"] == "rejected"
    assert rows["c2"]["reason"] == "wrong language for this customer"
    assert {r["reviewer"] for r in rows.values()} == {"alice"}
    assert all(r["seconds_to_decision"] >= 600 for r in rows.values())

    # The approved reply is on the `approved` topic, once.
    approved = _pull(review_app["subscriber"], review_app["approved_audit"])
    assert len(approved) == 1
    body = json.loads(approved[0].message.data)
    assert body["chat_id"] == "c1" and approved[0].message.attributes["draft_id"] == "c1/draft"

    # Decided drafts were acknowledged; the open one keeps its lease: none comes back.
    assert _pull(review_app["subscriber"], review_app["infra"].review_subscription, 4) == []

    # And the approvals are training examples for `triage finetune`.
    examples = export_rows(list(rows.values()))
    assert [e["chat_id"] for e in examples] == ["c1"]
    assert examples[0]["draft"].startswith("We are sorry about")
