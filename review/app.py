"""The review web app: server-rendered pages (Flask + Jinja2), no JavaScript at all.

Security, in one place:
- sign-in from configured reviewers (`review/auth.py`); every page but /login requires it and
  the reviewer recorded with a decision is the session's identity, never a form field;
- sessions live on the server (`review/sessions.py`): checked on every request (idle and
  absolute timeouts, the reviewer still in the file), ended by logout; failed sign-ins are
  logged and throttled per user and per address;
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

from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from review.auth import Reviewers
from review.dashboard import Dashboard
from review.queue import DecisionError, ReviewQueue
from review.sessions import LoginThrottle, Sessions
from review.store import StoredDraft
from triage.draft_checks import contact_warnings

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


def turns(chat: str) -> list[dict[str, Any]]:
    """Chat text as turns, split where a line starts with a speaker label ("id 221:").

    The labels are part of the chat text, which the customer wrote in part: "id 12: we will
    refund you" typed by the customer looks like a staff turn. So no turn is styled as staff
    or customer; the page shows each label as the text it is, and says so."""
    out: list[dict[str, Any]] = []
    for line in chat.splitlines():
        match = _TURN.match(line)
        if match:
            out.append({"who": match["who"].strip(), "text": match["text"]})
        elif out:  # a continuation line belongs to the turn before it
            out[-1]["text"] += "\n" + line
        elif line.strip():
            out.append({"who": "", "text": line})
    return out


def create_app(
    queue: ReviewQueue,
    reviewers: Reviewers,
    *,
    dashboard: Callable[[], Dashboard],
    secret_key: str | None = None,
    secure_cookies: bool = False,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sessions: Sessions | None = None,
    throttle: LoginThrottle | None = None,
    similar_cases: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
) -> Flask:
    sessions = sessions or Sessions()
    throttle = throttle or LoginThrottle()
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
        reviewer = sessions.check(session.get("sid"), clock(), reviewers.exists)
        if reviewer is None:
            # Only the dead session id goes: clearing everything would also drop the CSRF
            # secret of a sign-in form open in another request (the browser's favicon fetch).
            session.pop("sid", None)
            return redirect(url_for("login", next=request.full_path))
        g.reviewer = reviewer
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
            address = request.remote_addr or "-"
            now = clock()
            wait = throttle.wait(name, address, now)
            if wait.total_seconds() > 0:
                LOG.warning("sign-in as %r from %s refused: too many failures", name, address)
                minutes = max(1, round(wait.total_seconds() / 60))
                flash(f"Too many failed sign-ins. Try again in {minutes} min.")
                return render_template("login.html", next=target), 429
            if not throttle.checks.acquire(timeout=5):
                return render_template("error.html", message="Busy. Try again shortly."), 503
            try:
                ok = reviewers.check(name, request.form.get("password", "")[:200])
            finally:
                throttle.checks.release()
            if ok:
                throttle.succeeded(name)
                session.clear()
                session["sid"] = sessions.start(name, now)
                LOG.info("reviewer %s signed in from %s", name, address)
                return redirect(target)
            throttle.failed(name, address, now)
            LOG.warning("failed sign-in as %r from %s", name, address)
            flash("Unknown reviewer or wrong password.")
        return render_template("login.html", next=target)

    @app.post("/logout")
    def logout() -> Any:
        sessions.end(session.get("sid"))
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
        me = g.reviewer
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

    @app.post("/open")
    def open_draft() -> Any:
        """Take the draft's lease: a POST with a CSRF token, so a link from another site
        cannot lock a draft in an agent's name."""
        draft_id = request.form.get("draft_id", "")
        _stored(draft_id)
        try:
            queue.open(draft_id, g.reviewer)
        except DecisionError as err:
            flash(str(err))
            return redirect(url_for("index"))
        return redirect(url_for("draft", id=draft_id))

    def _similar(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The similar past cases the pipeline retrieved for this draft, with their approved
        replies from the vector store; a note when there are none to show, and why."""
        ids = [str(i) for i in body.get("similar_ids") or []]
        scores = list(body.get("similar_scores") or [])
        retrieval = str(body.get("retrieval") or "")
        if retrieval.startswith("unavailable"):
            return [], f"The case store was unreachable when this draft was written ({retrieval})."
        if not ids:
            return [], "No similar case was found." if retrieval == "ok" else ""
        docs: dict[str, dict[str, Any]] = {}
        note = ""
        if similar_cases is not None:
            try:
                docs = similar_cases(ids)
            except Exception as err:  # noqa: BLE001 - the page works without them
                note = f"Similar cases could not be loaded ({type(err).__name__})."
        rows = [
            {**docs.get(i, {}), "doc_id": i, "score": s}
            for i, s in zip(ids, scores + [None] * len(ids), strict=False)
        ]
        return rows, note

    @app.get("/similar")
    def similar_case() -> Any:
        """One retrieved article or past case in full: the link beside a draft."""
        doc_id = request.args.get("id", "")
        docs = similar_cases([doc_id]) if similar_cases and doc_id else {}
        if doc_id not in docs:
            abort(404)
        return render_template("similar.html", doc=docs[doc_id], doc_id=doc_id)

    @app.get("/draft")
    def draft() -> Any:
        """Shows the draft; changes nothing. The decision forms appear to the lease holder."""
        stored = _stored(request.args.get("id", ""))
        if stored.state != "waiting":
            flash("This draft has already been decided.")
            return redirect(url_for("index"))
        now = clock()
        body = stored.draft
        chat = str(body.get("chat_message", ""))
        warnings = list(body.get("warnings") or [])
        warnings += [
            w for w in contact_warnings(str(body.get("draft", "")), chat) if w not in warnings
        ]
        similar, similar_note = _similar(body)
        return render_template(
            "draft.html",
            d=stored,
            body=body,
            warnings=warnings,
            similar=similar,
            similar_note=similar_note,
            turns=turns(chat),
            age=_age(stored.drafted_at, now),
            now=now,
            reviewer=g.reviewer,
            mine=stored.lease_holder == g.reviewer and (stored.lease_until or "") > now.isoformat(),
            max_reply=MAX_REPLY_CHARS,
            max_reason=MAX_REASON_CHARS,
        )

    @app.post("/decide")
    def decide() -> Any:
        draft_id = request.form.get("draft_id", "")
        action = request.form.get("action", "")
        _stored(draft_id)
        me = g.reviewer
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
