"""Positive constraints for constrained beam search (generation/constrained_beam_search.py): words the output must
contain, as transformers 4.55's generation/beam_constraints.py defines them, rule for rule.

A constraint is an object with this protocol (transformers' `Constraint`; its PhrasalConstraint and
DisjunctiveConstraint, and user subclasses of it, are taken as they are):
    seqlen                      the most tokens it takes to fulfil
    advance()                   the token id(s) that take it one step further (int, list of ints, or None)
    does_advance(token) -> bool
    update(token) -> (stepped, completed, reset)    the token generated: progress, fulfilment, or back to the start
    reset(); remaining() -> int; copy(stateful=False) -> a new constraint (with its progress when stateful)
ConstraintListState follows one hypothesis' progress through all of them: the tokens so far, fed one by one, leave
some constraints complete, at most one in progress, the others pending; its bank (complete constraints times the
longest one's length, plus the in-progress one's steps) is what the search ranks hypotheses by.

transformers' rules are kept where they surprise, since its outputs depend on them: a token that breaks an
in-progress constraint is not tried as the start of another (so "a a b" does not fulfil the phrase "a b"), and a
DisjunctiveConstraint's stateful copy shares its progress list with the original (the search's hypotheses that
advance one in-progress alternative over a branching prefix see each other's tokens).
"""

from __future__ import annotations

PROTOCOL = ("advance", "does_advance", "update", "reset", "remaining", "copy")


class PhrasalConstraint:
    """The output contains these token ids, in this order, one after another (transformers' PhrasalConstraint)."""

    def __init__(self, token_ids: list[int]):
        if not isinstance(token_ids, list) or not token_ids:
            raise ValueError(f"`token_ids` has to be a non-empty list, but is {token_ids}.")
        if any(not _is_id(t) for t in token_ids):
            raise ValueError(f"Each list in `token_ids` has to be a list of positive integers, but is {token_ids}.")
        self.token_ids = token_ids
        self.seqlen = len(token_ids)
        self.fulfilled_idx = -1                       # the last token matched so far
        self.completed = False

    def advance(self) -> int | None:
        return None if self.completed else self.token_ids[self.fulfilled_idx + 1]

    def does_advance(self, token_id: int) -> bool:
        return not self.completed and token_id == self.token_ids[self.fulfilled_idx + 1]

    def update(self, token_id: int) -> tuple[bool, bool, bool]:
        if not self.does_advance(token_id):
            self.reset()
            return False, False, True
        self.fulfilled_idx += 1
        self.completed = self.fulfilled_idx == self.seqlen - 1
        return True, self.completed, False

    def reset(self) -> None:
        self.completed, self.fulfilled_idx = False, -1

    def remaining(self) -> int:
        return self.seqlen - (self.fulfilled_idx + 1)

    def copy(self, stateful: bool = False) -> PhrasalConstraint:
        new = PhrasalConstraint(self.token_ids)
        if stateful:
            new.fulfilled_idx, new.completed = self.fulfilled_idx, self.completed
        return new


class DisjunctiveConstraint:
    """The output contains one of these words (each a list of token ids; none the start of another), as
    transformers' DisjunctiveConstraint: a trie of the words, walked token by token."""

    def __init__(self, nested_token_ids: list[list[int]]):
        if not isinstance(nested_token_ids, list) or not nested_token_ids:
            raise ValueError(f"`nested_token_ids` has to be a non-empty list, but is {nested_token_ids}.")
        if any(not isinstance(word, list) for word in nested_token_ids):
            raise ValueError(f"`nested_token_ids` has to be a list of lists, but is {nested_token_ids}.")
        if any(not _is_id(t) for word in nested_token_ids for t in word):
            raise ValueError(f"Each list in `nested_token_ids` has to be a list of positive integers, but is "
                             f"{nested_token_ids}.")
        self.trie: dict = {}                            # token -> the trie after it; {} at a word's end
        for word in nested_token_ids:
            node = self.trie
            for token in word:
                node = node.setdefault(token, {})
        if _leaves(self.trie) != len(nested_token_ids):
            raise ValueError(f"Each list in `nested_token_ids` can't be a complete subset of another list, but is "
                             f"{nested_token_ids}.")
        self.token_ids = nested_token_ids
        self.seqlen = max(len(word) for word in nested_token_ids)
        self.current_seq: list[int] = []
        self.completed = False

    def next_tokens(self) -> list[int]:
        node = self.trie
        for token in self.current_seq:
            node = node[token]
        return list(node)

    def advance(self) -> list[int] | None:
        return self.next_tokens() or None

    def does_advance(self, token_id: int) -> bool:
        return token_id in self.next_tokens()

    def update(self, token_id: int) -> tuple[bool, bool, bool]:
        stepped = self.does_advance(token_id)
        if stepped:
            self.current_seq.append(token_id)
        else:
            self.reset()
        self.completed = not self.next_tokens()
        return stepped, self.completed, not stepped

    def reset(self) -> None:
        self.completed, self.current_seq = False, []

    def remaining(self) -> int:
        return 0 if self.completed else self.seqlen - len(self.current_seq)

    def copy(self, stateful: bool = False) -> DisjunctiveConstraint:
        new = DisjunctiveConstraint(self.token_ids)
        if stateful:                              # the list itself, as transformers copies it (module docstring)
            new.current_seq, new.completed = self.current_seq, self.completed
        return new


class ConstraintListState:
    """One hypothesis' progress through every constraint (transformers' ConstraintListState)."""

    def __init__(self, constraints: list):
        self.constraints = constraints
        self.max_seqlen = max(c.seqlen for c in constraints)
        self.completed = False
        self.complete: list = []
        self.inprogress = None
        self.pending = [c.copy(stateful=False) for c in constraints]

    @classmethod
    def after(cls, constraints: list, tokens: list[int]) -> ConstraintListState:
        """The progress after these tokens (transformers' reset(token_ids) on a new state)."""
        state = cls(constraints)
        for token in tokens:
            state.add(token)
            if state.completed:
                break
        return state

    def bank(self) -> int:
        steps = self.max_seqlen - self.inprogress.remaining() if self.inprogress else 0
        return len(self.complete) * self.max_seqlen + steps

    def advance(self) -> list[int]:
        """The tokens that make progress: the in-progress constraint's next, else every pending one's first."""
        tokens = []
        for c in [self.inprogress] if self.inprogress is not None else self.pending:
            step = c.advance()
            tokens += [step] if isinstance(step, int) else step if isinstance(step, list) else []
        return tokens

    def add(self, token_id: int) -> None:
        if self.completed:
            return
        if self.inprogress is not None:
            _, complete, reset = self.inprogress.update(token_id)
            if reset:
                self.pending.append(self.inprogress.copy(stateful=False))
                self.inprogress = None
            if complete:
                self.complete.append(self.inprogress)
                self.inprogress = None
                self.completed = not self.pending
            return
        for i, c in enumerate(self.pending):
            if c.does_advance(token_id):
                stepped, complete, _ = c.update(token_id)
                if not stepped:
                    raise ValueError(f"constraint {c!r}: update(token) makes no progress though does_advance(token) "
                                     "is True")
                if complete:
                    self.complete.append(c)
                else:
                    self.inprogress = c
                del self.pending[i]
                self.completed = not self.pending and self.inprogress is None
                return

    def copy(self) -> ConstraintListState:
        """A state with this one's progress (transformers' copy(stateful=True))."""
        new = ConstraintListState(self.constraints)
        new.complete = [c.copy(stateful=True) for c in self.complete]
        if self.inprogress is not None:
            new.inprogress = self.inprogress.copy(stateful=True)
        new.pending = [c.copy() for c in self.pending]
        return new


def of(constraints: list | None, force_words_ids: list | None) -> list:
    """generate's constraints: `constraints`' objects, then one per force_words_ids entry (a list of ids: the
    phrase; a list of lists: one of those words), as transformers 4.55 builds them. check() has passed."""
    words = [DisjunctiveConstraint(w) if isinstance(w[0], list) else PhrasalConstraint(w)
             for w in force_words_ids or []]
    return [*(constraints or []), *words]


def check(constraints, force_words_ids, vocab_size: int) -> None:
    """ValueError naming what is wrong with the settings of constrained beam search."""
    if constraints is not None:
        if not isinstance(constraints, list) or not constraints:
            raise ValueError(f"`constraints` must be a non-empty list of constraints (seq2seq_kit.PhrasalConstraint, "
                             f"DisjunctiveConstraint, or transformers' Constraint objects), got {constraints!r}")
        for c in constraints:
            missing = [name for name in (*PROTOCOL, "seqlen") if not hasattr(c, name)]
            if missing:
                raise ValueError(f"`constraints` holds {c!r}, which is no constraint (it lacks {', '.join(missing)}): "
                                 "use seq2seq_kit.PhrasalConstraint / DisjunctiveConstraint, or force_words_ids")
    if force_words_ids is not None:
        if not isinstance(force_words_ids, list) or not force_words_ids or not all(
                _phrase(w) or (isinstance(w, list) and w and all(_phrase(v) for v in w)) for w in force_words_ids):
            raise ValueError(f"`force_words_ids` has to either be a `list[list[list[int]]]` or `list[list[int]]` of "
                             f"positive integers, but is {force_words_ids}.")
        for w in force_words_ids:
            if not _phrase(w):
                DisjunctiveConstraint(w)              # (a word that starts another: its ValueError)
    for name, c in [("constraints", c) for c in constraints or []] + [("force_words_ids", force_words_ids)]:
        top = max(_ids(getattr(c, "token_ids", c)), default=-1)
        if top >= vocab_size:
            raise ValueError(f"`{name}` holds token id {top}, past the vocabulary ({vocab_size} tokens)")


def _ids(value) -> list[int]:
    """The ints in a nest of lists (a constraint's token_ids, force_words_ids); none in anything else."""
    if isinstance(value, list):
        return [t for v in value for t in _ids(v)]
    return [value] if _is_id(value) else []


def _phrase(value) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_id(t) for t in value)


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _leaves(node: dict) -> int:
    return sum(_leaves(child) for child in node.values()) if node else 1
