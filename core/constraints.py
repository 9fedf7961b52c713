"""Positive constraints for constrained beam search: a port of transformers 4.55.4's
``generation/beam_constraints.py``, which transformers 5.x no longer ships.

The port is faithful on purpose, quirks included, because constrained beam search ranks candidates by
how far they got through their constraints (``ConstraintListState.get_bank``), and any change in that
bookkeeping changes which tokens come out. The quirks kept for token parity with 4.55.4:

- ``PhrasalConstraint.reset`` sets ``fulfilled_idx = 0`` (not ``-1``): after a broken phrase the
  constraint believes its first token is already there, so ``remaining()`` is one lower.
- ``DisjunctiveConstraint.copy(stateful=True)`` shares ``current_seq`` with the original, so a copy
  advanced by one token also advances the original (which then rejects a sibling branch of the trie).

Usage: ``core.generate(model, ids, num_beams=4, constraints=[PhrasalConstraint([5, 6]),
DisjunctiveConstraint([[7], [8, 9]])])``; ``force_words_ids`` is turned into these two classes by
``core.strategies.constrained_beam.build_constraints``, as 4.55.4's ``generate`` does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Constraint(ABC):
    """A condition on the generated tokens that beam search must fulfil, advanced one token at a time.

    Subclasses must make this loop terminate::

        completed = False
        while not completed:
            _, completed, _ = constraint.update(constraint.advance())
    """

    def __init__(self):
        self.test()

    def test(self):
        """Check that repeatedly taking ``advance()`` completes the constraint (raises otherwise)."""
        counter = 0
        completed = False
        while not completed:
            if counter == 1:
                self.reset()
            advance = self.advance()
            if not self.does_advance(advance):
                raise Exception(
                    "Custom Constraint is not defined correctly. self.does_advance(self.advance()) must be true."
                )
            stepped, completed, reset = self.update(advance)
            counter += 1
            if counter > 10000:
                raise Exception("update() does not fulfill the constraint.")
        if self.remaining() != 0:
            raise Exception("Custom Constraint is not defined correctly.")

    @abstractmethod
    def advance(self):
        """The token id (int), or list of token ids, that would move the constraint one step on; None when done."""

    @abstractmethod
    def does_advance(self, token_id: int) -> bool:
        """Whether ``token_id`` would make progress (does not change the state)."""

    @abstractmethod
    def update(self, token_id: int):
        """Take ``token_id`` as generated and return ``(stepped, completed, reset)``."""

    @abstractmethod
    def reset(self):
        """Forget the progress made (a token broke the constraint)."""

    @abstractmethod
    def remaining(self) -> int:
        """How many more ``advance()`` steps complete the constraint."""

    @abstractmethod
    def copy(self, stateful: bool = False) -> "Constraint":
        """A new instance of the same constraint; with ``stateful`` it also carries the progress made."""


class PhrasalConstraint(Constraint):
    """The output must contain ``token_ids`` in this order, consecutively.

    Args:
        token_ids: a non-empty list of non-negative token ids.
    """

    def __init__(self, token_ids: list[int]):
        # 4.55.4 skips ``Constraint.__init__`` (and so ``test()``) here; so do we
        super(Constraint, self).__init__()
        if not isinstance(token_ids, list) or len(token_ids) == 0:
            raise ValueError(f"`token_ids` must be a non-empty list of token ids; got {token_ids!r}")
        if any((not isinstance(token_id, int) or token_id < 0) for token_id in token_ids):
            raise ValueError(f"`token_ids` must hold integers >= 0; got {token_ids!r}")
        self.token_ids = token_ids
        self.seqlen = len(self.token_ids)
        self.fulfilled_idx = -1  # index of the last token of the phrase already generated
        self.completed = False

    def advance(self):
        if self.completed:
            return None
        return self.token_ids[self.fulfilled_idx + 1]

    def does_advance(self, token_id: int) -> bool:
        if not isinstance(token_id, int):
            raise TypeError(f"`token_id` has to be an `int`, but is {token_id} of type {type(token_id)}")
        if self.completed:
            return False
        return token_id == self.token_ids[self.fulfilled_idx + 1]

    def update(self, token_id: int):
        if not isinstance(token_id, int):
            raise TypeError(f"`token_id` has to be an `int`, but is {token_id} of type {type(token_id)}")
        stepped = completed = reset = False
        if self.does_advance(token_id):
            self.fulfilled_idx += 1
            stepped = True
            if self.fulfilled_idx == (self.seqlen - 1):
                completed = True
            self.completed = completed
        else:
            reset = True
            self.reset()
        return stepped, completed, reset

    def reset(self):
        self.completed = False
        self.fulfilled_idx = 0  # sic: 4.55.4 resets to 0, not -1 (see the module docstring)

    def remaining(self) -> int:
        return self.seqlen - (self.fulfilled_idx + 1)

    def copy(self, stateful: bool = False) -> "PhrasalConstraint":
        new_constraint = PhrasalConstraint(self.token_ids)
        if stateful:
            new_constraint.seq_len = self.seqlen  # sic: 4.55.4 sets this unused attribute
            new_constraint.fulfilled_idx = self.fulfilled_idx
            new_constraint.completed = self.completed
        return new_constraint

    def __repr__(self) -> str:
        return f"PhrasalConstraint({self.token_ids!r})"


class DisjunctiveTrie:
    """A trie of the words in ``nested_token_ids`` (each word a list of ids); ``no_subsets`` rejects a
    word that is a prefix of another, since the constraint would complete on the shorter one."""

    def __init__(self, nested_token_ids: list[list[int]], no_subsets: bool = True):
        self.max_height = max([len(one) for one in nested_token_ids])
        root: dict = {}
        for token_ids in nested_token_ids:
            level = root
            for token_id in token_ids:
                if token_id not in level:
                    level[token_id] = {}
                level = level[token_id]
        if no_subsets and self.has_subsets(root, nested_token_ids):
            raise ValueError(
                "`nested_token_ids` must not hold a word that is a prefix of another (or the same word twice); "
                f"got {nested_token_ids!r}"
            )
        self.trie = root

    def next_tokens(self, current_seq: list[int]) -> list[int]:
        """The tokens that continue some word after ``current_seq``."""
        start = self.trie
        for current_token in current_seq:
            start = start[current_token]
        return list(start.keys())

    def reached_leaf(self, current_seq: list[int]) -> bool:
        return len(self.next_tokens(current_seq)) == 0

    def count_leaves(self, root: dict) -> int:
        next_nodes = list(root.values())
        if len(next_nodes) == 0:
            return 1
        return sum([self.count_leaves(nn) for nn in next_nodes])

    def has_subsets(self, trie: dict, nested_token_ids: list[list[int]]) -> bool:
        """Fewer leaves than words means some word is a prefix of (or equal to) another."""
        return len(nested_token_ids) != self.count_leaves(trie)


class DisjunctiveConstraint(Constraint):
    """The output must contain at least one of the words in ``nested_token_ids``.

    Args:
        nested_token_ids: a non-empty list of words, each a non-empty list of non-negative token ids.
    """

    def __init__(self, nested_token_ids: list[list[int]]):
        super(Constraint, self).__init__()
        if not isinstance(nested_token_ids, list) or len(nested_token_ids) == 0:
            raise ValueError(
                f"`nested_token_ids` must be a non-empty list of lists of token ids; got {nested_token_ids!r}")
        if any(not isinstance(token_ids, list) for token_ids in nested_token_ids):
            raise ValueError(f"`nested_token_ids` must be a list of lists of token ids; got {nested_token_ids!r}")
        if any(any((not isinstance(token_id, int) or token_id < 0) for token_id in token_ids)
               for token_ids in nested_token_ids):
            raise ValueError(f"`nested_token_ids` must hold integers >= 0; got {nested_token_ids!r}")
        self.trie = DisjunctiveTrie(nested_token_ids)
        self.token_ids = nested_token_ids
        self.seqlen = self.trie.max_height
        self.current_seq: list[int] = []
        self.completed = False

    def advance(self):
        token_list = self.trie.next_tokens(self.current_seq)
        return None if len(token_list) == 0 else token_list

    def does_advance(self, token_id: int) -> bool:
        if not isinstance(token_id, int):
            raise TypeError(f"`token_id` is supposed to be type `int`, but is {token_id} of type {type(token_id)}")
        return token_id in self.trie.next_tokens(self.current_seq)

    def update(self, token_id: int):
        if not isinstance(token_id, int):
            raise TypeError(f"`token_id` is supposed to be type `int`, but is {token_id} of type {type(token_id)}")
        stepped = reset = False
        if self.does_advance(token_id):
            self.current_seq.append(token_id)
            stepped = True
        else:
            reset = True
            self.reset()
        completed = self.trie.reached_leaf(self.current_seq)
        self.completed = completed
        return stepped, completed, reset

    def reset(self):
        self.completed = False
        self.current_seq = []

    def remaining(self) -> int:
        if self.completed:
            return 0  # a shorter word may complete it before the trie's full height
        return self.seqlen - len(self.current_seq)

    def copy(self, stateful: bool = False) -> "DisjunctiveConstraint":
        new_constraint = DisjunctiveConstraint(self.token_ids)
        if stateful:
            new_constraint.seq_len = self.seqlen  # sic, as in 4.55.4
            new_constraint.current_seq = self.current_seq  # sic: shared, not copied (see the module docstring)
            new_constraint.completed = self.completed
        return new_constraint

    def __repr__(self) -> str:
        return f"DisjunctiveConstraint({self.token_ids!r})"


class ConstraintListState:
    """Progress of one hypothesis through a list of constraints: which are complete, which one is in
    progress (at most one at a time), which are pending.

    Args:
        constraints: the constraints every returned sequence must fulfil.
    """

    def __init__(self, constraints: list[Constraint]):
        self.constraints = constraints
        self.max_seqlen = max([c.seqlen for c in constraints])  # most steps any one constraint needs
        self.n_constraints = len(constraints)
        self.completed = False
        self.init_state()

    def init_state(self):
        self.complete_constraints: list[Constraint] = []
        self.inprogress_constraint: Constraint | None = None
        self.pending_constraints = [constraint.copy(stateful=False) for constraint in self.constraints]

    def get_bank(self) -> int:
        """The bank a hypothesis is ranked in: ``max_seqlen`` per complete constraint, plus the steps
        made through the one in progress. Higher banks are kept first."""
        add = 0
        if self.inprogress_constraint:
            add += self.max_seqlen - self.inprogress_constraint.remaining()
        return (len(self.complete_constraints) * self.max_seqlen) + add

    def advance(self) -> list[int] | None:
        """The tokens that would make progress: the next token(s) of the constraint in progress if
        there is one, else the first token(s) of every pending constraint; None if there are none."""
        token_list: list[int] = []
        sources = self.pending_constraints if self.inprogress_constraint is None else [self.inprogress_constraint]
        for constraint in sources:
            advance = constraint.advance()
            if isinstance(advance, int):
                token_list.append(advance)
            elif isinstance(advance, list):
                token_list.extend(advance)
        return None if len(token_list) == 0 else token_list

    def reset(self, token_ids: list[int] | None):
        """Start over and replay ``token_ids`` (the whole sequence so far, prompt included)."""
        self.init_state()
        if token_ids is not None:
            for token in token_ids:
                self.add(token)  # completes or steps at most one constraint
                if self.completed:
                    break

    def add(self, token_id: int):
        """Take ``token_id`` as generated; returns ``(complete, stepped)``."""
        if not isinstance(token_id, int):
            raise TypeError(f"`token_id` should be an `int`, but is `{token_id}`.")
        complete, stepped = False, False
        if self.completed:
            return True, False

        if self.inprogress_constraint is not None:
            stepped, complete, reset = self.inprogress_constraint.update(token_id)
            if reset:
                # the token broke the constraint in progress: only that one goes back to pending
                self.pending_constraints.append(self.inprogress_constraint.copy(stateful=False))
                self.inprogress_constraint = None
            if complete:
                self.complete_constraints.append(self.inprogress_constraint)
                self.inprogress_constraint = None
                if len(self.pending_constraints) == 0:
                    self.completed = True
        else:
            for cidx, pending_constraint in enumerate(self.pending_constraints):
                if pending_constraint.does_advance(token_id):
                    stepped, complete, reset = pending_constraint.update(token_id)
                    if not stepped:
                        raise Exception(
                            "`constraint.update(token_id)` is not yielding incremental progress, "
                            "even though `constraint.does_advance(token_id)` is true."
                        )
                    if complete:
                        self.complete_constraints.append(pending_constraint)
                        self.inprogress_constraint = None
                    if not complete and stepped:
                        self.inprogress_constraint = pending_constraint
                    if complete or stepped:
                        self.pending_constraints = self.pending_constraints[:cidx] + self.pending_constraints[cidx + 1:]
                        if len(self.pending_constraints) == 0 and self.inprogress_constraint is None:
                            self.completed = True
                        break  # one token steps at most one constraint
        return complete, stepped

    def copy(self, stateful: bool = True) -> "ConstraintListState":
        new_state = ConstraintListState(self.constraints)  # self.constraints are never advanced: fresh state
        if stateful:
            new_state.complete_constraints = [c.copy(stateful=True) for c in self.complete_constraints]
            if self.inprogress_constraint is not None:
                new_state.inprogress_constraint = self.inprogress_constraint.copy(stateful=True)
            new_state.pending_constraints = [constraint.copy() for constraint in self.pending_constraints]
        return new_state


def contains(tokens: list[int], word: list[int]) -> bool:
    """Whether ``word`` occurs in ``tokens`` as a contiguous run."""
    n = len(word)
    return any(tokens[i:i + n] == word for i in range(len(tokens) - n + 1))


def unmet_words(tokens: list[int], force_words_ids) -> list[int]:
    """Indices of the entries of ``force_words_ids`` that ``tokens`` does not fulfil: a word (a token list) that
    does not occur, or a group (a list of token lists) none of whose words occurs. Constrained beam search returns
    such rows when too few beams fulfilled every constraint by the end."""
    missing = []
    for i, entry in enumerate(force_words_ids or []):
        words = entry if entry and isinstance(entry[0], list) else [entry]
        if not any(contains(list(tokens), list(w)) for w in words):
            missing.append(i)
    return missing
