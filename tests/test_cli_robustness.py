"""Issue 19's table, row by row: bad input and faults give one clear line naming the argument or
file (no traceback), output paths are checked before any work, nothing is left behind, long jobs
say what they will make first; a bug still shows its traceback with a request to report it."""
from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servegen_fast import cli
from servegen_fast.io.atomic import OutputError, check_output, clean_stale
from servegen_fast.io.pool_file import open_pool
from servegen_fast.model import rates as R
from servegen_fast.sample.estimate import BYTES_PER_REQUEST, estimate

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["generate", "--pool", "builtin", "--duration", "10m", "--rate", "5", "-q"]


@pytest.fixture
def azure(shared_data) -> Path:
    path = shared_data / "azure-llm-2023-conv.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent (docs/data.md)")
    return path


def run_cli(capsys, *argv) -> tuple[int, str]:
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        rc = e.code
    err = capsys.readouterr().err
    return rc, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1, err
    return errors[0]


def tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# --------------------------------------------------------------------------- rows 3, 4, 5: output paths
def test_special_file_output_is_refused_not_replaced(tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    targets = [fifo] + ([Path("/dev/full")] if Path("/dev/full").exists() else [])
    for target in targets:
        rc, err = run_cli(capsys, *SMALL, "-o", target)
        assert rc == 2 and "not a regular file" in one_error_line(err) and str(target) in err
        assert not stat.S_ISREG(os.stat(target).st_mode)  # still the device / pipe


def test_directory_output_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "adir").mkdir()
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr("servegen_fast.io.pool_file.open_pool", lambda *a, **k: calls.append(a))
    rc, err = run_cli(capsys, *SMALL, "-o", "adir")
    assert rc == 2 and "--output adir: is a directory" in one_error_line(err)
    assert calls == [] and list((tmp_path / "adir").iterdir()) == [] and tmp_files(tmp_path) == []
    monkeypatch.undo()
    rc, err = run_cli(capsys, *SMALL, "--partition", "hour", "-o", tmp_path / "adir" / "x")
    assert rc == 0  # a new directory inside is fine


def unwritable_dirs(tmp_path) -> list[Path]:
    """/proc refuses new files even to root; a mode-555 folder refuses them to other users."""
    dirs = [Path("/proc")] if Path("/proc/self").exists() else []
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() != 0:
        dirs.append(ro)
    return dirs


def test_unwritable_outputs_every_command(tmp_path, capsys, azure):
    dirs = unwritable_dirs(tmp_path)
    assert dirs, "no unwritable folder to test with here"
    for d in dirs:
        for argv, arg in ((SMALL + ["-o", d / "t.parquet"], "--output"),
                          (SMALL + ["--partition", "hour", "-o", d / "parts"], "--output"),
                          (["fit", azure, "-o", d / "p.parquet", "-q"], "--output"),
                          (["analyze", azure, "--plots", d / "plots"], "--plots")):
            rc, err = run_cli(capsys, *argv)
            line = one_error_line(err)
            assert rc == 2 and arg in line and "cannot write" in line, (argv, err)


def test_check_output_library_rules(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a directory"):
        check_output(tmp_path, "file")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        check_output(tmp_path / "f", "dir")
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "no" / "f", "file")
    assert check_output(tmp_path / "f", "file") == tmp_path / "f"  # replacing a regular file is fine
    assert check_output(tmp_path / "new" / "deeper", "dir") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created


# --------------------------------------------------------------------------- rows 6, 14: bad numbers
@pytest.mark.parametrize("args, arg, what", [
    (["--clients", "0"], "--clients", "positive"),
    (["--rate", "0"], "--rate", "positive"),
    (["--rate", "nan"], "--rate", "finite"),
    (["--rate", "-3"], "--rate", "positive"),
    (["--chunk-mb", "0"], "--chunk-mb", "positive"),
    (["--mean-rate", "5"], "--mean-rate", "--clients"),
    (["--duration", "0"], "--duration", "positive"),
])
def test_bad_numbers_name_their_argument(tmp_path, capsys, args, arg, what):
    argv = ["generate", "--pool", "builtin", "-o", tmp_path / "t.parquet", *args]
    if "--duration" not in args:
        argv += ["--duration", "10m"]
    rc, err = run_cli(capsys, *argv)
    line = one_error_line(err)
    assert rc != 0 and arg in line and what in line and "np.float64" not in line, err
    assert not (tmp_path / "t.parquet").exists()


# --------------------------------------------------------------------------- rows 7, 8: info
def test_info_on_a_parquet_file_that_is_not_a_trace(tmp_path, capsys):
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), other)
    rc, err = run_cli(capsys, "info", other)
    line = one_error_line(err)
    assert rc == 2 and "other.parquet: not a trace" in line and "timestamp" in line


def test_info_on_one_partition_file_gives_its_own_span(tmp_path, capsys):
    out = tmp_path / "trace_dir"
    assert cli.main(["generate", "--pool", "builtin", "--duration", "3h", "--rate", "4", "--partition", "hour",
                     "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["info", str(out / "part-00001.parquet"), "--json"]) == 0
    import json

    s = json.loads(capsys.readouterr().out)
    assert s["duration_s"] == 3600 and s["mean_rate"] == pytest.approx(4.0, rel=0.1)
    assert cli.main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["duration_s"] == 3 * 3600


# --------------------------------------------------------------------------- row 9: temporary files
def test_stale_temporary_files_are_cleaned_on_the_next_run(tmp_path, capsys):
    dead = 2 ** 22 + 12345  # above the default pid_max: no such process
    out = tmp_path / "t.parquet"
    stale = [tmp_path / f".t.parquet.pid{dead}.abc.tmp", tmp_path / ".t.parquet.k2j4h5g6.tmp"]  # + an old name
    live = tmp_path / f".t.parquet.pid{os.getppid()}.abc.tmp"  # a writer still running
    other = tmp_path / f".u.parquet.pid{dead}.abc.tmp"  # another output's
    for f in stale + [live, other]:
        f.write_bytes(b"x" * 10)
    rc, _ = run_cli(capsys, *SMALL, "-o", out)
    assert rc == 0 and out.is_file()
    assert tmp_files(tmp_path) == sorted([live.name, other.name])
    parts = tmp_path / "parts"
    assert cli.main([*SMALL, "--partition", "hour", "-o", str(parts)]) == 0
    left = parts / f".part-00000.parquet.pid{dead}.xyz.tmp"
    left.write_bytes(b"x")
    assert cli.main([*SMALL, "--partition", "hour", "-o", str(parts)]) == 0  # a resume that keeps every part
    assert tmp_files(parts) == []
    assert clean_stale(tmp_path) == 1  # the other output's dead writer (old names only for a named output)


def _start(args, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "servegen_fast.cli", *args], cwd=tmp_path,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def _wait_for_tmp(proc, folder: Path, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not tmp_files(folder):
        assert proc.poll() is None and time.monotonic() < deadline, "the writer ended before writing"
        time.sleep(0.05)
    time.sleep(0.5)


@pytest.mark.slow
def test_killed_writer_leaves_nothing_after_the_next_run(tmp_path):
    big = ["generate", "--pool", "builtin", "--duration", "30d", "--rate", "200", "-o", "t.parquet"]
    proc = _start(big, tmp_path)
    _wait_for_tmp(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)  # any exit Python sees removes its temporary file
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and tmp_files(tmp_path) == [], err
    proc = _start(big, tmp_path)
    _wait_for_tmp(proc, tmp_path)
    proc.kill()  # kill -9: nothing can clean up now ...
    proc.communicate(timeout=60)
    assert len(tmp_files(tmp_path)) == 1 and not (tmp_path / "t.parquet").exists()
    p = subprocess.run([sys.executable, "-m", "servegen_fast.cli", *SMALL, "-o", "t.parquet"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and tmp_files(tmp_path) == []  # ... but the next run of the same output does


# --------------------------------------------------------------------------- row 10: estimates first
def test_generate_says_what_it_will_make_before_it_starts(tmp_path, capsys):
    rc, err = run_cli(capsys, "generate", "--pool", "builtin", "--duration", "1h", "--rate", "10",
                      "-o", tmp_path / "t.parquet")
    assert rc == 0
    lines = err.strip().splitlines()
    assert lines[0].startswith("generating 3,600 s into") and "KiB" in lines[0]
    said = float(re.search(r"about ([\d.]+) k requests", lines[0]).group(1)) * 1e3
    wrote = int(re.search(r"wrote ([\d,]+) requests", lines[-1]).group(1).replace(",", ""))
    assert abs(said - wrote) <= 50  # servegen mode: the exact count (to the 0.1 k printed)


def test_estimate_of_a_long_job():
    pool = open_pool("builtin")
    from servegen_fast.model.population import extend_horizon

    days = 1000
    e = estimate(extend_horizon(pool, days * 86400), 0, days * 86400, R.Constant(1.0), "renewal")
    assert e.requests == pytest.approx(days * 86400.0) and e.bytes == pytest.approx(days * 86400 * BYTES_PER_REQUEST)
    assert e.seconds[0] < e.seconds[1] and "about 86.4 M requests" in e.describe()
    n = estimate(pool, 0, 3600, R.Constant(50.0), "servegen").requests  # servegen: the exact count
    from servegen_fast.sample.generate import generate_table

    assert generate_table(pool, 50.0, 3600).num_rows == n


def test_estimate_sees_the_compiled_kernels():
    """After a generation the cpu kernels are in Numba's cache, and the estimate says so (it
    looks for the arrival kernel's cache file by name)."""
    from servegen_fast.sample.estimate import kernels_cached
    from servegen_fast.sample.generate import generate_table

    generate_table(open_pool("builtin"), 5.0, 600)
    assert kernels_cached()


# --------------------------------------------------------------------------- row 11: missing extras
@pytest.mark.parametrize("argv", [["serve", "--port", "0"], ["replay", "TRACE", "-o", "OUT"]])
def test_missing_replay_extra_gives_the_install_hint(tmp_path, argv):
    trace = tmp_path / "t.parquet"
    assert cli.main([*SMALL, "-o", str(trace)]) == 0
    argv = [str(trace) if a == "TRACE" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            f"from servegen_fast.cli import main; sys.exit(main({argv!r}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "pip install 'servegen-fast[replay]'" in one_error_line(p.stderr)


# --------------------------------------------------------------------------- row 12: fit from too little
def test_fit_from_too_few_requests(tmp_path, capsys, azure):
    lines = azure.read_text().splitlines()
    one, three = tmp_path / "one.csv", tmp_path / "three.csv"
    one.write_text("\n".join(lines[:2]) + "\n")
    three.write_text("\n".join(lines[:4]) + "\n")
    rc, err = run_cli(capsys, "fit", one, "-o", tmp_path / "one.pool.parquet", "-q")
    assert rc == 0 and "warning: " in err and "one.csv has 1 request(s)" in err and "no requests" in err
    rc, err = run_cli(capsys, "generate", "--pool", tmp_path / "one.pool.parquet", "-o", tmp_path / "one.parquet")
    assert rc == 0 and "warning: the trace has no requests" in err
    rc, err = run_cli(capsys, "fit", three, "-o", tmp_path / "three.pool.parquet", "-q")
    assert rc == 0
    rc, err = run_cli(capsys, "generate", "--pool", tmp_path / "three.pool.parquet", "-o", tmp_path / "t.parquet",
                      "--rate-scale", "0.1")
    assert rc == 0 and "warning: the trace has no requests" in err


# --------------------------------------------------------------------------- bugs
def test_a_bug_shows_its_traceback_and_asks_for_a_report(monkeypatch, capsys):
    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr("servegen_fast.cli.info.run", broken)
    rc, err = run_cli(capsys, "info", "x")
    assert rc == 1 and "Traceback" in err and "TypeError: unsupported operand" in err
    assert "This is a bug in servegen-fast" in err and "please report it" in err


def test_oserror_is_one_line_naming_the_file(tmp_path, capsys):
    rc, err = run_cli(capsys, "info", tmp_path / "absent.parquet")
    assert rc == 2 and "absent.parquet" in one_error_line(err)


def test_main_restores_the_sigterm_handler(tmp_path, capsys):
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["info", "--backends"]) == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_named_subcommand_parses_as_with_every_subcommand():
    """main() builds only the named subcommand's parser (cli.build_parser(only)): its help and
    its parse of the same arguments are those of the full parser."""
    from servegen_fast import cli

    def sub(parser, name):
        action = next(a for a in parser._actions if a.dest == "command")
        return action.choices[name]

    argv = ["generate", "--pool", "builtin", "--duration", "1h", "--seed", "3", "-o", "x.parquet"]
    for c in cli.COMMANDS:
        name = cli._name(c)
        assert sub(cli.build_parser(name), name).format_help() == sub(cli.build_parser(), name).format_help()
    assert vars(cli.build_parser("generate").parse_args(argv)) == vars(cli.build_parser().parse_args(argv))


def test_only_the_program_freezes_the_heap_at_exit(monkeypatch, capsys):
    """main() run as the program (no argv) registers gc.freeze for the interpreter's exit (a
    shorter teardown); a Python caller's main(argv) registers nothing."""
    import atexit
    import gc

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert registered == []
    monkeypatch.setattr(sys, "argv", ["servegen-fast", "--version"])
    with pytest.raises(SystemExit):
        cli.main()
    assert registered == [gc.freeze]
