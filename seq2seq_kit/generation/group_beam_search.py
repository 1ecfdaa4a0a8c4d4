"""Group (diverse) beam search: `num_beam_groups` > 1, token-exact with transformers 4.55's `_group_beam_search`
and its BeamSearchScorer / BeamHypotheses (the last release that ran it itself; transformers 5 points at the Hub's
transformers-community/group-beam-search, a port of the same code that needs trust_remote_code).

The rules, read off transformers 4.55.4 (generation/utils.py, beam_search.py, logits_process.py):

Groups. An input's num_beams beams split into num_beam_groups groups of G = num_beams / num_beam_groups beams
  (rows b * K + g * G .. b * K + g * G + G - 1), each group a beam search of its own. Initial beam scores: 0 for
  each group's first beam, -1e9 for the others.
A step. The decoder runs once over every row; then group after group, in order: log_softmax of the group's float32
  logits, the processors on the group's rows (built for G rows per input; HammingDiversity after the sequence bias:
  each token loses diversity_penalty times the number of the input's earlier groups' beams that chose it at this
  step), + the running beam scores, the top max(2, 1 + n_eos) * G of [B, G * V], sorted, and per input (on the
  host) the scorer's process: candidates in rank order, an EOS candidate ranked below G skipped, one ranked within
  G becoming a hypothesis of the input's group (score = sum of log-probs / generated_len ** length_penalty, in
  Python floats; generated_len counts the EOS, not the prompt), the others the next running beams until G are
  found. An input's group is done (sticky) once it holds G hypotheses and early_stopping is True, or none of its
  running beams can do better: worst kept score >= the step's best candidate score / L ** length_penalty with L =
  generated_len (max_length - prompt_len when early_stopping is "never" and length_penalty > 0). A done group's
  rows step on with the pad token and score 0.
Stop. Every input's every group done, max_length reached, or max_time past (the step it passed in is the last).
Output. Each unfinished group's running beams become hypotheses (generated_len = tokens so far - prompt_len); each
  input's hypotheses of all groups sorted by score (stable, best last) give its num_return_sequences, best first.
  T = min(longest + 1, max_length); shorter rows are padded with pad_token_id, and the position after each one's
  end holds eos_token_id[0] (a hypothesis ends before its EOS token: the first EOS id is written there).

Where seq2seq_kit differs, on purpose (tokens and sequences_scores unaffected): a done group's rows continue from
  their input's own rows, where 4.55 gives them the batch's first input's (its cache reorder crosses inputs; here
  each input's cross-attention keys and values are its own), so with more than one input the scores and logits
  recorded for those rows (output_scores / output_logits) differ from 4.55's; `beam_indices` name rows of the
  batch (b * K + beam, with one entry per generated token: what compute_transition_scores reads), where 4.55 gives
  each group's own row numbering. The search runs Python on the host every step (eager only; no CUDA graph).
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .logits_process import Diversity, apply

NEG = -1.0e9                         # transformers' score of the beams that start empty


def runs(cfg: GenerationConfig) -> bool:
    """Whether resolved settings run group beam search (transformers: num_beams > 1 and num_beam_groups > 1)."""
    return cfg.num_beams > 1 and cfg.num_beam_groups > 1


class Hypotheses:
    """One input's group's finished hypotheses (transformers' BeamHypotheses): at most G of (score, tokens,
    beam rows), scores in Python floats."""

    def __init__(self, size: int, cfg: GenerationConfig, prompt_len: int):
        self.size, self.cfg, self.prompt_len = size, cfg, prompt_len
        self.beams: list[tuple[float, torch.Tensor, list[int]]] = []
        self.worst = 1e9

    def add(self, tokens: torch.Tensor, sum_logprobs: float, beams: list[int], generated_len: int) -> None:
        score = sum_logprobs / (generated_len ** self.cfg.length_penalty)
        if len(self.beams) < self.size or score > self.worst:
            self.beams.append((score, tokens, beams))
            if len(self.beams) > self.size:
                ranked = sorted((s, i) for i, (s, _, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def done(self, best_sum_logprobs: float, generated_len: int) -> bool:
        """No running beam can beat the worst kept hypothesis (or early_stopping is True and the slots are full)."""
        cfg = self.cfg
        if len(self.beams) < self.size:
            return False
        if cfg.early_stopping is True:
            return True
        if cfg.early_stopping == "never" and cfg.length_penalty > 0.0:
            generated_len = cfg.max_length - self.prompt_len
        return self.worst >= best_sum_logprobs / generated_len ** cfg.length_penalty


class GroupBeamSearch:
    """generate's search for num_beam_groups > 1 (module docstring), driven as BeamSearch is by its eager loop:
    tokens() -> each row's last token [R]; advance(logits [R, V]) -> the cache reorder [R] or None; done; output().
    With one group it is 4.55's beam search loop, which constrained beam search extends (choose, ends, close:
    generation/constrained_beam_search.py)."""

    screenable = False               # the step needs every logit (decoding.py asks)
    records_totals = False           # output_scores: the processed log-probs (True: plus the beam scores)

    def __init__(self, cfg: GenerationConfig, processors: list, prompt: torch.Tensor, device: torch.device):
        self.cfg, self.processors = cfg, processors                        # prompt [B, P]: each input's first tokens
        self.batch, self.prompt_len = prompt.shape
        self.K, self.groups = cfg.num_beams, cfg.num_beam_groups
        self.G = self.K // self.groups
        self.rows = self.batch * self.K
        self.eos = set(cfg.eos_token_id or [])
        self.n_candidates = max(2, 1 + len(self.eos)) * self.G
        self.diversity = next((p for p in processors if isinstance(p, Diversity)), None)
        self.cur_len = self.prompt_len
        self.seq = torch.full((self.rows, cfg.max_length), cfg.pad_token_id or 0, dtype=torch.long, device=device)
        self.seq[:, :self.prompt_len] = prompt.to(device).repeat_interleave(self.K, dim=0)        # [R, L]
        scores = torch.full((self.batch, self.K), NEG, device=device)
        scores[:, ::self.G] = 0.0
        self.beam_scores = scores.view(-1)                                                       # [R] float32
        # each row's parent row per generated token (beam_indices), kept when they are returned
        self.beams: list[list[int]] = [[] for _ in range(self.rows)] if cfg.return_dict_in_generate else []
        self.hypotheses = [[Hypotheses(self.G, cfg, self.prompt_len) for _ in range(self.groups)]
                           for _ in range(self.batch)]
        self.finished = [[False] * self.groups for _ in range(self.batch)]
        self.done = False
        self.stop_after_step = False
        self.recorded = {name: [] for name, on in (("scores", cfg.output_scores), ("logits", cfg.output_logits)) if on}
        self.group_rows = [torch.tensor([b * self.K + g * self.G + j for b in range(self.batch) for j in range(self.G)],
                                        device=device) for g in range(self.groups)]             # each [B * G]

    def tokens(self) -> torch.Tensor:
        return self.seq[:, self.cur_len - 1]                                                     # [R]

    def last_step(self) -> None:
        """max_time has passed: the step about to be taken is the last (transformers' MaxTimeCriteria)."""
        self.stop_after_step = True

    def advance(self, logits: torch.Tensor) -> torch.Tensor | None:
        """One step from the decoder's logits [R, V]: every group in turn, then the sequences moved to their parents
        and extended. Returns every row's parent row [R] for the cache (None when no row moved)."""
        if "logits" in self.recorded:
            self.recorded["logits"].append(logits.to(torch.float32, copy=True))
        chosen = torch.zeros(self.rows, dtype=torch.long, device=logits.device)     # each row's token this step
        identity = torch.arange(self.rows, device=logits.device)                     # [R]
        parents = identity.clone()
        processed = torch.zeros(logits.shape, device=logits.device) if "scores" in self.recorded else None
        for g, rows in enumerate(self.group_rows):
            if self.diversity is not None:
                self.diversity.earlier = chosen.view(self.batch, self.K)[:, :g * self.G]            # [B, g * G]
            scores = apply(self.processors, self.seq[rows], self.cur_len,
                           torch.log_softmax(logits[rows].float(), dim=-1))                         # [B * G, V]
            totals = scores + self.beam_scores[rows, None]                                          # [B * G, V]
            if processed is not None:
                processed[rows] = totals if self.records_totals else scores
            self.step_group(g, rows, totals, chosen, parents)
        self.seq = self.seq[parents]
        self.seq[:, self.cur_len] = chosen
        self.beams = [self.beams[p] + [p] for p in parents.tolist()] if self.beams else []
        if processed is not None:
            self.recorded["scores"].append(processed)
        self.cur_len += 1
        self.done = (all(all(f) for f in self.finished) or self.cur_len >= self.cfg.max_length
                     or self.stop_after_step)
        return None if bool((parents == identity).all()) else parents

    def step_group(self, g: int, rows: torch.Tensor, totals: torch.Tensor, chosen: torch.Tensor,
                   parents: torch.Tensor) -> None:
        """Group g's candidates from its rows' accumulated scores totals [B * G, V] (the scorer's process): new
        hypotheses, then the group's next beam scores, tokens (into chosen [R]) and parent rows (into parents)."""
        V, G = totals.shape[-1], self.G
        top, index = totals.view(self.batch, G * V).topk(self.n_candidates, dim=1)          # [B, 2G], sorted
        next_scores, next_tokens, next_parents = [], [], []
        for b, (ranked, ranked_index) in enumerate(zip(top.tolist(), index.tolist())):
            first = b * self.K + g * G                                       # the input's group's first row
            if self.finished[b][g]:
                beams = [0.0] * G, [self.cfg.pad_token_id] * G, [first] * G
            else:
                beams = self.choose(b, g, ranked, [(first + i // V, i % V) for i in ranked_index], totals)
            next_scores += beams[0]
            next_tokens += beams[1]
            next_parents += beams[2]
        device = totals.device
        self.beam_scores[rows] = torch.tensor(next_scores, device=device)
        chosen[rows] = torch.tensor(next_tokens, device=device)
        parents[rows] = torch.tensor(next_parents, device=device)

    def choose(self, b: int, g: int, ranked: list[float], candidates: list[tuple[int, int]],
               totals: torch.Tensor) -> tuple[list[float], list[int], list[int]]:
        """Input b's group g's next G beams (scores, tokens, parent rows) from its candidates [(row, token)] in rank
        order with their scores `ranked`: EOS candidates within the first G become hypotheses (where ends(row)),
        the others are taken until G are found; then whether the group is done."""
        G, hypotheses = self.G, self.hypotheses[b][g]
        scores, tokens, parents = [], [], []
        for rank, (score, (row, token)) in enumerate(zip(ranked, candidates)):
            if token in self.eos:
                if rank < G and self.ends(row):
                    hypotheses.add(self.seq[row, :self.cur_len].clone(), score,
                                   self.beams[row] + [row] if self.beams else [], self.cur_len + 1 - self.prompt_len)
                continue
            scores.append(score)
            tokens.append(token)
            parents.append(row)
            if len(scores) == G:
                break
        if len(scores) < G:
            raise ValueError(f"num_beams / num_beam_groups = {G} beams per group, but only {len(scores)} of the "
                             f"{self.n_candidates} best tokens are not EOS: raise num_beams or lower "
                             "num_beam_groups")
        self.finished[b][g] = hypotheses.done(ranked[0], self.cur_len + 1 - self.prompt_len)
        return scores, tokens, parents

    def ends(self, row: int) -> bool:
        """Whether the row's beam may end here, becoming a hypothesis (always: constrained beam search overrides)."""
        return True

    def close(self, b: int, g: int, scores: list[float]) -> None:
        """An unfinished group's running beams become its hypotheses (scores: every row's beam score)."""
        for row in range(b * self.K + g * self.G, b * self.K + (g + 1) * self.G):
            self.hypotheses[b][g].add(self.seq[row, :self.cur_len], scores[row], self.beams[row] if self.beams else [],
                                      self.cur_len - self.prompt_len)

    def output(self, inputs: list[int] | None = None):
        """(sequences [B * nrs, T], sequences_scores [B * nrs], beam_indices [B * nrs, T - P] or None)."""
        cfg, nrs = self.cfg, self.cfg.num_return_sequences
        scores = self.beam_scores.tolist()
        for b in range(self.batch):
            for g in range(self.groups):
                if not self.finished[b][g]:
                    self.close(b, g, scores)
        best = []
        for b in range(self.batch):
            ranked = sorted((h for group in self.hypotheses[b] for h in group.beams), key=lambda h: h[0])
            best += [ranked.pop() for _ in range(nrs)]
        lengths = [len(tokens) for _, tokens, _ in best]
        width = min(max(lengths) + 1, cfg.max_length)
        fill = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        sequences = self.seq.new_full((len(best), width), fill)
        beam_indices = torch.full((len(best), width - self.prompt_len), -1, dtype=torch.int32)
        for i, (_, tokens, beams) in enumerate(best):
            sequences[i, :len(tokens)] = tokens
            if len(tokens) < width and cfg.eos_token_id:
                sequences[i, len(tokens)] = cfg.eos_token_id[0]
            beam_indices[i, :len(beams)] = torch.tensor(beams, dtype=torch.int32)
        sequences_scores = torch.tensor([score for score, _, _ in best], device=self.seq.device)
        keep = cfg.return_dict_in_generate
        return sequences, sequences_scores, beam_indices.to(self.seq.device) if keep else None

    def steps_recorded(self, name: str, inputs: list[int] | None = None) -> tuple[torch.Tensor, ...] | None:
        """Each step's recorded [R, V] under `name` ("scores": the processed log-probs; "logits"), or None."""
        steps = self.recorded.get(name)
        return None if steps is None else tuple(steps)
