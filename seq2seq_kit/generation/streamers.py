"""Streamers: generate(..., streamer=...) hands each step's new tokens to `put` and calls `end` once decoding
ends (decoding.py). These turn the tokens into text as soon as it is final, with transformers' rules and
names (TextStreamer, TextIteratorStreamer, AsyncTextIteratorStreamer), so the same calls print the same pieces.

Text is final up to the last space (a word may still grow), at once after a CJK character or a newline, or whole
when it holds only letters, marks, numbers and spaces; `end` flushes the rest. One input only (batch size 1), as
in transformers. The tokenizer is any object with `decode(ids, **decode_kwargs)` (seq2seq_kit's or transformers').
"""

from __future__ import annotations

import asyncio
import queue
import unicodedata

# the code point blocks transformers' TextStreamer treats as CJK characters (each one a word of its own)
CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(char: str) -> bool:
    return any(low <= ord(char) <= high for low, high in CJK_BLOCKS)


class TextStreamer:
    """Prints the generated text as it becomes final. skip_prompt: leave out the first `put` (the decoder's
    start tokens); decode_kwargs go to tokenizer.decode (e.g. skip_special_tokens=True)."""

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs):
        try:                                  # a keyword decode refuses fails here, not at generate's first step
            tokenizer.decode([], **decode_kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}: the tokenizer's decode refuses {sorted(decode_kwargs)} ({e}); "
                            "pass only keywords its decode takes (e.g. skip_special_tokens=True)") from None
        self.tokenizer, self.skip_prompt, self.decode_kwargs = tokenizer, skip_prompt, decode_kwargs
        self.token_cache: list[int] = []      # the tokens whose text is not all printed
        self.print_len = 0                    # how much of their text is
        self.next_tokens_are_prompt = True

    def put(self, value) -> None:
        """value: tokens of one input, [n] or [1, n] (generate's calls: the decoder's first tokens [1, P], then a
        step's [1]), as transformers' TextStreamer takes them: [R, n] with R > 1 rows is refused."""
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError(f"{type(self).__name__} streams one input's tokens (batch size 1); this call has "
                             f"{value.shape[0]} rows: generate one input (num_beams 1, num_return_sequences 1)")
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.token_cache.extend(value.reshape(-1).tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith("\n"):               # a line is final: start again from its last token
            printable = text[self.print_len:]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        elif (text and is_cjk(text[-1])) or all(c.isspace() or unicodedata.category(c)[0] in "LMN"
                                                for c in text[self.print_len:]):
            printable = text[self.print_len:]
            self.print_len += len(printable)
        else:                                 # up to the last space: the word after it may still change
            printable = text[self.print_len:text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self) -> None:
        """Flush the text not yet printed, and end the stream."""
        printable = ""
        if self.token_cache:
            printable = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)[self.print_len:]
            self.token_cache, self.print_len = [], 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        """Where final text goes: stdout here, a newline at the end; subclasses override it."""
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """The final text pieces as an iterator, for generate running in another thread: `for piece in streamer`.
    timeout: seconds each wait for a piece may take (queue.Empty after it; None: no limit)."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: queue.Queue = queue.Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self) -> str:
        value = self.text_queue.get(timeout=self.timeout)
        if value is self.stop_signal:
            raise StopIteration
        return value


class AsyncTextIteratorStreamer(TextStreamer):
    """The final text pieces as an async iterator (`async for piece in streamer`), for generate running in another
    thread; make it inside the event loop that reads it. timeout: seconds each wait may take (TimeoutError)."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: asyncio.Queue = asyncio.Queue()
        self.stop_signal = None
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.loop.call_soon_threadsafe(self.text_queue.put_nowait, text)
        if stream_end:
            self.loop.call_soon_threadsafe(self.text_queue.put_nowait, self.stop_signal)

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        try:
            value = self.text_queue.get_nowait()     # a piece waiting is taken whatever the timeout (0 too)
        except asyncio.QueueEmpty:
            try:
                value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
            except asyncio.TimeoutError:             # (Python 3.10: not the builtin TimeoutError yet)
                raise TimeoutError(f"no text within the streamer's timeout ({self.timeout} s)") from None
        if value is self.stop_signal:
            raise StopAsyncIteration
        return value
