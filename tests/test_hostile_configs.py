"""No config file can hang, exhaust or crash nginx or the daemon: the files that did
(exponential placeholders and math, self-including files, /dev/zero, a FIFO, /dev/stdin,
overflowing numbers, megabytes of unknown names) fail fast and cleanly, through
`nginx -t` with wsgi_app (the loader runs inside nginx's master) and --check-config.

Each case asserts what the user sees, and a bound: under 3 s and 100 MiB, where these
took seconds to minutes and gigabytes, or never finished."""

import os
import subprocess
import time

import pytest

from conftest import BIN, write_nginx_conf

HEAD = "[uwsgi]\nsocket = /run/app.sock\nmodule = app\n"


def expansion_bomb():
    lines = ["a0 = xxxxxxxx"] + [f"a{i} = " + f"%(a{i - 1})" * 8 for i in range(1, 12)]
    return HEAD + "\n".join(lines) + "\nenv = X=%(a11)\n"


def math_bomb():
    lines = ["b0 = 1"] + [f"b{i} = %(" + " * ".join([f"b{i - 1}"] * 10) + ")" for i in range(1, 60)]
    return HEAD + "\n".join(lines) + "\nprocesses = %(b59)\n"


CASES = {
    # name: (config text, or a function of the test's directory; what the errors say, or
    # None for a config that is valid and loads)
    "placeholder expansion bomb": (expansion_bomb(), "expands to more than 65536 bytes"),
    "placeholder math, 10 operands a line": (math_bomb(), None),
    "file including itself six times": (HEAD + "ini = %p\n" * 6, "includes itself"),
    "@(/dev/zero)": (HEAD + "x = @(/dev/zero)\nenv = X=%(x)\n", "@(/dev/zero): not a regular file"),
    "ini = /dev/zero": (HEAD + "ini = /dev/zero\n", "/dev/zero: not a regular file"),
    "@(/dev/stdin)": (HEAD + "x = @(/dev/stdin)\nenv = X=%(x)\n", "not a regular file"),
    "an include that is a FIFO": (lambda d: HEAD + f"ini = {d}/fifo.ini\n", "fifo.ini: not a regular file"),
    "harakiri that overflows in milliseconds": (HEAD + "harakiri = 18446744073709552\n",
                                                "expected a whole number of seconds up to 315360000 (ten years)"),
    "harakiri at u64::MAX": (HEAD + "harakiri = 18446744073709551615\n", "up to 315360000"),
    "reload-mercy past any deadline": (HEAD + "reload-mercy = 18446744073709551615\n", "from 1 to 315360000"),
    "reload-on-rss past u64 bytes": (HEAD + "reload-on-rss = 18446744073709551615\n", "expected a whole number of MiB up to 1073741824 (1 PiB)"),
    "processes beyond the machine": (HEAD + "processes = 4294967295\n", "a whole number from 1 to 4096"),
    "64 KiB of unknown names": (HEAD + "".join(f"unknown-name-{i:05d} = 1\n" for i in range(2200)),
                                "unknown option"),
    "64 KiB of distinct placeholders": (HEAD + "".join(f"p{i} = %(q{i})\n" for i in range(3800)),
                                        "refers to nothing"),
}


# Runs a command from a small fresh process and writes its peak RSS (KiB) to argv[1]: a
# process started from pytest itself inherits pytest's own peak (Linux keeps it across exec).
LAUNCHER = """
import os, resource, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status = os.waitpid(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def measured(args, tmp_path):
    """Runs a command: (exit code, output, seconds, its peak RSS in MiB). Killed after
    30 s, so a hang fails the test rather than the suite."""
    output, rss = tmp_path / f"output-{time.monotonic_ns()}", tmp_path / f"rss-{time.monotonic_ns()}"
    started = time.monotonic()
    with open(output, "wb") as out:
        proc = subprocess.run(["/usr/bin/python3", "-c", LAUNCHER, str(rss), *args], stdin=subprocess.DEVNULL,
                              stdout=out, stderr=subprocess.STDOUT, timeout=30)
    elapsed = time.monotonic() - started
    return proc.returncode, output.read_text(errors="replace"), elapsed, int(rss.read_text()) / 1024


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_config_fails_fast_and_cleanly(case, tmp_path):
    text, expected = CASES[case]
    os.mkfifo(tmp_path / "fifo.ini")
    ini = tmp_path / "hostile.ini"
    ini.write_text(text(tmp_path) if callable(text) else text)
    assert ini.stat().st_size <= 64 * 1024

    code, out, elapsed, peak = measured([BIN, "--check-config", str(ini)], tmp_path)
    assert code == (0 if expected is None else 2), out[-2000:]
    assert expected is None or expected in out, out[-2000:]
    assert elapsed < 3, f"--check-config took {elapsed:.1f} s"
    assert peak < 100, f"--check-config peak RSS {peak:.0f} MiB"
    if expected is None:
        return

    prefix = tmp_path / "nginx"
    prefix.mkdir()
    conf = write_nginx_conf(prefix, 8, f"wsgi_app {ini};", module=True)
    code, out, elapsed, peak = measured(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], tmp_path)
    assert code == 1, out[-2000:]
    assert expected in out and "test failed" in out, out[-2000:]
    assert elapsed < 3, f"nginx -t took {elapsed:.1f} s"
    assert peak < 100, f"peak RSS {peak:.0f} MiB"
