"""Derive the built-in session profile `chat` (servegen_fast/data/sessions_chat.json) by fitting
the public Mooncake conversation trace (kvcache-ai/Mooncake, FAST 2025, Apache-2.0; see
docs/data.md): sessions and shared prompts from its hash_ids, as `servegen-fast fit
--sessions-out` does (docs/sessions.md). Run from the repository root:

    python scripts/derive_session_profile.py [path/to/mooncake-conversation.jsonl]
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from servegen_fast.characterize.sessions import fit_sessions
from servegen_fast.io.atomic import write_text
from servegen_fast.io.sources import read_log

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOG = Path(os.environ.get("SERVEGEN_FAST_REFERENCE", ROOT.parent / "shared" / "data")) / \
    "mooncake-conversation.jsonl"
OUT = ROOT / "servegen_fast" / "data" / "sessions_chat.json"


def main(argv: list[str]) -> int:
    log_path = Path(argv[0]) if argv else DEFAULT_LOG
    profiles, report = fit_sessions(read_log(log_path))
    profiles.source = ("builtin 'chat': fitted by scripts/derive_session_profile.py to the Mooncake conversation "
                       "trace (github.com/kvcache-ai/Mooncake, FAST 2025 release, Apache-2.0; 12,031 requests, "
                       "hash_ids of 512-token blocks)")
    write_text(OUT, json.dumps(profiles.to_dict()))
    print(json.dumps(report["whole log"]), f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
