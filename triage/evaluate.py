"""`triage eval`: how well a preset triages labelled chats, through the real handler and parser.

Prompts are rendered exactly as in the pipeline and replies parsed by the same parser, so the
numbers are those the service would see. Prints the share of replies that parse, sentiment
accuracy (an unparsed reply counts as wrong) and macro-F1, overall, per language and per domain
(when the examples say), a confusion matrix, and for the dissatisfied chats the apology drafts'
checks (triage/draft_checks.py). The last two lines are
`eval: parsed P%, sentiment accuracy A%, drafts D%` and
`drafts: in the chat's language L%, with a number not in the chat N%`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from triage.options import add_similar_arguments
from triage.retrieval.context import context_for_prompt

if TYPE_CHECKING:
    from triage.retrieval.context import Similar

__all__ = ["EvalReport", "evaluate", "main", "read_jsonl"]

LABELS = (1, 0, -1)


@dataclass
class EvalReport:
    total: int = 0
    parsed: int = 0
    correct: int = 0
    negatives: int = 0
    drafts: int = 0
    # confusion[(gold, predicted)], predicted None when the reply did not parse
    confusion: dict[tuple[int, int | None], int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    # One row per chat: id, language, domain, gold, predicted (None: unparsed), and for the
    # dissatisfied chats the draft and its checks.
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def checked_drafts(self) -> list[dict[str, Any]]:
        return self.drafts_of()

    def drafts_of(self, variant: str = "") -> list[dict[str, Any]]:
        """The checked drafts without retrieval (""), or of a variant such as "retrieval"."""
        found = (r.get(variant) if variant else r for r in self.rows)
        return [d for d in found if d and d.get("draft")]

    def _draft_pct(self, failed: str, variant: str = "") -> float:
        drafts = self.drafts_of(variant)
        return self._pct(sum(bool(r[failed]) for r in drafts), len(drafts))

    @property
    def language_match_pct(self) -> float:
        drafts = self.checked_drafts
        return self._pct(sum(r["draft_language_ok"] for r in drafts), len(drafts))

    def _prescribed(self, variant: str, language: str | None = None) -> tuple[int, int]:
        """(drafts offering the prescribed remedy, chats a policy covers)."""
        rows = [r for r in self.rows if language in (None, r.get("language"))]
        found = [(r.get(variant) if variant else r) or {} for r in rows]
        covered = [d for d in found if d.get("prescribed") is not None]
        return sum(bool(d["prescribed"]) for d in covered), len(covered)

    def _remedy_lines(self) -> list[str]:
        """Drafts without and, when measured, with retrieval: the issue-16 comparison."""
        variants = [""] + (["retrieval"] if self.drafts_of("retrieval") else [])
        covered = self._prescribed("")[1]
        if not covered and len(variants) == 1:
            return []
        header = "without retrieval" + ("  with retrieval" if len(variants) > 1 else "")
        out = ["", f"drafts{'':<42}{header}"]
        checks = (
            ("in the chat's language", lambda v: self._draft_pct("draft_language_ok", v)),
            (
                "with a number in neither chat nor context",
                lambda v: self._draft_pct("numbers_not_in_chat", v),
            ),
            (
                "with a remedy in neither chat nor context",
                lambda v: self._draft_pct("remedies_not_in_chat", v),
            ),
            (
                f"offering the prescribed remedy ({covered} chats)",
                lambda v: self._pct(*self._prescribed(v)),
            ),
        )
        for name, value in checks:
            out.append(f"  {name:<46}" + "".join(f"{value(v):>16.1f}%" for v in variants))
        languages = sorted({str(r["language"]) for r in self.rows if r.get("language")})
        per_language = []
        for language in languages:
            counts = [self._prescribed(v, language) for v in variants]
            if counts[0][1]:
                per_language.append(f"{language} " + " | ".join(f"{h}/{n}" for h, n in counts))
        if per_language:
            out.append("    prescribed remedy by language: " + ", ".join(per_language))
        return out

    @property
    def invented_number_pct(self) -> float:
        return self._draft_pct("numbers_not_in_chat")

    @property
    def invented_remedy_pct(self) -> float:
        return self._draft_pct("remedies_not_in_chat")

    def macro_f1(self, rows: Sequence[dict[str, Any]] | None = None) -> float:
        """Mean F1 over the three labels (unparsed counts as wrong): accuracy hides a model
        that never says -1 when most chats are fine."""
        rows = self.rows if rows is None else rows
        scores = []
        for label in LABELS:
            tp = sum(r["gold"] == label and r["predicted"] == label for r in rows)
            fp = sum(r["gold"] != label and r["predicted"] == label for r in rows)
            fn = sum(r["gold"] == label and r["predicted"] != label for r in rows)
            scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return 100.0 * sum(scores) / len(scores)

    def _breakdown(self, key: str) -> list[str]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in self.rows:
            if r.get(key):
                groups.setdefault(str(r[key]), []).append(r)
        if len(groups) < 2:
            return []
        out = ["", f"by {key}: {'':>14} n  accuracy  macro-F1  drafts in language"]
        for name, rows in sorted(groups.items()):
            accuracy = self._pct(sum(r["gold"] == r["predicted"] for r in rows), len(rows))
            drafts = [r for r in rows if r.get("draft")]
            language = self._pct(sum(r["draft_language_ok"] for r in drafts), len(drafts))
            out.append(
                f"  {name:<24}{len(rows):>3}  {accuracy:>7.1f}%  {self.macro_f1(rows):>7.1f}%"
                + (f"  {language:>7.1f}%" if drafts else "")
            )
        return out

    @staticmethod
    def _pct(part: int, whole: int) -> float:
        return 100.0 * part / whole if whole else 0.0

    @property
    def parsed_pct(self) -> float:
        return self._pct(self.parsed, self.total)

    @property
    def accuracy_pct(self) -> float:
        return self._pct(self.correct, self.total)

    @property
    def drafts_pct(self) -> float:
        return self._pct(self.drafts, self.negatives)

    def lines(self) -> list[str]:
        out = [
            f"{self.total} chats; {self.negatives} negative; macro-F1 {self.macro_f1():.1f}%",
            *self._breakdown("language"),
            *self._breakdown("domain"),
            "",
            "confusion (rows: gold):",
        ]
        out.append(
            "            " + "".join(f"{p:>9}" for p in ("pred 1", "pred 0", "pred -1", "unparsed"))
        )
        for gold in LABELS:
            cells = [self.confusion.get((gold, p), 0) for p in (*LABELS, None)]
            out.append(f"  gold {gold:>2}  " + "".join(f"{c:>9}" for c in cells))
        if self.failures:
            out += [
                "",
                "parse failures: "
                + ", ".join(f"{k} {v}" for k, v in sorted(self.failures.items())),
            ]
        out += [
            "",
            f"drafts with a refund, credit or compensation the chat never mentions: "
            f"{self.invented_remedy_pct:.1f}%",
            *self._remedy_lines(),
            f"eval: parsed {self.parsed_pct:.1f}%, sentiment accuracy {self.accuracy_pct:.1f}%, "
            f"drafts {self.drafts_pct:.1f}%",
            f"drafts: in the chat's language {self.language_match_pct:.1f}%, "
            f"with a number not in the chat {self.invented_number_pct:.1f}%",
        ]
        return out


def _checked_draft(
    draft: str, example: dict[str, Any], grounding: str, terms: list[str] | None
) -> dict[str, Any]:
    """A draft and what the checks found; `prescribed` is None when no policy fits the chat."""
    from triage.draft_checks import check_draft, offers_remedy

    check = check_draft(draft, example["chat_message"], example.get("language"), grounding)
    return {
        "draft": draft,
        "draft_language": check.language,
        "draft_language_ok": check.language_ok,
        "numbers_not_in_chat": list(check.numbers_not_in_chat),
        "remedies_not_in_chat": list(check.remedies_not_in_chat),
        "prescribed": offers_remedy(draft, terms) if terms else None,
    }


def _batches(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def evaluate(
    examples: Sequence[dict[str, Any]],
    generate: Callable[[list[str], int], list[str]],
    *,
    count_tokens: Callable[[str], int] | None = None,
    max_prompt_tokens: int = 1024,
    max_new_tokens: int = 256,
    apology_max_new_tokens: int = 256,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
    generate_drafts: Callable[[list[str], int], list[str]] | None = None,
    prompt_versions: dict[str, str] | None = None,
    similar_for: Callable[[list[str]], list[tuple[Similar, ...]]] | None = None,
    retrieval_prompt: str | None = None,
    remedy_terms: dict[str, list[str]] | None = None,
) -> EvalReport:
    """Score `generate` (prompts, max new tokens -> completions) on labelled examples.

    `generate_drafts` writes the apology drafts when it differs from `generate`, as in the
    pipeline, where triage replies are constrained to the schema and drafts are free text.
    With `similar_for` (chat texts -> retrieved cases) every dissatisfied chat is drafted a
    second time, on `retrieval_prompt` (the newest apology template when None) with what was
    retrieved, so the two columns compare the same chats. `remedy_terms` (chat id -> words)
    says whether each draft offers the remedy the matching policy prescribes.
    """
    from triage.parse import ParseFailure, parse_reply
    from triage.prompts import TokenBudget, byte_token_count, load_template

    budget = TokenBudget(max_prompt_tokens, count_tokens or byte_token_count)
    versions = prompt_versions or {}
    triage = load_template("triage", versions.get("triage"))
    apology = load_template("apology", versions.get("apology"))
    report = EvalReport(total=len(examples))
    negatives: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
    for batch in _batches(examples, batch_size):
        prompts = [
            triage.render(e["chat_message"], budget, user_id=str(e.get("user_id", "customer"))).text
            for e in batch
        ]
        for example, prompt, reply in zip(
            batch, prompts, generate(prompts, max_new_tokens), strict=True
        ):
            gold = int(example["sentiment"])
            parsed = parse_reply(reply, prompt=prompt)
            predicted = None if isinstance(parsed, ParseFailure) else parsed.sentiment
            if isinstance(parsed, ParseFailure):
                report.failures[parsed.reason] = report.failures.get(parsed.reason, 0) + 1
            else:
                report.parsed += 1
                report.correct += predicted == gold
            report.confusion[(gold, predicted)] = report.confusion.get((gold, predicted), 0) + 1
            row = {
                "id": example.get("id"),
                "language": example.get("language"),
                "domain": example.get("domain"),
                "gold": gold,
                "predicted": predicted,
                "reply": reply,
            }
            report.rows.append(row)
            if gold == -1:
                summary = parsed.summary if predicted is not None else example.get("summary", "")
                negatives.append((example, summary, row))
        if progress:
            progress(f"eval: triaged {sum(report.confusion.values())}/{report.total}")
    report.negatives = len(negatives)
    variants = [("", apology, None)]
    if similar_for is not None:
        variants.append(("retrieval", load_template("apology", retrieval_prompt), similar_for))
    for variant, template, find in variants:
        for batch in _batches(negatives, batch_size):
            found = find([e["chat_message"] for e, _, _ in batch]) if find else [()] * len(batch)
            contexts = [context_for_prompt(similar) for similar in found]
            prompts = [
                template.render(
                    e["chat_message"],
                    budget,
                    user_id=str(e.get("user_id", "customer")),
                    summary=s,
                    similar=context,
                ).text
                for (e, s, _), context in zip(batch, contexts, strict=True)
            ]
            drafts = (generate_drafts or generate)(prompts, apology_max_new_tokens)
            for (example, _, row), draft, similar, context in zip(
                batch, drafts, found, contexts, strict=True
            ):
                checked = _checked_draft(
                    draft, example, context if similar else "", (remedy_terms or {}).get(row["id"])
                )
                if variant:
                    row[variant] = {**checked, "similar_ids": [i.doc_id for i in similar]}
                else:
                    report.drafts += bool(draft.strip())
                    row.update(checked)
            if progress:
                done = sum(bool(r.get(variant) if variant else r.get("draft")) for r in report.rows)
                label = f" with {variant}" if variant else ""
                progress(f"eval: drafted{label} {done}/{len(negatives)}")
    return report


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """One dict per non-blank line of a JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model_preset", required=True)
    parser.add_argument("--examples", required=True, help="JSON lines with sentiment labels")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--details", default=None, help="write one JSON line per chat here")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--apology_max_new_tokens", type=int, default=256)
    parser.add_argument("--max_prompt_tokens", type=int, default=1024)
    parser.add_argument(
        "--no_constrained_decoding",
        dest="constrained_decoding",
        action="store_false",
        help="free-text triage replies (the pipeline's --no_constrained_decoding)",
    )
    parser.add_argument(
        "--topics",
        default=None,
        help="JSON lines (id, remedy_terms): whether each draft offers the prescribed remedy",
    )
    parser.add_argument(
        "--retrieval_prompt_version",
        default=None,
        help="apology template for the drafts with retrieval (default: the newest)",
    )
    add_similar_arguments(parser)  # with --vector_store: each draft again, with retrieval
    args = parser.parse_args(argv)

    from handlers.gemma import GemmaModelHandler, load_token_counter
    from triage.parse import decoding_constraints
    from triage.pipeline import similar_settings
    from triage.prompts import prompt_version
    from triage.retrieval.similar import look_up

    examples = read_jsonl(args.examples)[: args.limit]
    remedy_terms = (
        {str(t["id"]): list(t.get("remedy_terms") or ()) for t in read_jsonl(args.topics)}
        if args.topics
        else None
    )
    settings = similar_settings(args)
    triage_constraint, draft_constraint = decoding_constraints(args.constrained_decoding)
    # One set of weights: the two handlers share the loaded model.
    triage_model = GemmaModelHandler(
        args.model_preset, max_batch_size=args.batch_size, warm_up=False, **triage_constraint
    ).load_model()
    draft_model = GemmaModelHandler(
        args.model_preset, max_batch_size=args.batch_size, warm_up=False, **draft_constraint
    ).load_model()
    versions = {
        name: prompt_version(name, None, args.model_preset) for name in ("triage", "apology")
    }

    def generate(prompts: list[str], max_new_tokens: int) -> list[str]:
        return [text for text, _, _ in triage_model.generate(prompts, max_new_tokens)]

    def generate_drafts(prompts: list[str], max_new_tokens: int) -> list[str]:
        return [text for text, _, _ in draft_model.generate(prompts, max_new_tokens)]

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    report = evaluate(
        examples,
        generate,
        count_tokens=load_token_counter(args.model_preset),
        max_prompt_tokens=args.max_prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        apology_max_new_tokens=args.apology_max_new_tokens,
        batch_size=args.batch_size,
        progress=progress,
        generate_drafts=generate_drafts,
        prompt_versions={k: v for k, v in versions.items() if v},
        similar_for=(lambda texts: look_up(settings, texts)) if settings else None,
        retrieval_prompt=args.retrieval_prompt_version,
        remedy_terms=remedy_terms,
    )
    if args.details:
        with open(args.details, "w", encoding="utf-8") as out:
            for row in report.rows:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
