"""What generate and its searches need of a model (Seq2SeqModel): the contract between generation/ and a network;
and what seq2seq_kit.Engine needs beyond it (EngineModel).

Shapes: B inputs, S source tokens, D hidden size, V vocabulary, R = B * rows_per_input decoder rows (beams or
samples; row r belongs to input r // rows_per_input). generate calls check_inputs once, before any compute, and
new_cache checks its own arguments; the other calls trust theirs and must not read values back from the device.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch


class Cache(Protocol):
    """The decoder's state between steps (self-attention keys/values of every row, cross-attention of every input)."""

    def reorder(self, row_idx: torch.Tensor) -> None:
        """Row r continues the history of row row_idx[r] (LongTensor [R], rows within their input's group)."""


class EagerCache(Cache, Protocol):
    """The eager cache (start_decoding's with cuda_graph False): its position is a host int, and a pass of several
    tokens per row (extend_unchecked) can be taken back in part."""
    length: int                         # tokens held per row: the next step writes position `length`

    def crop(self, length: int) -> None:
        """Keep the first `length` tokens (at most those held): the next step writes position `length`."""


class FixedShapeCache(Cache, Protocol):
    """A cache whose position lives on the device and whose every step reads all slots (models' FixedShapeKVCache);
    steps past its last slot write the last slot again."""

    def reset(self) -> None:
        """Start over at position 0 (the stale slots are masked until rewritten)."""


class ScreenedLogits(Protocol):
    """A step's logits [R, V] known to bounds, with the exact ones on request (what a greedy search needs: the
    argmax; generation/screening.py): lower <= each float32 logit <= upper, bias included."""
    lower: torch.Tensor                 # [R, V]
    upper: torch.Tensor                 # [R, V]

    def exact(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits of these tokens (long [U]) for every row -> [R, U], bit for bit those the step would have
        returned."""

    def __getitem__(self, rows: slice) -> ScreenedLogits:
        """These rows' (as logits[a:b])."""


Step = Callable[[torch.Tensor, Cache], torch.Tensor]
"""step(input_ids [R] long, cache) -> logits [R, V]: each row's next-token logits after input_ids, fed at the cache's
position; advances the cache by one token. The logits are the caller's: the search may write them in place (a
buffer the model reuses is cloned first)."""


class ModelConfig(Protocol):
    vocab_size: int                     # the encoder's vocabulary (source ids)
    decoder_vocab_size: int             # V: the decoder's vocabulary, the logits' width
    max_position_embeddings: int        # decoder positions: at most this many tokens fed per row
    pad_token_id: int | None            # padding: a decoder prompt may hold it only as its first token
    positions_skip_pads: bool           # positions count non-pad tokens (M2M100): no pad in a prompt of 2 or more
    shared_embeddings: bool             # source ids are decoder ids (prompt lookup copies guesses from the source)

    def generation_settings_assigned(self) -> dict:
        """{name: value} of generation settings that are fields of this config and were assigned after it was made,
        which generate refuses (it reads the model's generation_config); others set on it are found in vars()."""


class Seq2SeqModel(Protocol):
    config: ModelConfig
    generation_config: Any              # GenerationConfig: the settings generate starts from
    device: torch.device                # where inputs, caches and outputs live

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Validate input_ids [B, S] and attention_mask [B, S] or None (raise TypeError / ValueError);
        return the padding mask bool [B, S], or None when nothing is padded."""

    def check_encoder_outputs(self, encoder_hidden: torch.Tensor,
                              attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """generate's check of encoder hidden states given instead of a source (encoder_outputs): [B, S, D] as
        encode_unchecked makes them; attention_mask as check_inputs'. Returns the padding mask as check_inputs."""

    def encode_unchecked(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                         trace=None) -> torch.Tensor:
        """input_ids [B, S] long, check_inputs' padding mask -> encoder_hidden [B, S, D]. trace: None, or a recorder
        (generation/traces.py's LayerRecord) its layers hand their attentions and hidden states to; passed (by
        name) only by generate(output_attentions / output_hidden_states), so a model without it generates too."""

    def start_decoding(self, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None, rows_per_input: int,
                       max_length: int, *, cuda_graph: bool, screened: bool = False) -> tuple[Step, Cache]:
        """A cache for R rows of up to max_length decoder tokens, attending to encoder_hidden [B, S, D], and the
        step that decodes on it; cuda_graph: the step may be replayed from a CUDA graph (its cache is then the
        graph's own, and takes steps past its last slot, which generation/sync_free.py runs after a stop).
        screened (eager, for a greedy search that records no scores: SampleSearch.screenable): the step may return
        ScreenedLogits instead of logits, where the model can bound its logits more cheaply than compute them."""

    def new_cache(self, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor | None, rows_per_input: int,
                  max_length: int, *, fixed_shape: bool = False) -> Cache:
        """A cache like start_decoding's; fixed_shape: a FixedShapeCache (what generation/whole_step.py captures
        with decode_step_unchecked in one CUDA graph). Checks its arguments (once, before decoding)."""

    def project_cross_kv(self, cache: Cache, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None):
        """Write encoder_hidden's cross-attention keys/values and padding_mask into a cache of those shapes."""

    def prefill_unchecked(self, input_ids: torch.Tensor, cache: Cache, trace=None) -> None:
        """A decoder prompt in one causal pass: input_ids [R, T] long fed to an empty eager cache (start_decoding's
        with cuda_graph False, or new_cache's), every layer's self-attention keys/values written into its first T
        positions and the cache advanced by T, so the next step continues exactly as after T single steps (to float
        rounding); positions numbered as the teacher-forced forward numbers them. Computes no logits. trace: as
        encode_unchecked's, for this pass."""

    def extend_unchecked(self, input_ids: torch.Tensor, cache: EagerCache, screened: bool = False):
        """T tokens per row in one causal pass after the eager cache's `length` ones (prompt lookup's check of a
        guess): input_ids [R, T] -> the logits [R * T, V] of each row's T positions in order, as T steps would give
        them to float rounding; advances the cache by T. screened (a greedy search that records no scores):
        ScreenedLogits may come instead of logits, as from start_decoding's screened step."""

    def decode_step_unchecked(self, input_ids: torch.Tensor, cache: Cache, trace=None) -> torch.Tensor:
        """The eager step: input_ids [R] -> logits [R, V], advancing the cache; on a FixedShapeCache it reads
        nothing back and keeps every shape, so a CUDA graph can capture it with the search's step. trace: as
        encode_unchecked's, for this step (on start_decoding's eager cache)."""

    def parameters(self):
        """Its weights (a captured graph reads their memory: their addresses are part of its key)."""

    def buffers(self):
        """Its other tensors (likewise)."""


class EngineModel(Seq2SeqModel, Protocol):
    """What seq2seq_kit.Engine needs beyond generate's contract (engine/; to size its SlotStore it also reads the
    config's decoder_layers, d_model and decoder_attention_heads, and pads encoder batches with its pad_token_id)."""
    dtype: torch.dtype

    def decode_group_unchecked(self, input_ids: torch.Tensor, caches: list[Cache],
                               screened: bool = False) -> torch.Tensor:
        """One step over several eager caches at once (continuous batching): input_ids [R] holds caches[0]'s rows,
        then caches[1]'s, ...; each cache at its own position -> logits [R, V]; advances every cache. With one
        cache it equals the eager step bit for bit. screened (every row a greedy search's that records no scores):
        ScreenedLogits may come instead of logits, as from start_decoding's screened step."""

    def next_token_logits(self, input_ids: torch.Tensor, cache: Cache) -> torch.Tensor:
        """The decoder network for one token per row at a cache's position (a view of the engine's SlotStore,
        which its CUDA graphs capture): input_ids [N] -> logits [N, V]; writes that position's self-attention
        keys/values, does not advance the cache, checks nothing and reads nothing back."""
