"""`triage eval`: how well a preset triages labelled chats, through the real handler and parser.

Prompts are rendered exactly as in the pipeline and replies parsed by the same parser, so the
numbers are those the service would see. Prints the share of replies that parse, sentiment
accuracy (an unparsed reply counts as wrong), a confusion matrix, and the share of negative chats
that get a non-empty apology draft. The last line is
`eval: parsed P%, sentiment accuracy A%, drafts D%`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EvalReport", "evaluate", "main"]

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
        out = [f"{self.total} chats; {self.negatives} negative", "", "confusion (rows: gold):"]
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
            f"eval: parsed {self.parsed_pct:.1f}%, sentiment accuracy {self.accuracy_pct:.1f}%, "
            f"drafts {self.drafts_pct:.1f}%",
        ]
        return out


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
) -> EvalReport:
    """Score `generate` (prompts, max new tokens -> completions) on labelled examples.

    `generate_drafts` writes the apology drafts when it differs from `generate`, as in the
    pipeline, where triage replies are constrained to the schema and drafts are free text.
    """
    from triage.parse import ParseFailure, parse_reply
    from triage.prompts import TokenBudget, byte_token_count, load_template

    budget = TokenBudget(max_prompt_tokens, count_tokens or byte_token_count)
    triage, apology = load_template("triage"), load_template("apology")
    report = EvalReport(total=len(examples))
    negatives: list[tuple[dict[str, Any], str]] = []
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
            if gold == -1:
                summary = parsed.summary if predicted is not None else example.get("summary", "")
                negatives.append((example, summary))
        if progress:
            progress(f"eval: triaged {sum(report.confusion.values())}/{report.total}")
    report.negatives = len(negatives)
    for batch in _batches(negatives, batch_size):
        prompts = [
            apology.render(
                e["chat_message"], budget, user_id=str(e.get("user_id", "customer")), summary=s
            ).text
            for e, s in batch
        ]
        drafts = (generate_drafts or generate)(prompts, apology_max_new_tokens)
        report.drafts += sum(bool(d.strip()) for d in drafts)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triage eval", description=__doc__.splitlines()[0])
    parser.add_argument("--model_preset", required=True)
    parser.add_argument("--examples", required=True, help="JSON lines with sentiment labels")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
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
    args = parser.parse_args(argv)

    from handlers.gemma import GemmaModelHandler, load_token_counter
    from triage.parse import CONSTRAINED_REPLY_CHARS, REPLY_SCHEMA

    with open(args.examples, encoding="utf-8") as f:
        examples = [json.loads(line) for line in f if line.strip()][: args.limit]
    constraint = (
        {"reply_schema": REPLY_SCHEMA, "max_reply_chars": CONSTRAINED_REPLY_CHARS}
        if args.constrained_decoding
        else {}
    )
    # One set of weights: the two handlers share the loaded model.
    triage_model = GemmaModelHandler(
        args.model_preset, max_batch_size=args.batch_size, warm_up=False, **constraint
    ).load_model()
    draft_model = GemmaModelHandler(
        args.model_preset, max_batch_size=args.batch_size, warm_up=False
    ).load_model()

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
    )
    for line in report.lines():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
