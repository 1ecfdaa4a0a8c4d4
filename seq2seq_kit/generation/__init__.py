"""Generation: settings, logits processors, greedy / beam / sampling search over any model that fits
protocol.Seq2SeqModel. Imports nothing from seq2seq_kit.models."""

from .config import GenerationConfig
from .constraints import DisjunctiveConstraint, PhrasalConstraint
from .decoding import (GENERATE_ARGUMENTS, GenerateOutput, check_streamer, deadline, first_tokens, generate, prepare,
                       prepare_more, result, rows_per_input, rows_setting, settings, start_search, start_slots,
                       stop_strings_of)
from .protocol import Seq2SeqModel
from .streamers import AsyncTextIteratorStreamer, TextIteratorStreamer, TextStreamer
from .transition_scores import compute_transition_scores
from .watermark import WatermarkDetector, WatermarkDetectorOutput

__all__ = ["GENERATE_ARGUMENTS", "AsyncTextIteratorStreamer", "DisjunctiveConstraint", "GenerationConfig", "GenerateOutput",
           "PhrasalConstraint", "Seq2SeqModel", "TextIteratorStreamer", "TextStreamer", "WatermarkDetector",
           "WatermarkDetectorOutput", "check_streamer", "compute_transition_scores", "deadline", "first_tokens",
           "generate", "prepare", "prepare_more", "result", "rows_per_input", "rows_setting", "settings",
           "start_search", "start_slots", "stop_strings_of"]
