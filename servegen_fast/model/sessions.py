"""Session profiles: multi-turn conversations and shared system prompts, per client.

A profile says, for one client (or every client):

* ``session_share``: the share of the client's requests that belong to sessions of two or
  more turns (the rest are single requests, i.e. sessions of one turn);
* ``turns``: the number of turns of a multi-turn session (a discrete distribution on 2, 3, ...);
* ``think_time``: seconds between a turn's (estimated) completion and the next turn's arrival;
* ``new_tokens``: the new text of turns 2, 3, ... (turn 1 draws its whole input from the pool);
* ``prefix_share`` and ``prefixes``: the share of sessions that start from one of the client's
  shared system prompts, the prompts' lengths in tokens and their popularity (explicit
  ``weights``, or Zipf with exponent ``zipf`` over the listed order);
* ``service``: the estimate of a turn's service time, ``ttft + tpot × output_tokens`` seconds,
  that places the next turn's open-loop arrival (docs/sessions.md);
* ``max_span``: seconds; a turn that would arrive later than this after its session's first
  turn is not generated, and neither are the turns after it (this bounds the look-back that
  makes any part of a trace generable alone).

Rates keep their meaning (requests per second, every turn counted): the arrival process gives
request slots; a slot starts a session with probability 1 / E[turns] (turns of single requests
counted as 1), so each slot brings on average one request.

A profile file is JSON: ``{"format": "servegen-fast-sessions", "version": 1, "default":
PROFILE or null, "clients": {"<client id>": PROFILE, ...}, "source": "..."}``. Clients with
neither their own profile nor a default have no sessions.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..kernels.session_bodies import GUIDE_STEPS

FORMAT = "servegen-fast-sessions"
MAX_TURNS = 65535           # the trace's `turn` column is uint16
MAX_PREFIXES = 1 << 24      # prefix ids key the block hash in 24 bits
MAX_BLOCK_SIZE = 1 << 24
DEFAULT_BLOCK_SIZE = 512    # Mooncake's block size
DEFAULT_TTFT = 0.5          # s, see docs/sessions.md
DEFAULT_TPOT = 0.025        # s per output token
DEFAULT_MAX_SPAN = 7200.0   # s: turns later than this after their session's first are not generated
BUILTIN = {"chat": "sessions_chat.json"}
# table slots in SessionTables.off
T_TURNS, T_THINK, T_NEW, T_PREFIX = 0, 1, 2, 3
# per-profile scalars in SessionTables.par
P_KEEP, P_PREFIX_SHARE, P_TTFT, P_TPOT, P_SPAN = 0, 1, 2, 3, 4


class ProfileError(ValueError):
    """A session profile that is malformed or does not match the pool."""


def _dist(obj, name: str, where: str, *, integer=False, lo=0.0) -> tuple[np.ndarray, np.ndarray]:
    """(values ascending, probabilities) of a {"values": [...], "probs": [...]} table."""
    if not isinstance(obj, dict) or "values" not in obj or "probs" not in obj:
        raise ProfileError(f"{where}: {name} must be an object with 'values' and 'probs' lists")
    try:
        v = np.asarray(obj["values"], np.float64)
        p = np.asarray(obj["probs"], np.float64)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: {name} values and probs must be numbers") from None
    if v.ndim != 1 or v.shape != p.shape or len(v) == 0:
        raise ProfileError(f"{where}: {name} needs equally long, non-empty values and probs")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(p))) or (p < 0).any() or p.sum() <= 0:
        raise ProfileError(f"{where}: {name} probs must be finite, non-negative and not all zero")
    if (v < lo).any():
        raise ProfileError(f"{where}: {name} values must be >= {lo}, got {v.min()}")
    if integer and (v != np.round(v)).any():
        raise ProfileError(f"{where}: {name} values must be whole numbers")
    order = np.argsort(v, kind="stable")
    return v[order], p[order] / p.sum()


@dataclass
class SessionProfile:
    """One client's sessions (see the module docstring). Tables are (values, probabilities)."""
    session_share: float
    turns: tuple                    # values >= 2
    think_time: tuple               # seconds >= 0
    new_tokens: tuple               # tokens >= 0
    prefix_share: float = 0.0
    prefix_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prefix_weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft: float = DEFAULT_TTFT
    tpot: float = DEFAULT_TPOT
    max_span: float = DEFAULT_MAX_SPAN

    @classmethod
    def from_dict(cls, d: dict, where: str = "profile") -> "SessionProfile":
        if not isinstance(d, dict):
            raise ProfileError(f"{where}: a profile must be a JSON object")
        share = _share(d.get("session_share"), "session_share", where)
        turns = _dist(d.get("turns"), "turns", where, integer=True, lo=2)
        if turns[0][-1] > MAX_TURNS:
            raise ProfileError(f"{where}: turns above {MAX_TURNS} (the turn column is uint16)")
        think = _dist(d.get("think_time"), "think_time", where)
        new = _dist(d.get("new_tokens"), "new_tokens", where, integer=True)
        pshare = _share(d.get("prefix_share", 0.0), "prefix_share", where)
        pre = d.get("prefixes") or {}
        tokens = np.asarray(pre.get("tokens", []), np.float64)
        if tokens.ndim != 1 or (tokens < 1).any() or (tokens != np.round(tokens)).any():
            raise ProfileError(f"{where}: prefixes.tokens must be a list of positive whole numbers")
        if len(tokens) > MAX_PREFIXES:
            raise ProfileError(f"{where}: at most {MAX_PREFIXES} prefixes")
        if "weights" in pre:
            w = np.asarray(pre["weights"], np.float64)
            if w.shape != tokens.shape or (w < 0).any() or not np.isfinite(w).all() or (len(w) and w.sum() <= 0):
                raise ProfileError(f"{where}: prefixes.weights must be non-negative, one per prefix")
        else:
            s = float(pre.get("zipf", 1.0))
            if not s >= 0:
                raise ProfileError(f"{where}: prefixes.zipf must be >= 0")
            w = 1.0 / np.arange(1, len(tokens) + 1, dtype=np.float64) ** s
        if pshare > 0 and len(tokens) == 0:
            raise ProfileError(f"{where}: prefix_share > 0 needs at least one prefix in prefixes.tokens")
        svc = d.get("service") or {}
        ttft, tpot = float(svc.get("ttft", DEFAULT_TTFT)), float(svc.get("tpot", DEFAULT_TPOT))
        if not (ttft >= 0 and tpot >= 0 and np.isfinite(ttft) and np.isfinite(tpot)):
            raise ProfileError(f"{where}: service.ttft and service.tpot must be finite and >= 0")
        span = float(d.get("max_span", DEFAULT_MAX_SPAN))
        if not (span > 0 and np.isfinite(span)):
            raise ProfileError(f"{where}: max_span must be a positive number of seconds")
        return cls(share, turns, think, new, pshare, tokens.astype(np.int64), w / w.sum() if len(w) else w,
                   ttft, tpot, span)

    def to_dict(self) -> dict:
        t = lambda vp: {"values": vp[0].tolist(), "probs": vp[1].tolist()}  # noqa: E731
        return {"session_share": self.session_share, "turns": t(self.turns), "think_time": t(self.think_time),
                "new_tokens": t(self.new_tokens), "prefix_share": self.prefix_share,
                "prefixes": {"tokens": self.prefix_tokens.tolist(), "weights": self.prefix_weights.tolist()},
                "service": {"ttft": self.ttft, "tpot": self.tpot}, "max_span": self.max_span}

    def all_turns(self) -> tuple[np.ndarray, np.ndarray]:
        """Turns of every session, single requests included: (values 1.., probabilities).

        A share s of requests in sessions of mean m turns means a fraction
        pi = s / (m (1 - s) + s) of sessions are multi-turn."""
        v, p = self.turns
        m = float((v * p).sum())
        s = self.session_share
        pi = s / (m * (1.0 - s) + s) if s < 1 else 1.0
        return np.concatenate(([1.0], v)), np.concatenate(([1.0 - pi], pi * p))

    def keep_probability(self) -> float:
        v, p = self.all_turns()
        return 1.0 / float((v * p).sum())


def _share(x, name, where) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: {name} must be a number in [0, 1], got {x!r}") from None
    if not 0.0 <= x <= 1.0:
        raise ProfileError(f"{where}: {name} must be in [0, 1], got {x}")
    return x


@dataclass
class SessionProfiles:
    """Profiles of a pool's clients: a default and per-client overrides (client id -> profile)."""
    default: SessionProfile | None = None
    clients: dict = field(default_factory=dict)
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict, where: str = "session profile") -> "SessionProfiles":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ProfileError(f"{where}: not a session profile (expected \"format\": \"{FORMAT}\")")
        default = d.get("default")
        out = cls(SessionProfile.from_dict(default, f"{where}, default") if default else None, {},
                  str(d.get("source", "")))
        for key, prof in (d.get("clients") or {}).items():
            try:
                cid = int(key)
            except ValueError:
                raise ProfileError(f"{where}: client key {key!r} is not a client id") from None
            out.clients[cid] = SessionProfile.from_dict(prof, f"{where}, client {cid}")
        if out.default is None and not out.clients:
            raise ProfileError(f"{where}: no profiles (neither 'default' nor 'clients')")
        return out

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "source": self.source,
                "default": self.default.to_dict() if self.default else None,
                "clients": {str(k): v.to_dict() for k, v in sorted(self.clients.items())}}

    def check_pool(self, client_ids) -> None:
        """Raise ProfileError when a per-client profile names a client the pool does not have."""
        have = set(np.asarray(client_ids).tolist())
        missing = sorted(set(self.clients) - have)
        if missing:
            more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
            raise ProfileError(f"session profile {self.source or ''} does not match the pool: clients "
                               f"{missing[:5]}{more} are not in it".replace("profile  ", "profile "))

    def tables(self) -> "SessionTables":
        return SessionTables.build(self)


def load_profiles(spec: str | os.PathLike | dict) -> SessionProfiles:
    """A profile file, a built-in name (``chat``), or an already parsed dict."""
    if isinstance(spec, dict):
        return SessionProfiles.from_dict(spec)
    name = str(spec)
    if name in BUILTIN:
        path = Path(__file__).resolve().parent.parent / "data" / BUILTIN[name]
    else:
        path = Path(name)
        if not path.is_file():
            raise ProfileError(f"--sessions {name}: no such file, and not a built-in profile ({', '.join(BUILTIN)})")
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise ProfileError(f"{path}: not JSON ({e})") from None
    out = SessionProfiles.from_dict(data, str(path))
    out.source = out.source or name
    return out


@dataclass
class SessionTables:
    """The profiles as flat arrays for the kernels.

    Profile p's table j (T_TURNS: turns of all sessions, 1 included; T_THINK; T_NEW; T_PREFIX:
    prefix lengths in tokens) is values[off[p, j]:off[p, j + 1]] with cumulative probabilities
    cdf[...] (ending at exactly 1); par[p] = (keep probability, prefix share, ttft, tpot, max span).
    guide[G·lo + g] (table [lo, hi), N = G·(hi − lo) buckets, G = GUIDE_STEPS) = the number of
    its entries whose cdf is below g / N: where the kernels' search for u starts
    (kernels/session_bodies.py tab_index).
    `keys` (sorted client ids) and `index` map a client to its profile; `default` is the
    default's index, or -1 (no sessions)."""
    values: np.ndarray
    cdf: np.ndarray
    guide: np.ndarray        # int32[GUIDE_STEPS * len(cdf)]
    off: np.ndarray          # int64[P, 5]
    par: np.ndarray          # float64[P, 5]
    keys: np.ndarray         # uint32[K]
    index: np.ndarray        # int32[K]
    default: int
    max_turns: int
    max_think: float
    ttft_max: float
    tpot_max: float
    span_max: float

    @classmethod
    def build(cls, profiles: SessionProfiles) -> "SessionTables":
        profs = ([profiles.default] if profiles.default else []) + \
            [profiles.clients[k] for k in sorted(profiles.clients)]
        values, cdf, off, par = [], [], [], []
        pos = 0
        for pr in profs:
            row = [pos]
            pw = pr.prefix_weights if len(pr.prefix_tokens) else np.ones(1)
            ptok = pr.prefix_tokens if len(pr.prefix_tokens) else np.ones(1)
            for v, p in (pr.all_turns(), pr.think_time, pr.new_tokens, (ptok.astype(np.float64), pw)):
                c = np.cumsum(p)
                c = c / c[-1]
                c[-1] = 1.0
                values.append(np.asarray(v, np.float64))
                cdf.append(c)
                pos += len(v)
                row.append(pos)
            off.append(row)
            par.append([pr.keep_probability(), pr.prefix_share if len(pr.prefix_tokens) else 0.0, pr.ttft, pr.tpot,
                        pr.max_span])
        keys = np.array(sorted(profiles.clients), np.uint32)
        first = 1 if profiles.default else 0
        cdf, off = np.concatenate(cdf), np.array(off, np.int64).reshape(-1, 5)
        return cls(np.concatenate(values), cdf, _guides(cdf, off), off,
                   np.array(par, np.float64).reshape(-1, 5), keys,
                   np.arange(first, first + len(keys), dtype=np.int32), 0 if profiles.default else -1,
                   max(int(pr.turns[0][-1]) for pr in profs), max(float(pr.think_time[0][-1]) for pr in profs),
                   max(pr.ttft for pr in profs), max(pr.tpot for pr in profs), max(pr.max_span for pr in profs))

    def multi_turn_only(self) -> "SessionTables":
        """These tables for sessions of 2+ turns only (session stream 2's pre-history, where a
        single request before time 0 leaves nothing in the trace): each turns table conditioned
        on turns > 1 (its first entry, turns = 1, gets cdf 0, the rest rescaled), and
        par[:, P_KEEP] the rate factor of those starts, keep probability × P(turns > 1)."""
        cdf, par = self.cdf.copy(), self.par.copy()
        for p, (lo, hi) in enumerate(self.off[:, T_TURNS:T_TURNS + 2]):
            q = cdf[lo]  # P(turns = 1)
            if q < 1.0:
                c = (cdf[lo:hi] - q) / (1.0 - q)
                c[0], c[-1] = 0.0, 1.0
                cdf[lo:hi] = c
            par[p, P_KEEP] *= 1.0 - q
        return replace(self, cdf=cdf, par=par, guide=_guides(cdf, self.off))

    def profile_of(self, client: np.ndarray) -> np.ndarray:
        """int32 profile index per client id (-1: no sessions)."""
        client = np.asarray(client, np.uint32)
        out = np.full(len(client), self.default, np.int32)
        if len(self.keys):
            pos = np.minimum(np.searchsorted(self.keys, client), len(self.keys) - 1)
            hit = self.keys[pos] == client
            out[hit] = self.index[pos[hit]]
        return out

    def lookback(self, max_output: float) -> float:
        """Seconds by which a session's last turn can trail its first: (turns − 1) × the
        longest gap (service estimate of the longest output + the longest think time), at most
        the longest max_span."""
        return min((self.max_turns - 1) * (self.ttft_max + self.tpot_max * max_output + self.max_think),
                   self.span_max)


def _guides(cdf: np.ndarray, off: np.ndarray) -> np.ndarray:
    """SessionTables.guide for the tables [off[p, j], off[p, j + 1]) of cdf."""
    g = GUIDE_STEPS
    out = np.zeros(g * len(cdf), np.int32)
    for lo, hi in {(int(a), int(b)) for row in off for a, b in zip(row[:-1], row[1:])}:
        m = g * (hi - lo)
        out[g * lo:g * hi] = np.searchsorted(cdf[lo:hi], np.arange(m) / m, side="left")
    return out


def profiles_summary(p: SessionProfiles) -> dict:
    """A short JSON-able description for trace metadata and `info`."""
    return {"source": p.source, "default": p.default is not None, "clients": len(p.clients)}


__all__ = ["SessionProfile", "SessionProfiles", "SessionTables", "ProfileError", "load_profiles",
           "DEFAULT_BLOCK_SIZE", "MAX_BLOCK_SIZE"]
