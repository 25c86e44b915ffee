"""The review web app: server-rendered pages (Flask + Jinja2), no JavaScript at all.

Security, in one place:
- sign-in from configured reviewers (`review/auth.py`); every page but /login requires it and
  the reviewer recorded with a decision is the session's identity, never a form field;
- every form carries a CSRF token (Flask-WTF), and the session cookie is HttpOnly, SameSite;
- Jinja2 autoescaping for every piece of chat and model text, and a Content-Security-Policy
  that allows no script at all, so even a missed escape could not run;
- request bodies are capped (`MAX_CONTENT_LENGTH`), and so are the edited reply and reason.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, abort, flash, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from review.auth import Reviewers
from review.dashboard import Dashboard
from review.queue import DecisionError, ReviewQueue
from review.store import StoredDraft

__all__ = ["create_app"]

LOG = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_REPLY_CHARS = 4000
MAX_REASON_CHARS = 500
AGES = {"": None, "1h": 3600, "4h": 4 * 3600, "24h": 24 * 3600}
LANGUAGES = {"ko": "Korean", "ja": "Japanese", "zh": "Chinese", "latin": "Latin script"}
_TURN = re.compile(r"^\s*(?P<who>(?:id\s+)?[\w.@-]{1,40})\s*:\s?(?P<text>.*)$")
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def _age(since: str, now: datetime) -> str:
    try:
        then = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return "?"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def turns(chat: str, customer: str) -> list[dict[str, Any]]:
    """Chat text as speaker turns ("id 221: text" lines); the customer's turns marked."""
    out: list[dict[str, Any]] = []
    for line in chat.splitlines():
        match = _TURN.match(line)
        if match:
            who = match["who"].strip()
            is_customer = who.removeprefix("id").strip() == customer
            out.append({"who": who, "text": match["text"], "customer": is_customer})
        elif out:  # a continuation line belongs to the turn before it
            out[-1]["text"] += "\n" + line
        elif line.strip():
            out.append({"who": "", "text": line, "customer": False})
    return out


def create_app(
    queue: ReviewQueue,
    reviewers: Reviewers,
    *,
    dashboard: Callable[[], Dashboard],
    secret_key: str | None = None,
    secure_cookies: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookies,
        WTF_CSRF_TIME_LIMIT=None,  # tied to the session instead; a review may take a while
    )
    CSRFProtect(app)
    app.jinja_env.globals.update(languages=LANGUAGES, ages=AGES)

    @app.after_request
    def headers(response: Any) -> Any:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.before_request
    def require_sign_in() -> Any:
        if request.endpoint in ("login", "static", "healthz"):
            return None
        if "reviewer" not in session:
            return redirect(url_for("login", next=request.full_path))
        return None

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok", 200

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        target = request.values.get("next", "/")
        if urlsplit(target).netloc or not target.startswith("/"):
            target = "/"  # only paths on this site: no open redirect
        if request.method == "POST":
            name = request.form.get("username", "")[:100]
            if reviewers.check(name, request.form.get("password", "")[:200]):
                session.clear()
                session["reviewer"] = name
                LOG.info("reviewer %s signed in", name)
                return redirect(target)
            flash("Unknown reviewer or wrong password.")
        return render_template("login.html", next=target)

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return redirect(url_for("login"))

    @app.get("/")
    def index() -> str:
        now = clock()
        language = request.args.get("language", "")
        age = request.args.get("age", "")
        language = language if language in LANGUAGES else ""
        age = age if age in AGES else ""
        older = None
        if AGES[age]:
            older = datetime.fromtimestamp(now.timestamp() - AGES[age], UTC).isoformat()
        drafts = queue.store.waiting(language=language or None, older_than=older)
        me = session["reviewer"]
        rows = [
            {
                "draft": d,
                "age": _age(d.drafted_at, now),
                "busy": d.leased_to_other(me, now),
                "mine": d.lease_holder == me and not d.leased_to_other(me, now),
            }
            for d in drafts
        ]
        return render_template(
            "queue.html",
            rows=rows,
            board=dashboard(),
            language=language,
            age=age,
            reviewer=me,
        )

    def _stored(draft_id: str) -> StoredDraft:
        stored = queue.store.get(draft_id)
        if stored is None:
            abort(404)
        return stored

    @app.get("/draft")
    def draft() -> Any:
        draft_id = request.args.get("id", "")
        _stored(draft_id)
        try:
            stored = queue.open(draft_id, session["reviewer"])
        except DecisionError as err:
            flash(str(err))
            return redirect(url_for("index"))
        body = stored.draft
        return render_template(
            "draft.html",
            d=stored,
            body=body,
            turns=turns(str(body.get("chat_message", "")), str(body.get("user_id", ""))),
            age=_age(stored.drafted_at, clock()),
            reviewer=session["reviewer"],
            max_reply=MAX_REPLY_CHARS,
            max_reason=MAX_REASON_CHARS,
        )

    @app.post("/decide")
    def decide() -> Any:
        draft_id = request.form.get("draft_id", "")
        action = request.form.get("action", "")
        _stored(draft_id)
        me = session["reviewer"]
        if action == "release":
            queue.release(draft_id, me)
            return redirect(url_for("index"))
        text = request.form.get("final_text", "")
        reason = request.form.get("reason", "")
        if len(text) > MAX_REPLY_CHARS or len(reason) > MAX_REASON_CHARS:
            flash("The reply or the reason is too long.")
            return redirect(url_for("draft", id=draft_id))
        decision = {"approve": "approved", "reject": "rejected"}.get(action)
        if decision is None:
            abort(400)
        try:
            review = queue.decide(draft_id, me, decision, final_text=text, reason=reason)
        except DecisionError as err:
            flash(str(err))
            return redirect(url_for("draft", id=draft_id))
        flash(f"Chat {review.chat_id}: {decision}" + (" (edited)" if review.edited else "") + ".")
        return redirect(url_for("index"))

    @app.errorhandler(413)
    def too_large(_: Any) -> tuple[str, int]:
        return render_template("error.html", message="That request is too large."), 413

    return app
