"""Constrained beam search: `force_words_ids` / `constraints` (words the output must contain), token-exact with
transformers 4.55's `_constrained_beam_search` and ConstrainedBeamSearchScorer (the last release that ran it itself;
transformers 5 points at the Hub's transformers-community/constrained-beam-search, remote code).

It is 4.55's beam search loop with one group (generation/group_beam_search.py: the processors, the candidates, the
hypotheses, the stop) and these rules of the scorer, read off transformers 4.55.4 (generation/beam_search.py):

Hypotheses. An EOS candidate ranked within the first num_beams becomes a hypothesis only if its beam meets every
  constraint (a fresh ConstraintListState fed the beam's tokens, prompt included: generation/constraints.py).
Banks. Per input, after the usual choice of num_beams next beams: each chosen beam's progress (its bank), plus, for
  each of the input's running beams that has not met every constraint, the beams that add one of its state's
  advance() tokens (score: that token's accumulated score; progress: the state copied, then the token added), unless
  that sequence is among those already listed. All of them sorted by bank * 100 + score, descending; then the best
  of each bank before the second best of any (a stable sort by rank within the bank); the first num_beams are the
  next beams.
Done. As 4.55's beam search (the step's best candidate score before the banks).
Output. An unfinished input's running beams that meet every constraint become hypotheses; where fewer than
  num_return_sequences do, every other running beam as well. `scores` (output_scores) are the processed log-probs
  plus the beam scores (what 4.55's constrained search recorded; its beam search recorded the log-probs alone).

Where seq2seq_kit differs, on purpose (tokens and sequences_scores unaffected): a finished input's rows continue from
  their own rows, where 4.55 continues them from the batch's first row, so with more than one input their recorded
  scores differ; running beams returned without meeting the constraints keep their beam_indices (4.55 gives them
  none, and fails making the output's with output_scores). Eager only, as group beam search.
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .constraints import ConstraintListState, of
from .group_beam_search import GroupBeamSearch


def runs(cfg: GenerationConfig) -> bool:
    """Whether resolved settings run constrained beam search (config checks that num_beams > 1 then)."""
    return cfg.constraints is not None or cfg.force_words_ids is not None


class ConstrainedBeamSearch(GroupBeamSearch):
    """generate's search with force_words_ids / constraints (module docstring): one group of num_beams."""

    records_totals = True

    def __init__(self, cfg: GenerationConfig, processors: list, prompt: torch.Tensor, device: torch.device):
        super().__init__(cfg, processors, prompt, device)
        self.constraints = of(cfg.constraints, cfg.force_words_ids)

    def state(self, tokens: list[int]) -> ConstraintListState:
        return ConstraintListState.after(self.constraints, tokens)

    def ends(self, row: int) -> bool:
        """Only a beam that meets every constraint becomes a hypothesis."""
        return self.state(self.seq[row, :self.cur_len].tolist()).completed

    def choose(self, b: int, g: int, ranked: list[float], candidates: list[tuple[int, int]],
               totals: torch.Tensor) -> tuple[list[float], list[int], list[int]]:
        return self.by_bank(b, *super().choose(b, g, ranked, candidates, totals), totals)

    def by_bank(self, b: int, scores: list[float], tokens: list[int], parents: list[int],
                totals: torch.Tensor) -> tuple[list[float], list[int], list[int]]:
        """Input b's next beams re-chosen with the beams that advance a constraint, by bank (module docstring).
        totals [R, V]: every row's accumulated scores."""
        K, first = self.K, b * self.K
        prefixes = self.seq[first:first + K, :self.cur_len].tolist()          # the input's beams so far
        listed = [prefixes[p - first] + [t] for p, t in zip(parents, tokens)]
        states = [self.state(seq) for seq in listed]
        seen = {tuple(seq) for seq in listed}
        rows, added = [], []                                                  # the advancing beams' parents, tokens
        for i, prefix in enumerate(prefixes):
            state = self.state(prefix)
            if state.completed:
                continue
            for token in state.advance():
                advanced = state.copy()
                advanced.add(token)
                if (*prefix, token) not in seen:
                    seen.add((*prefix, token))
                    rows.append(first + i)
                    added.append(token)
                    states.append(advanced)
        if not rows:
            return scores, tokens, parents
        all_scores = torch.cat((torch.tensor(scores), totals[rows, added].cpu()))        # float32, as 4.55's
        banks = torch.tensor([state.bank() for state in states])
        order = (banks * 100 + all_scores).sort(descending=True).indices
        within, count, current = [], -1, None                  # each one's rank within its bank, in that order
        for bank in banks[order].tolist():
            count, current = (count + 1, current) if bank == current else (0, bank)
            within.append(count)
        pick = order[torch.tensor(within).sort(stable=True).indices][:K].tolist()
        scores, tokens, parents = all_scores.tolist(), tokens + added, parents + rows
        return [scores[i] for i in pick], [tokens[i] for i in pick], [parents[i] for i in pick]

    def close(self, b: int, g: int, scores: list[float]) -> None:
        """The running beams that meet every constraint become hypotheses; every other one as well where fewer
        than num_return_sequences do."""
        rows = range(b * self.K, (b + 1) * self.K)
        meeting = [row for row in rows if self.ends(row)]
        if len(meeting) < self.cfg.num_return_sequences:
            meeting += [row for row in rows if row not in meeting]
        for row in meeting:
            self.hypotheses[b][g].add(self.seq[row, :self.cur_len], scores[row], self.beams[row] if self.beams else [],
                                      self.cur_len - self.prompt_len)
