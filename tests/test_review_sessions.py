"""Sessions that can be taken back, and sign-in that cannot be brute-forced (issue 15: 4, 5)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest

from review.app import create_app
from review.auth import Reviewers, hash_password
from review.dashboard import Dashboard
from review.sessions import (
    ABSOLUTE,
    IDLE,
    MAX_FAILURES_PER_ADDRESS,
    MAX_FAILURES_PER_USER,
    WINDOW,
    LoginThrottle,
    Sessions,
)
from tests.review_fakes import draft, make_parts
from tests.test_review_app import PASSWORD, _csrf, _sign_in


@pytest.fixture
def parts(tmp_path):
    parts = make_parts(tmp_path)
    parts.sub.deliver(draft("1"), "a1")
    parts.queue.pull_once()
    return parts


def _app(parts, reviewers):
    flask_app = create_app(
        parts.queue,
        reviewers,
        dashboard=lambda: Dashboard(waiting=1),
        clock=parts.clock,
        sessions=Sessions(parts.path / "sessions.sqlite3"),
    )
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def app(parts):
    return _app(parts, Reviewers({"alice": hash_password(PASSWORD)}))


def _signed_out(response) -> bool:
    return response.status_code == 302 and "/login" in response.headers["Location"]


def test_logout_invalidates_a_captured_cookie(app):
    client = app.test_client()
    token = _sign_in(client)
    captured = client.get_cookie("session").value
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", captured)
    assert _signed_out(thief.get("/"))


def test_idle_and_absolute_timeouts(app, parts):
    client = app.test_client()
    _sign_in(client)
    parts.clock.now += IDLE - timedelta(minutes=1)
    assert client.get("/").status_code == 200  # used within the idle time: still signed in
    parts.clock.now += IDLE + timedelta(minutes=1)
    assert _signed_out(client.get("/"))
    busy = app.test_client()
    _sign_in(busy)
    start = parts.clock.now
    while parts.clock.now - start < ABSOLUTE - timedelta(minutes=30):
        parts.clock.now += timedelta(minutes=30)
        assert busy.get("/").status_code == 200
    parts.clock.now += timedelta(minutes=31)
    assert _signed_out(busy.get("/"))  # active all day, but no session lasts longer


def test_a_reviewer_removed_from_the_file_loses_access_at_once(parts, tmp_path, monkeypatch):
    users = tmp_path / "reviewers.toml"
    line = f'alice = "{hash_password(PASSWORD)}"\nbob = "{hash_password(PASSWORD)}"\n'
    users.write_text("[reviewers]\n" + line)
    reviewers = Reviewers.from_file(users)
    monkeypatch.setattr(Reviewers, "RELOAD_S", 0.0)
    app = _app(parts, reviewers)
    bob = app.test_client()
    _sign_in(bob, "bob")
    assert bob.get("/").status_code == 200
    time.sleep(0.01)  # a new modification time
    users.write_text("[reviewers]\n" + line.splitlines()[0] + "\n")
    assert _signed_out(bob.get("/"))


def _try(client, name: str, password: str):
    token = _csrf(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token})


def test_failed_sign_ins_lock_the_user_then_expire(app, parts, caplog):
    caplog.set_level(logging.WARNING, logger="review.app")
    client = app.test_client()
    for _ in range(MAX_FAILURES_PER_USER):
        assert _try(client, "alice", "guess").status_code == 200  # the form again
    assert "failed sign-in as 'alice'" in caplog.text
    locked = _try(client, "alice", PASSWORD)  # even the right password, while locked
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.get_data(True)
    parts.clock.now += WINDOW + timedelta(seconds=1)
    assert _try(client, "alice", PASSWORD).status_code == 302


def test_one_address_guessing_many_names_is_locked():
    throttle = LoginThrottle()
    from tests.review_fakes import T0

    for i in range(MAX_FAILURES_PER_ADDRESS):
        assert throttle.wait(f"user{i}", "10.0.0.9", T0) == timedelta(0)
        throttle.failed(f"user{i}", "10.0.0.9", T0)
    assert throttle.wait("someone-new", "10.0.0.9", T0) > timedelta(0)
    assert throttle.wait("someone-new", "10.0.0.10", T0) == timedelta(0)


def test_secure_cookies_whenever_the_app_is_not_on_loopback():
    from review.cli import secure_cookies

    assert secure_cookies("0.0.0.0", asked=False)
    assert secure_cookies("10.1.2.3", asked=False)
    assert not secure_cookies("127.0.0.1", asked=False)
    assert secure_cookies("127.0.0.1", asked=True)
