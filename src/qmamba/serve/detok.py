"""Token ids to the text a client may see, piece by piece as they come.

    text = TextStream(tokenizer, stops=["<|endoftext|>", "\\n\\n"])
    for token in tokens: send(text.push(token))     # "" while nothing new can be shown yet
    send(text.finish())                             # the rest; text.stopped: a stop string ended the answer

Invariants (tests/serve/test_detok.py):
- the pieces joined equal the whole answer decoded at once, cut before the first stop string and stripped of
  surrounding whitespace, as ``Pipeline.chat`` returns it;
- a piece never ends inside a multi-byte character (text decoded so far that ends in U+FFFD waits for the rest);
- a piece never holds a stop string or any part of one: text that could be the start of a stop string waits
  until it is known not to be one; nothing after a stop string is ever shown;
- whitespace at either end of the answer is never sent (trailing whitespace waits for what follows it).

Decoding is incremental, as vLLM's detokenizer does it: each step decodes only the tokens since a recent offset
(with a few tokens before them as context, so a tokenizer's spaces between words come out right), not the
whole answer again.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    def __init__(self, tokenizer, stops: Sequence[str] = (), skip_special_tokens: bool = True):
        self.tokenizer, self.stops, self.skip = tokenizer, [s for s in stops if s], skip_special_tokens
        self.ids: list[int] = []
        self.prefix = self.read = 0  # ids[prefix:read] decoded already (the context), ids[read:] not yet
        self.pending = ""  # decoded, not yet shown
        self.shown = ""  # every piece returned so far, joined
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the new text that can be shown now ('' if none)."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        delta = self._decode_new(final=False)
        if not delta:
            return ""
        self.pending += delta
        return self._release(final=False)

    def finish(self) -> str:
        """The answer ended: the text still held back (a stop string's start that never completed; an
        incomplete character as the tokenizer decodes it), trailing whitespace dropped."""
        if not self.stopped:
            self.pending += self._decode_new(final=True)
        return self._release(final=True)

    def _decode_new(self, final: bool) -> str:
        context = self._decode(self.ids[self.prefix:self.read])
        text = self._decode(self.ids[self.prefix:])
        if len(text) <= len(context) or (text.endswith("\ufffd") and not final):
            return ""  # nothing new yet, or an incomplete multi-byte character: wait for the rest
        self.prefix, self.read = self.read, len(self.ids)
        return text[len(context):]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip) if ids else ""

    def _release(self, final: bool) -> str:
        """Move what is safe to show from ``pending`` to the caller."""
        text = self.pending
        hits = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if hits:
            cut, self.stopped, final = min(hits), True, True
        else:
            cut = len(text) if final else len(text) - self._stop_prefix_length(text)
        if not self.shown:  # the answer's leading whitespace is never shown
            lead = len(text[:cut]) - len(text[:cut].lstrip())
            text, cut = text[lead:], cut - lead
        out = text[:cut].rstrip()  # trailing whitespace waits for what follows it (or is dropped at the end)
        self.pending = "" if final else text[len(out):]
        self.shown += out
        return out

    def _stop_prefix_length(self, text: str) -> int:
        """The length of the longest end of ``text`` that is the start of a stop string."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
