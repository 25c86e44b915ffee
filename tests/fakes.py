"""Small scripted model handlers for routing tests: the thing under test is our pipeline.

They decide the reply from markers in the prompt, like a model reading the chat would, and honour
Beam's batching options so tests can pin batch sizes.
"""

from __future__ import annotations

import collections
import json
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

# How often each chat has been asked, across handler copies in this process: [flakyN] chats
# fail their first N answers (so a replay, not the in-pipeline repair, is what fixes them).
_ASKED: collections.Counter[str] = collections.Counter()
_ASKED_LOCK = threading.Lock()
_FLAKY = re.compile(r"\[flaky(\d+)\]")


def _times_asked(prompt: str) -> int:
    chat = prompt[prompt.rfind("<chat>") : prompt.rfind("</chat>")]
    with _ASKED_LOCK:
        _ASKED[chat] += 1
        return _ASKED[chat]


class ScriptedModel:
    """What load_model returns (Beam needs an object it can weak-reference)."""


class ScriptedTriageHandler(ModelHandler[str, PredictionResult, ScriptedModel]):
    """Replies by marker: [pos] 1, [neu] 0, [neg] -1, [garbage] noise, [boom] raises;
    [fixable] answers noise at first and properly when asked to repair (the repair prompt);
    [flakyN] answers noise the first N times its chat is asked.

    Raises too when a prompt exceeds `max_prompt_bytes`, so a test can prove prompts were
    shortened before they reached the model.
    """

    def __init__(self, max_prompt_bytes: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self._max_prompt_bytes = max_prompt_bytes

    def load_model(self) -> ScriptedModel:
        return ScriptedModel()

    def run_inference(
        self, batch: Sequence[str], model: ScriptedModel, inference_args: Any = None
    ) -> Iterable[PredictionResult]:
        out = []
        for prompt in batch:
            if self._max_prompt_bytes and len(prompt.encode()) > self._max_prompt_bytes:
                raise ValueError(f"prompt of {len(prompt.encode())} bytes reached the model")
            if "[boom]" in prompt:
                raise RuntimeError("simulated accelerator failure")
            first_try = "<previous_answer>" not in prompt
            flaky = _FLAKY.search(prompt)
            still_flaky = flaky is not None and _times_asked(prompt) <= int(flaky.group(1))
            if "[garbage]" in prompt or ("[fixable]" in prompt and first_try) or still_flaky:
                reply = "I think the customer is... {sentiment: maybe"
            else:
                sentiment = 1 if "[pos]" in prompt else -1 if "[neg]" in prompt else 0
                reply = (
                    "```json\n"
                    + json.dumps(
                        {"sentiment": sentiment, "summary": f"scripted summary {sentiment}"}
                    )
                    + "\n```"
                )
            out.append(PredictionResult(prompt, reply, "scripted-model"))
        return out


class ScriptedApologyHandler(ModelHandler[str, PredictionResult, ScriptedModel]):
    """Drafts an apology; [nodraft] returns only whitespace, [draftboom] raises."""

    def load_model(self) -> ScriptedModel:
        return ScriptedModel()

    def run_inference(
        self, batch: Sequence[str], model: ScriptedModel, inference_args: Any = None
    ) -> Iterable[PredictionResult]:
        out = []
        for prompt in batch:
            if "[draftboom]" in prompt:
                raise RuntimeError("simulated failure while drafting")
            reply = "  \n " if "[nodraft]" in prompt else "We are very sorry. An agent will help."
            out.append(PredictionResult(prompt, reply, "scripted-model"))
        return out
