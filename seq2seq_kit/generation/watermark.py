"""WatermarkDetector: whether token ids carry the green-list watermark generate(..., watermarking_config=...) adds
(logits_process.Watermark), as transformers' WatermarkDetector tells it (Kirchenbauer et al. 2023's z-test): each
token scored is green or not under the seed of the tokens before it (selfhash: and itself); with T tokens scored and
G of them green, z = (G - ratio * T) / sqrt(T * ratio * (1 - ratio)), and z > z_threshold says watermarked.

    detector = WatermarkDetector(model.config, "cpu", watermarking_config)   # the generation's settings
    detector(ids)                                  # bool [B]; return_dict=True: the counts, z-scores, p-values
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch

from .config import watermark_settings
from .logits_process import Watermark


@dataclass
class WatermarkDetectorOutput:
    """One value per sequence (numpy arrays [B]), as transformers' WatermarkDetectorOutput."""
    num_tokens_scored: np.ndarray
    num_green_tokens: np.ndarray
    green_fraction: np.ndarray
    z_score: np.ndarray
    p_value: np.ndarray
    prediction: np.ndarray
    confidence: np.ndarray


class WatermarkDetector:
    """transformers' WatermarkDetector over seq2seq_kit's watermark. model_config: the model's config (its
    vocab_size, which generate draws the green lists from, and decoder start token); device: where the green lists
    are drawn (the generation's device: a generator's permutations differ between CPU and CUDA);
    watermarking_config: the settings generate was given (a dict or transformers' WatermarkingConfig);
    ignore_repeated_ngrams: score each distinct n-gram once."""

    def __init__(self, model_config, device, watermarking_config, ignore_repeated_ngrams: bool = False):
        settings = watermark_settings(watermarking_config)
        if settings is None:
            raise ValueError("watermarking_config is None: pass the settings the text was generated with")
        self.start = model_config.decoder_start_token_id
        self.ratio = settings["greenlist_ratio"]
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.watermark = Watermark(model_config.vocab_size, device, **settings)     # transformers' vocabulary

    def __call__(self, input_ids: torch.Tensor, z_threshold: float = 3.0, return_dict: bool = False):
        """input_ids [B, T] (generate's sequences; a leading decoder start token is dropped, as the prompt should
        be) -> bool [B] (z-score > z_threshold), or with return_dict a WatermarkDetectorOutput."""
        starts = input_ids[:, 0] == self.start
        if bool(starts.any()) != bool(starts.all()):
            raise ValueError("some rows start with the decoder start token and some do not: pass the sequences of "
                             "one generate call (or strip it from every row)")
        if bool(starts[0]):
            input_ids = input_ids[:, 1:]
        width = self.watermark.context_width
        if input_ids.shape[-1] - width < 1:
            raise ValueError(f"nothing to score: the seeding takes the first {width} token(s) and the "
                             f"sequences have {input_ids.shape[-1]}; pass longer ones")
        scored, green = self.count(input_ids)
        z = (green - self.ratio * scored) / np.sqrt(scored * self.ratio * (1 - self.ratio))
        prediction = z > z_threshold
        if not return_dict:
            return prediction
        p_value = 0.5 * torch.special.erfc(torch.as_tensor(z / np.sqrt(2))).numpy()
        return WatermarkDetectorOutput(scored, green, green / scored, z, p_value, prediction, 1 - p_value)

    def count(self, input_ids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(tokens scored, green tokens) per row: every window of context_width tokens and the one after it
        (selfhash: seeded by the window with that token), each distinct window once with ignore_repeated_ngrams."""
        n = self.watermark.context_width + 1 - self.watermark.selfhash
        scored, green = np.zeros(len(input_ids)), np.zeros(len(input_ids))
        for b, row in enumerate(input_ids.tolist()):
            ngrams = collections.Counter(tuple(row[i:i + n]) for i in range(len(row) - n + 1))
            is_green = {ngram: self.is_green(ngram) for ngram in ngrams}
            if self.ignore_repeated_ngrams:
                scored[b], green[b] = len(ngrams), sum(is_green.values())
            else:
                scored[b] = sum(ngrams.values())
                green[b] = sum(count * is_green[ngram] for ngram, count in ngrams.items())
        return scored, green

    def is_green(self, ngram: tuple[int, ...]) -> bool:
        watermark = self.watermark
        prefix = torch.tensor(ngram if watermark.selfhash else ngram[:-1], device=watermark.fixed_table.device)
        return bool((watermark.greenlist(prefix) == ngram[-1]).any())
