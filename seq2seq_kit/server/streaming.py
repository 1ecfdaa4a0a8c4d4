"""One request's answer streamed as it is generated, in Text Generation Inference's server-sent events (what
huggingface_hub's InferenceClient.text_generation(..., stream=True) reads):

    data: {"index": 1, "token": {"id": 464, "text": " The", "logprob": null, "special": false},
           "generated_text": null, "details": null}
    ...
    data: {"index": 17, "token": {"id": 2, "text": "", "logprob": null, "special": true},
           "generated_text": " The tower is 324 metres tall.", "details": null}

One event per generated token, sent in the step that chose it; the last one carries generated_text, the text the
route answers without "stream" for the same body (the engine hands the stream the tokens a request ends on apart:
put_last, so no event waits for the next step to know it is not the last). A token's text is what it adds to the
text decoded so far (decoded as the answer is: special tokens skipped, so theirs is ""), "" while it completes no
character or clean-up may still rewrite what it adds (Pieces); the texts joined are generated_text. logprob is null:
the engine hands a stream its tokens, not their scores. With "details": true among the parameters the last event's
details are TGI's: {"finish_reason": "eos_token" | "stop_sequence" | "length", "generated_tokens", "input_length",
"seed"} (finished). A stream cut short (the request timeout, a drain running out, the search failing on the
request's settings) ends with one event {"error": ..., "error_type": ...} (TGI's form; app.Service.stream sends it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import torch

from ..tokenizer import clean_up_pending


class TokenQueue:
    """An engine request's streamer (generate's put / end and the engine's put_last, called from the engine's
    thread): its generated tokens as items of an asyncio queue on the server's loop, ([id], last) per step (last:
    the request ended on it), then None once the request has ended, however it ended."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items, self.prompted = loop, asyncio.Queue(), False

    def put(self, tokens: torch.Tensor) -> None:        # [1, P] the decoder's first tokens (not generated), then [1]
        if self.prompted:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (tokens.tolist(), False))
        self.prompted = True

    def put_last(self, tokens: torch.Tensor) -> None:   # [1]: the step's that ended the request
        self.loop.call_soon_threadsafe(self.items.put_nowait, (tokens.tolist(), True))

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.items.put_nowait, None)


class Pieces:
    """Each generated token's text: what it adds to decode(tokens so far), less what the next tokens may still
    change, so that the pieces never take text back: a character whose bytes are still coming (U+FFFD) and an end
    that clean-up may yet rewrite (" n" before "'t" becomes "n't"; clean_up_pending) wait for the next token (with
    or without clean-up: such ends are rare, and the wait is one token)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode, self.ids, self.sent = decode, [], ""

    def add(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        settled = text[:len(text) - clean_up_pending(text)]
        if not settled.startswith(self.sent) or text.endswith("\ufffd"):
            return ""
        piece, self.sent = settled[len(self.sent):], settled
        return piece

    def rest(self, answer: str) -> str:
        """What the answer holds past the pieces sent (the last token's U+FFFD held back, say)."""
        return answer[len(self.sent):] if answer.startswith(self.sent) else ""


async def events(tokens: TokenQueue, pieces: Pieces, special: set[int], wait: Callable[[Awaitable], Awaitable],
                 answer: Callable[[], tuple[str, dict | None]]) -> AsyncIterator[dict]:
    """The stream's events. Each token's is sent as it comes, but the one the request ended on (put_last): that one
    waits for the end, to carry generated_text and details: answer(), called once the request has ended (it raises
    where the request failed or was cancelled). wait(awaitable): its result, or an exception ending the stream (the
    caller's request timeout)."""
    held = None
    while (item := await wait(tokens.items.get())) is not None:
        step, last = item
        for i, token in enumerate(step):
            text = pieces.add(token)
            event = {"index": len(pieces.ids), "token": {"id": token, "text": text, "logprob": None,
                                                         "special": token in special},
                     "generated_text": None, "details": None}
            if last and i == len(step) - 1:
                held = event
            else:
                yield event
    text, details = answer()
    if held is None:                    # the engine ends an answered request on a put_last, one token at least
        raise RuntimeError("the request ended without its last token")
    held["token"]["text"] += pieces.rest(text)
    yield {**held, "generated_text": text, "details": details}


def finish(config, ids: list[int], prompt_len: int, stopped: bool, input_length: int, seed: int | None) -> dict:
    """TGI's details of a finished stream (ids: its output, the decoder's prompt_len first tokens included): why it
    ended (at max_length, a forced EOS there included: "length"; else its last token an EOS; else `stopped`, its
    tokens ending in one of stop_strings as its search read them; else max_time: "length"), how many tokens it
    generated, its input's length, its seed."""
    reason = ("length" if len(ids) >= config.max_length else "eos_token" if ids[-1] in (config.eos_token_id or [])
              else "stop_sequence" if stopped else "length")
    return {"finish_reason": reason, "generated_tokens": len(ids) - prompt_len, "input_length": input_length,
            "seed": seed}


def sse(event: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
