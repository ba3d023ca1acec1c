"""Pinned bytes: a fixed set of traces (pool, fleet, multimodal, reasoning; Parquet, Arrow,
partitioned) must keep their SHA-256 across refactors. A change here is a change to the random
stream or the file encoding, which must be deliberate, documented and versioned.

The hashes were taken with pyarrow 26 (Parquet's `created_by` names the writer's version, so a
different pyarrow can change the bytes without any change of ours: the message says which).
"""
from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servegen_fast.cli import main
from servegen_fast.io.manifest import MANIFEST_KEY
from servegen_fast.io.trace import trace_metadata

CASES = {
    "pool.parquet": ["--pool", "builtin", "--duration", "2h", "--rate", "50", "--seed", "3"],
    "pool.arrow": ["--pool", "builtin", "--start", "10h", "--duration", "1h", "--mode", "renewal",
                   "--correlation", "0.5", "--seed", "4"],
    "fleet.parquet": ["--pool", "builtin", "--clients", "2000", "--mean-rate", "20", "--duration", "2h", "--seed", "5"],
    "mm.parquet": ["--pool", "multimodal/mm-image", "--duration", "30m", "--rate", "20", "--seed", "6"],
    "reason.arrow": ["--pool", "reason/deepseek-r1", "--duration", "30m", "--rate", "20", "--include-reason-ratio",
                     "--mode", "poisson", "--seed", "7"],
    "fleet_parts": ["--pool", "builtin", "--clients", "500", "--mean-rate", "5", "--duration", "3h",
                    "--partition", "hour", "--seed", "8"],
    "sessions.parquet": ["--pool", "builtin", "--duration", "1h", "--rate", "20", "--sessions", "chat",
                         "--block-size", "64", "--seed", "9"],
}

# file encoding 1 (io/sink.py FILE_ENCODINGS): every trace written before versions; regenerated
# with --file-encoding 1 (or from such a trace's metadata) they keep these bytes.
PINNED_V1 = {
    "pool.parquet": "5f22cf70a7c753a97e982e9e416dae20b82d30acfe974ee1bfa3451b16c60bb2",
    "pool.arrow": "c2c2fc3d0e3651d939b7cd0270a350b1ba8b7ccaccea0787c8efbbd5babbefb1",
    "fleet.parquet": "f5551ac7ef22933d9d921f069309aba9ccdee5e4dfa88c0ceb5316d9ea6200c9",
    "mm.parquet": "3365c3b7786ad3df929d784e9a45a190f6aeabab7a545467538983bd89d48049",
    "reason.arrow": "c52ae3b8aa5c86215798c6c88e9d85f4371f2bde18e10c08f545189ef7e3be3f",
    "fleet_parts/_manifest.parquet": "9dbd2ec2758c882ce3a87dad728c92b6cff268c0fbc099c51fd4398aa73d3bd1",
    "fleet_parts/part-00000.parquet": "bf2f0b3e5c195425334f3d8577b03171444e127a18ab9350848578b53c044ea9",
    "fleet_parts/part-00001.parquet": "bd130b6a632c66b906bf62a26d6c767ec332b7278fe6ac69bd721a44c0eb2df6",
    "fleet_parts/part-00002.parquet": "7fcbda72c326c6e0032b8e6cec445567dc65fbc496e11de69ea4da8174ea78d8",
    "sessions.parquet": "a060df6c655d03fb1443957c0112797b8dd8f2e7f3da1000a4334e94338b7882",  # session stream 2
}


# file encoding 2 (BYTE_STREAM_SPLIT numeric columns; `file_encoding` in the metadata), arrival
# stream 1 (regenerated with --arrival-stream 1, or from the metadata of a trace without `arrival_stream`)
PINNED_STREAM1 = {
    "fleet.parquet": "2b0a769fd1cdc7d10437fb0b8cdbf9dcdd658a45004fac4e22b0ea4462f0dae3",
    "fleet_parts/_manifest.parquet": "a44d6450f71d38695d0f367c6afb4aec8eba5a74af8cfbea0b3820edddc3b9bf",
    "fleet_parts/part-00000.parquet": "87589e589c0c5dba07dcc959e72eb6d29610fd80bd0041eff8399f79aa47cf3a",
    "fleet_parts/part-00001.parquet": "bbf5740f432404bff98f3923c40b88161dfd8f0e2efe4917a53509991d21603d",
    "fleet_parts/part-00002.parquet": "0fc9031cfefdf9904e91f5291e42db7a775c48fa82bd7c935661c2df7a0d7802",
    "mm.parquet": "fc750aa309721650f283291a39460c05b3d1e2f205f0781e5222eb930855e00e",
    "pool.arrow": "f8a392486a6fa26cc28ff5de779bf56444b9c42efc063cf8a293540c6c063d5f",
    "pool.parquet": "56839ba27ca5500f04c3bbb249a8c8bb1104117ce99b6e4b72e4faf435f2bc13",
    "reason.arrow": "01416befd872fd0b9e5a750597c43e669b84c999a89a46592295bd92829235ef",
    "sessions.parquet": "c59a6d89a066a5b685cf9faf4958d3bfd87be507358fef7c3a666750d962b950",  # session stream 2
}

# session stream 1 (sample/sessions.py): every session trace made before the streams had
# versions (no `session_stream` in its metadata); --session-stream 1 (or regenerating from such
# a trace's metadata) keeps these bytes. Taken at 4eb816d, before the change; file encodings 2, 1.
PINNED_SESSION_STREAM_1 = {
    "2": "e1daa29c79e4c8cdf9f22d40b24cf267a418f881d7a0f50070e3d9a8130b0cad",
    "1": "b67888ca64ead146a7dc766841da595eae4cdadd1b8fac11e953bf7b6926ad39",
}

# the default: file encoding 2, arrival stream 2 (Gamma with one Philox block per attempt)
PINNED = {
    "fleet.parquet": "681e5538a8ef1d6e703f1e1126a9a94ef39206829bc0a7f5a8e2d2131c23b112",
    "fleet_parts/_manifest.parquet": "c0209d28d559ece8aa03c422e2ac5760bc91dd62fa43140ac83f5ba00e8da71b",
    "fleet_parts/part-00000.parquet": "ea412f8f9a970fb447a1a282783e3e74cecf096e896197964a65a8c7bdd284da",
    "fleet_parts/part-00001.parquet": "0b32e80ad0b62b96f6114af8b11380f7df668b64e2c3a80c3bcf73971bafabf8",
    "fleet_parts/part-00002.parquet": "98a05f7fb5fa7ded5dd78ac9668e7deca55adfbcf2d1640515019137db13a9f2",
    "mm.parquet": "48515a255f593c88b20bb16d00d514002e4c082b2a159805fef02e7b220ddde3",
    "pool.arrow": "54c7e57aa6aec7170295bd7ccc4f314846de6a5753ecb6970e7650eccc7164ea",
    "pool.parquet": "38f8a6844aa5bcb72f274e2918be2e1823976ecd369dfc5a191083aa672173a6",
    "reason.arrow": "7adbbba7f623dbf885a9c0c4d3b8c32d37080f2753f1e8fb4a407d24b98b2897",
    "sessions.parquet": "9ba03dc009fc0a11b4280c08f52e2e2b6d0fdfd03ed2ce1bd506768b6ebc4de9",  # session stream 2
}


def _pinned_bytes(f) -> bytes:
    """A file's bytes; for a partitioned trace's manifest (a zero-row file of the trace's schema,
    io/manifest.py), the manifest JSON it carries, which is pinned as it was when it sat in
    _manifest.json."""
    if f.name.startswith("_manifest."):
        return pq.read_schema(f).metadata[MANIFEST_KEY]
    return f.read_bytes()


def _hashes(name, tmp_path, servegen_root, extra=()):
    args = CASES[name]
    if "/" in args[args.index("--pool") + 1]:
        args = ["--data-dir", str(servegen_root), *args]
    assert main(["generate", *args, *extra, "-o", str(tmp_path / name), "-q"]) == 0
    out = tmp_path / name
    files = [out] if out.is_file() else sorted(out.iterdir())
    return {str(f.relative_to(tmp_path)): hashlib.sha256(_pinned_bytes(f)).hexdigest() for f in files}


def _want(pins, name):
    return {k: v for k, v in pins.items() if k == name or k.startswith(name + "/")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_bytes_are_pinned(name, tmp_path, servegen_root):
    got = _hashes(name, tmp_path, servegen_root)
    assert got == _want(PINNED, name), f"trace bytes changed (pyarrow {pa.__version__})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_arrival_stream_1_keeps_the_bytes_of_older_traces(name, tmp_path, servegen_root):
    got = _hashes(name, tmp_path, servegen_root, ["--arrival-stream", "1"])
    assert got == _want(PINNED_STREAM1, name), f"stream-1 trace bytes changed (pyarrow {pa.__version__})"


@pytest.mark.parametrize("name", sorted(CASES))
def test_file_encoding_1_keeps_the_bytes_of_older_traces(name, tmp_path, servegen_root):
    got = _hashes(name, tmp_path, servegen_root, ["--file-encoding", "1", "--arrival-stream", "1"])
    assert got == _want(PINNED_V1, name), f"encoding-1 trace bytes changed (pyarrow {pa.__version__})"


def test_regenerating_from_metadata_keeps_the_stream_it_names(tmp_path, servegen_root):
    """A stream-1 trace (no `arrival_stream` key) and a stream-2 trace both regenerate to their
    own bytes from their metadata."""
    for extra, pins in (([], PINNED), (["--arrival-stream", "1"], PINNED_STREAM1)):
        first = tmp_path / f"first{len(extra)}.parquet"
        assert main(["generate", *CASES["fleet.parquet"], *extra, "-o", str(first), "-q"]) == 0
        meta = trace_metadata(first)
        again = tmp_path / f"again{len(extra)}.parquet"
        assert main(["generate", "--from-trace-metadata", str(first), "-o", str(again), "-q"]) == 0
        assert hashlib.sha256(again.read_bytes()).hexdigest() == pins["fleet.parquet"]
        assert meta.get("arrival_stream", 1) == (1 if extra else 2)


@pytest.mark.parametrize("encoding", sorted(PINNED_SESSION_STREAM_1))
def test_session_stream_1_keeps_the_bytes_of_older_traces(encoding, tmp_path, servegen_root):
    got = _hashes("sessions.parquet", tmp_path, servegen_root, ["--session-stream", "1", "--arrival-stream", "1", "--file-encoding", encoding])
    assert got == {"sessions.parquet": PINNED_SESSION_STREAM_1[encoding]}, \
        f"session stream 1 trace bytes changed (pyarrow {pa.__version__})"
    if encoding == "2":  # a trace without `session_stream` in its metadata regenerates as stream 1
        again = tmp_path / "again.parquet"
        assert main(["generate", "--from-trace-metadata", str(tmp_path / "sessions.parquet"), "-o", str(again),
                     "-q"]) == 0
        assert hashlib.sha256(again.read_bytes()).hexdigest() == PINNED_SESSION_STREAM_1["2"]
