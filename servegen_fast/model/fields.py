"""Names and codes of what a pool carries: categories, length fields, arrival laws.

Multimodal requests carry lists of per-item token counts (`image_tokens`...), each list's
length drawn from its count field (`image_count`...): `ITEM_FIELDS` maps one to the other.
Reasoning pools carry `reason_ratio`, from which traces derive `reasoning_tokens`.
"""
from __future__ import annotations

from ..kernels.codes import LAW_EXPONENTIAL, LAW_GAMMA, LAW_IDLE, LAW_WEIBULL

CATEGORIES = ("language", "multimodal", "reason")
LANGUAGE_FIELDS = ("input_tokens", "output_tokens")
ITEM_FIELDS = {"image_tokens": "image_count", "audio_tokens": "audio_count", "video_tokens": "video_count"}
REASON_RATIO = "reason_ratio"

LAW_CODES = {"Gamma": LAW_GAMMA, "Weibull": LAW_WEIBULL, "Exponential": LAW_EXPONENTIAL}
LAW_NAMES = {v: k for k, v in LAW_CODES.items()}

# Distribution id of a (client, length window, field) with no distribution.
NO_DIST = -1

__all__ = ["CATEGORIES", "LANGUAGE_FIELDS", "ITEM_FIELDS", "REASON_RATIO", "LAW_IDLE", "LAW_GAMMA", "LAW_WEIBULL",
           "LAW_EXPONENTIAL", "LAW_CODES", "LAW_NAMES", "NO_DIST"]
