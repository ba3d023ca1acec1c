"""Engine profiles: what the simulator knows about one engine on one device, measured there.

A profile is a small JSON file: the fitted step-time model, the engine's batching limits and
its KV capacity, and what it was measured on (engine, model, device, library versions, date)
with the fit's own error. The step-time model is linear in the batch's composition:

    time of one forward pass (s) = base + prefill_token · P + prefill_seq · S + decode_seq · D
        + kv_token · K + (batched + batched_kv · K) · [D > 1]                  (decode-only passes)
        + prefill_pass + prefill_kv · K + varlen_qk · (P + D) · K + prefill_attn · A  (passes with a prefill)

P: query tokens of prefill chunks in the pass, S: prefill chunks, D: decode sequences, K: KV
tokens attended by the pass (each scheduled sequence's context after the pass), A: each prefill
chunk's query tokens times its own sequence's context after the pass, summed. transformers'
CPU path runs a pass with a prefill chunk differently from a decode-only one: it attends every
query token of the pass over the whole pass's KV (a dense (P + D) x K mask) on top of each
chunk's causal attention over its own context (A: quadratic in a lone prompt's length), at a
fixed cost decode-only passes do not pay; decode-only passes take a fast path, dearer for more
than one sequence (batched, batched_kv). Format 1 profiles (the first six terms, kv_token in every pass)
load with prefill_kv = kv_token and the other new terms at 0: the same model. `spread` (optional)
is the measured spread of prefill passes around the model, which the simulator draws from. Profiles come
from `calibrate.py` run on the real engine; `builtin` names the ones shipped with the package
(servegen_fast/data/profiles/), measured on this project's CI host. None is made up.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..io.atomic import write_text

STEP_TERMS = ("base", "prefill_token", "prefill_seq", "decode_seq", "kv_token", "varlen_qk", "prefill_pass",
              "prefill_attn", "prefill_kv", "batched", "batched_kv")
FORMAT = "servegen-fast-profile/2"
FORMAT_1 = "servegen-fast-profile/1"  # STEP_TERMS[:6], kv_token in every pass
TERMS_1 = STEP_TERMS[:6]
BUILTIN = {"cpu-tiny": "cpu-tiny.json"}
MAX_SPREAD = 257


class ProfileError(ValueError):
    """A profile file that cannot be used (names the file and what is wrong)."""


@dataclass(frozen=True)
class Profile:
    coefficients: dict  # STEP_TERMS -> seconds per unit
    page_size: int  # KV tokens per block
    kv_blocks: int  # KV capacity in blocks
    max_batch_tokens: int  # query tokens per forward pass (the token budget)
    max_seqs: int  # sequences per forward pass
    admit_free_fraction: float = 0.0  # no new prefill admitted while fewer blocks than this fraction are free
    idle_wake: float = 0.0  # seconds from a request's arrival at an idle engine to its first pass (the loop's wake-up)
    # quantiles of measured / fitted time of the sweep's passes with a prefill chunk, at probabilities
    # 0, 1/(n-1), .., 1, scaled to mean 1; the simulator draws each such pass's factor from them ([]: none)
    spread: list = field(default_factory=list)
    measured_on: dict = field(default_factory=dict)
    fit: dict = field(default_factory=dict)

    def validate(self, source: str = "profile") -> "Profile":
        missing = [t for t in STEP_TERMS if t not in self.coefficients]
        unknown = sorted(set(self.coefficients) - set(STEP_TERMS))
        if missing or unknown:
            what = f"lack {', '.join(missing)}" if missing else f"have unknown term(s) {', '.join(unknown)}"
            raise ProfileError(f"{source}: coefficients {what} (expected {', '.join(STEP_TERMS)})")
        for t in STEP_TERMS:
            c = self.coefficients[t]
            if not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                raise ProfileError(f"{source}: coefficient {t!r} must be a finite number >= 0, got {c!r}")
        if self.step_time(0, 0, 1, 1) <= 0:
            raise ProfileError(f"{source}: a one-sequence decode pass takes no time (all coefficients zero)")
        for name in ("page_size", "kv_blocks", "max_batch_tokens", "max_seqs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ProfileError(f"{source}: {name} must be a positive integer, got {v!r}")
        if not (isinstance(self.idle_wake, (int, float)) and 0.0 <= self.idle_wake < 1.0):
            raise ProfileError(f"{source}: idle_wake must be seconds in [0, 1), got {self.idle_wake!r}")
        sp = self.spread
        if not isinstance(sp, (list, tuple)) or (sp and not 2 <= len(sp) <= MAX_SPREAD):
            got = f"{len(sp)} values" if isinstance(sp, (list, tuple)) else repr(sp)
            raise ProfileError(f"{source}: spread must be a list of 2 to {MAX_SPREAD} quantiles (or empty), got {got}")
        for k, v in enumerate(sp):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 \
                    or (k and v < sp[k - 1]):
                raise ProfileError(f"{source}: spread must be finite factors > 0 in increasing order; "
                                   f"value {k} is {v!r}")
        if not 0.0 <= self.admit_free_fraction < 1.0:
            raise ProfileError(f"{source}: admit_free_fraction must be in [0, 1), got {self.admit_free_fraction!r}")
        return self

    def step_time(self, prefill_tokens, prefill_seqs, decode_seqs, kv_tokens, prefill_attn=None):
        """Seconds of one pass (scalars or NumPy arrays). `prefill_attn` (A) defaults to one
        prefill chunk's: prefill_tokens x kv_tokens."""
        import numpy as np

        c = self.coefficients
        P, D, K = prefill_tokens, decode_seqs, kv_tokens
        attn = P * K if prefill_attn is None else prefill_attn
        prefill = c["prefill_pass"] + c["prefill_kv"] * K + c["varlen_qk"] * (P + D) * K + c["prefill_attn"] * attn
        decode = c["kv_token"] * K + (c["batched"] + c["batched_kv"] * K) * (np.asarray(D) > 1)
        return (c["base"] + c["prefill_token"] * P + c["prefill_seq"] * prefill_seqs + c["decode_seq"] * D
                + np.where(np.asarray(P) > 0, prefill, decode))

    def isolated(self, input_tokens, output_tokens):
        """(TTFT, TPOT, end-to-end) of requests each alone on an idle instance, by the formula:
        the idle wake-up, prefill in chunks of the token budget, then one decode pass per further token
        (TPOT nan for one-token outputs). NumPy arrays in, arrays out."""
        import numpy as np

        p = np.asarray(input_tokens, np.int64)
        o = np.asarray(output_tokens, np.int64)
        c = self.coefficients
        T = self.max_batch_tokens
        ttft = np.full(p.shape, float(self.idle_wake))
        for j in range(int(-(-p.max() // T)) if p.size else 0):
            chunk = np.clip(p - j * T, 0, T)
            kv = j * T + chunk
            ttft += np.where(chunk > 0, self.step_time(chunk, 1, 0, kv, chunk * kv), 0.0)
        d = (o - 1).astype(np.float64)
        decode = d * (c["base"] + c["decode_seq"] + c["kv_token"] * p) + c["kv_token"] * d * (d + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(o > 1, decode / d, np.nan)
        return ttft, tpot, ttft + decode

    def without_spread(self) -> "Profile":
        """The same profile with every pass at its fitted time (a deterministic pass model)."""
        return replace(self, spread=[])

    def coef_array(self, seed: int = 0):
        """The event loop's model: the STEP_TERMS coefficients, idle_wake, the seed of the spread's
        draws, the number of spread quantiles, then the quantiles (passes.py: IDLE_WAKE, SEED, SPREAD)."""
        import numpy as np

        if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2 ** 53):
            raise ValueError(f"the seed of the pass-time draws must be an integer in [0, 2**53), got {seed!r}")
        return np.array([self.coefficients[t] for t in STEP_TERMS] + [self.idle_wake, seed, len(self.spread)]
                        + list(self.spread), dtype=np.float64)

    @property
    def kv_tokens(self) -> int:
        return self.page_size * self.kv_blocks

    def to_json(self) -> str:
        return json.dumps(dict(format=FORMAT, **asdict(self)), indent=1) + "\n"

    def describe(self) -> str:
        m = self.measured_on
        c = self.coefficients
        return (f"{m.get('engine', '?')} {m.get('model', '?')} on {m.get('device', '?')} ({m.get('cpu', '')}), "
                f"measured {m.get('date', '?')}: step = {c['base'] * 1e3:.3g} ms + {c['prefill_token'] * 1e6:.3g} us/prefill "
                f"token + {c['prefill_seq'] * 1e3:.3g} ms/prefill chunk + {c['decode_seq'] * 1e3:.3g} ms/decode seq + "
                f"decode-only passes: {c['kv_token'] * 1e9:.3g} ns/KV token, + {c['batched'] * 1e3:.3g} ms + "
                f"{c['batched_kv'] * 1e9:.3g} ns/KV token if several sequences; "
                f"passes with a prefill: {c['prefill_pass'] * 1e3:.3g} ms + {c['prefill_kv'] * 1e9:.3g} ns/KV token + "
                f"{c['varlen_qk'] * 1e12:.3g} ps/(query x KV token) + {c['prefill_attn'] * 1e12:.3g} ps/(chunk token x own "
                f"context); {self._spread_text()}idle wake-up {self.idle_wake * 1e3:.3g} ms; KV {self.kv_blocks} blocks x {self.page_size} tokens, "
                f"budget {self.max_batch_tokens} tokens / {self.max_seqs} seqs per pass")

    def _spread_text(self) -> str:
        if not self.spread:
            return ""
        import numpy as np

        q = np.interp([0.05, 0.5, 0.95], np.linspace(0, 1, len(self.spread)), self.spread)
        return f"passes with a prefill x {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} (5th / 50th / 95th percentile); "


def save_profile(profile: Profile, path) -> Path:
    p = Path(path)
    write_text(p, profile.to_json())
    return p


def builtin_path(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("servegen_fast.data").joinpath("profiles", BUILTIN[name])))


def load_profile(spec) -> Profile:
    """A profile from a JSON file, or `builtin:NAME` / a bare built-in NAME (cpu-tiny)."""
    if isinstance(spec, Profile):
        return spec.validate()
    text = str(spec)
    name = text.split(":", 1)[1] if text.startswith("builtin:") else text
    if name in BUILTIN:
        path = builtin_path(name)
    else:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"profile {text!r} not found: give a profile file (servegen-fast profile -o FILE) "
                                    f"or a built-in one ({', '.join(BUILTIN)})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ProfileError(f"{path}: not a profile (invalid JSON at line {e.lineno}: {e.msg})") from None
    if not isinstance(raw, dict) or raw.get("format") not in (FORMAT, FORMAT_1):
        raise ProfileError(f"{path}: not a profile (expected \"format\": \"{FORMAT}\" or \"{FORMAT_1}\")")
    keys = {f for f in Profile.__dataclass_fields__}
    unknown = sorted(set(raw) - keys - {"format"})
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {', '.join(unknown)}")
    required = {"coefficients", "page_size", "kv_blocks", "max_batch_tokens", "max_seqs"}
    missing = sorted(required - set(raw))
    if missing:
        raise ProfileError(f"{path}: missing key(s) {', '.join(missing)}")
    if not isinstance(raw["coefficients"], dict):
        raise ProfileError(f"{path}: coefficients must be an object of {', '.join(STEP_TERMS)}")
    if raw.pop("format") == FORMAT_1:
        extra = sorted(set(raw["coefficients"]) - set(TERMS_1))
        if extra:
            raise ProfileError(f"{path}: a {FORMAT_1} profile has only {', '.join(TERMS_1)}; found {', '.join(extra)}")
        c = raw["coefficients"]
        raw["coefficients"] = {**c, "prefill_pass": 0.0, "prefill_attn": 0.0, "prefill_kv": c.get("kv_token", 0.0),
                               "batched": 0.0, "batched_kv": 0.0}
    return Profile(**raw).validate(str(path))
