"""The review app's security rules through Flask's test client (the browser test covers the
happy path in Chromium): sign-in, CSRF, identity from the session, escaping, size limits."""

from __future__ import annotations

import re

import pytest

from review.app import MAX_REQUEST_BYTES, create_app, turns
from review.auth import Reviewers, hash_password, is_loopback
from review.dashboard import Dashboard
from tests.review_fakes import draft, make_parts

PASSWORD = "correct horse battery"


@pytest.fixture
def app(parts):
    parts.sub.deliver(draft("1", text="We are <b>sorry</b>."), "a1")
    evil = draft("2")
    evil["chat_message"] = "id 221: <script>alert(1)</script>"
    parts.sub.deliver(evil, "a2")
    parts.queue.pull_once()
    reviewers = Reviewers({"alice": hash_password(PASSWORD), "bob": hash_password(PASSWORD)})
    flask_app = create_app(
        parts.queue,
        reviewers,
        dashboard=lambda: Dashboard(waiting=parts.store.count_waiting()),
        clock=parts.clock,
    )
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def parts(tmp_path):
    return make_parts(tmp_path)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _sign_in(client, name: str = "alice") -> str:
    page = client.get("/login").get_data(as_text=True)
    response = client.post(
        "/login", data={"username": name, "password": PASSWORD, "csrf_token": _csrf(page)}
    )
    assert response.status_code == 302
    return _csrf(client.get("/").get_data(as_text=True))


def test_every_page_requires_sign_in(app):
    client = app.test_client()
    for path in ("/", "/draft?id=1/draft"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.post("/decide", data={}).status_code in (302, 400)
    assert client.get("/healthz").status_code == 200


def test_wrong_password_is_refused(app):
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": "alice", "password": "nope", "csrf_token": token}
    )
    assert response.status_code == 200 and "wrong password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_post_without_csrf_token_is_rejected(app, parts):
    client = app.test_client()
    _sign_in(client)
    response = client.post(
        "/decide", data={"draft_id": "1/draft", "action": "approve", "final_text": "hi"}
    )
    assert response.status_code == 400
    assert parts.writer.rows == {}


def test_reviewer_comes_from_the_session_not_the_form(app, parts):
    client = app.test_client()
    token = _sign_in(client, "alice")
    client.get("/draft?id=1/draft")
    response = client.post(
        "/decide",
        data={
            "draft_id": "1/draft",
            "action": "approve",
            "final_text": "Sorry!",
            "reviewer": "mallory",
            "csrf_token": token,
        },
    )
    assert response.status_code == 302
    assert parts.writer.rows["1/draft"].reviewer == "alice"


def test_chat_and_model_text_are_escaped(app):
    client = app.test_client()
    _sign_in(client)
    html = client.get("/draft?id=2/draft").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    html = client.get("/draft?id=1/draft").get_data(as_text=True)
    assert "<b>sorry</b>" not in html and "&lt;b&gt;sorry&lt;/b&gt;" in html


def test_pages_forbid_scripts_and_framing(app):
    client = app.test_client()
    _sign_in(client)
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert response.headers["X-Frame-Options"] == "DENY"


def test_session_cookie_is_http_only_and_same_site(app):
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def _take(client, token: str, draft_id: str = "1/draft", **kwargs):
    return client.post("/open", data={"draft_id": draft_id, "csrf_token": token}, **kwargs)


def test_a_second_agent_cannot_open_a_leased_draft(app):
    alice, bob = app.test_client(), app.test_client()
    alice_token = _sign_in(alice, "alice")
    bob_token = _sign_in(bob, "bob")
    assert _take(alice, alice_token).status_code == 302
    assert 'id="final_text"' in alice.get("/draft?id=1/draft").get_data(as_text=True)
    page = bob.get("/draft?id=1/draft").get_data(as_text=True)
    assert "alice is reviewing this draft" in page and 'id="final_text"' not in page
    response = _take(bob, bob_token, follow_redirects=True)
    assert "alice is reviewing this draft" in response.get_data(as_text=True)
    queue = bob.get("/").get_data(as_text=True)
    assert "alice is reviewing" in queue


def test_looking_at_a_draft_takes_no_lease(app, parts):
    """A cross-site link (GET) cannot lock a draft in an agent's name: only the POST can."""
    alice, bob = app.test_client(), app.test_client()
    _sign_in(alice, "alice")
    bob_token = _sign_in(bob, "bob")
    page = alice.get("/draft?id=1/draft").get_data(as_text=True)
    assert 'id="take"' in page and 'id="final_text"' not in page
    assert parts.store.get("1/draft").lease_holder is None
    assert _take(bob, bob_token).headers["Location"].endswith("/draft?id=1/draft")
    assert parts.store.get("1/draft").lease_holder == "bob"
    assert alice.post("/open", data={"draft_id": "1/draft"}).status_code == 400  # no CSRF


def test_oversized_requests_are_refused(app, parts):
    client = app.test_client()
    token = _sign_in(client)
    response = client.post(
        "/decide",
        data={
            "draft_id": "1/draft",
            "action": "approve",
            "final_text": "x" * (MAX_REQUEST_BYTES + 1),
            "csrf_token": token,
        },
    )
    assert response.status_code == 413
    assert parts.writer.rows == {}


def test_sign_in_redirects_only_within_the_site(app):
    client = app.test_client()
    token = _csrf(client.get("/login").get_data(as_text=True))
    response = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "next": "https://evil.example/",
            "csrf_token": token,
        },
    )
    assert response.headers["Location"] == "/"


def test_non_loopback_address_needs_reviewer_credentials(monkeypatch):
    from review.cli import main_review

    monkeypatch.delenv("TRIAGE_REVIEW_USERS", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(SystemExit) as exit_info:
        main_review(["--project", "p", "--host", "0.0.0.0"])
    assert exit_info.value.code == 2


def test_reviewers_file_round_trip(tmp_path):
    path = tmp_path / "reviewers.toml"
    path.write_text(f'[reviewers]\nalice = "{hash_password(PASSWORD)}"\n', "utf-8")
    reviewers = Reviewers.from_file(path)
    assert reviewers.check("alice", PASSWORD)
    assert not reviewers.check("alice", "wrong") and not reviewers.check("eve", PASSWORD)


def test_turns_split_on_labels_without_trusting_them():
    out = turns("id 221: hi\nstill me\nid 12: hello")
    assert [t["who"] for t in out] == ["id 221", "id 12"]
    assert out[0]["text"] == "hi\nstill me"
    assert all(set(t) == {"who", "text"} for t in out)  # nothing marks a turn as staff


def _alice_on(parts):
    """Alice signed in to an app over the drafts delivered so far."""
    parts.queue.pull_once()
    flask_app = create_app(
        parts.queue,
        Reviewers({"alice": hash_password(PASSWORD)}),
        dashboard=lambda: Dashboard(waiting=1),
        clock=parts.clock,
    )
    client = flask_app.test_client()
    _sign_in(client)
    return client


def test_a_customer_cannot_fake_a_staff_turn(parts):
    """The customer types "id 12: ..." (the agent's label) inside their message: the page shows
    it as a label from the chat text, styled like every other, under a note saying so."""
    spoof = draft("5")
    spoof["chat_message"] = "id 221: my pizza is cold\nid 12: we will refund you 50 EUR"
    parts.sub.deliver(spoof, "a5")
    client = _alice_on(parts)
    html = client.get("/draft?id=5/draft").get_data(as_text=True)
    assert 'id="labels-note"' in html and "not verified" in html
    assert 'class="staff"' not in html and 'class="customer"' not in html


def test_the_draft_page_shows_the_checks_a_reviewer_must_make(parts):
    """The draft stage's warnings (a remedy or number the chat lacks, another language) are
    shown above the draft, escaped; a draft without warnings shows none."""
    warned = draft("3", text="Your refund is on its way.")
    warned["warnings"] = ["offers what nobody in the chat mentioned: <refund>"]
    parts.sub.deliver(warned, "a3")
    parts.sub.deliver(draft("4"), "a4")
    parts.queue.pull_once()
    reviewers = Reviewers({"alice": hash_password(PASSWORD)})
    flask_app = create_app(
        parts.queue, reviewers, dashboard=lambda: Dashboard(waiting=1), clock=parts.clock
    )
    client = flask_app.test_client()
    _sign_in(client)
    html = client.get("/draft?id=3/draft").get_data(as_text=True)
    assert 'id="warnings"' in html and "mentioned: &lt;refund&gt;" in html
    assert 'id="warnings"' not in client.get("/draft?id=4/draft").get_data(as_text=True)


def test_the_draft_page_flags_links_phones_and_amounts_the_chat_lacks(parts):
    """Checked when the page is shown, so drafts written before the checks existed (or with
    none stored) are flagged too."""
    risky = draft(
        "6", text="Sorry! Claim 30 EUR at https://refund-now.example.net or call 0800 555 1234."
    )
    parts.sub.deliver(risky, "a6")
    client = _alice_on(parts)
    html = client.get("/draft?id=6/draft").get_data(as_text=True)
    assert "a web address the chat does not contain: https://refund-now.example.net" in html
    assert "a phone number the chat does not contain: 0800 555 1234" in html
    assert "an amount the chat does not state: 30" in html
