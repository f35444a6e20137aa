"""The daemon inside Debian's own Python (backend/src/python_host.rs): with
ngx_wsgi_host.so beside it (what `make build` and the package install), the `ngx-wsgi`
executable replaces itself with /usr/bin/python3.X running the daemon from that module.
The app must not see the difference from the interpreter linked into the executable
(NGX_WSGI_PYTHON_HOST=off, and the static build), nor ps, systemd or a reload."""

import os
import re
import shutil
import signal
import subprocess

import pytest
import requests

from conftest import APPS, BIN, STATIC_BIN, VENV, command_line, free_port, wait_for

PYTHON = os.path.realpath("/usr/bin/python3")
MODE = {
    "python": (BIN, {}),
    "embedded": (BIN, {"NGX_WSGI_PYTHON_HOST": "off"}),
    "static": (STATIC_BIN, {}),
}


def start(daemon, mode):
    binary, env = MODE[mode]
    port = free_port()
    args = ["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py",
            "--env", "APP_SETTING=from-the-config", "--processes", "2"]
    d = daemon(*args, env=env, binary=binary, ready=("127.0.0.1", port))
    wait_for(lambda: len(d.worker_pids()) == 2, 5, "2 workers")
    return d, f"http://127.0.0.1:{port}/"


def master_view(d):
    with open(f"/proc/{d.pid}/comm") as f:
        return os.readlink(f"/proc/{d.pid}/exe"), f.read().strip(), command_line(d.pid)


def test_with_the_module_beside_it_the_daemon_runs_in_debians_python_and_shows_as_ngx_wsgi(daemon):
    d, url = start(daemon, "python")
    report = requests.get(url).json()
    command = [str(a) for a in d.args]
    # Master and worker run /usr/bin/python3.11 ...
    assert report["exe"] == PYTHON
    # ... and show as the command that started them: `ps`, `pgrep ngx-wsgi`, systemd.
    assert (report["comm"], report["cmdline"]) == ("ngx-wsgi", command)
    assert master_view(d) == (PYTHON, "ngx-wsgi", command)
    assert all(command_line(pid) == command for pid in d.worker_pids())
    # The embedded daemon, for comparison.
    d2, url2 = start(daemon, "embedded")
    assert requests.get(url2).json()["exe"] == BIN
    assert master_view(d2)[0] == BIN


@pytest.mark.parametrize("locale_env", [{"LC_ALL": "", "LC_CTYPE": "", "LANG": ""}, {"LC_ALL": "C"}],
                         ids=["no-locale-set", "LC_ALL=C"])
def test_files_open_as_utf8_under_a_c_locale_whichever_interpreter_runs_the_app(daemon, locale_env):
    """systemd runs a service without LANG: the C locale, whose encoding is ASCII. Inside
    python3.11 the locale is coerced to C.UTF-8 (or, with LC_ALL=C, the UTF-8 mode is on),
    so open() reads and writes UTF-8; the embedded interpreter and the static build start
    the same way, where an embedder's default would have them raise UnicodeEncodeError at
    the first accented letter an app writes."""
    seen = {}
    for mode, (binary, env) in MODE.items():
        port = free_port()
        d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py",
                   env={**env, **locale_env}, binary=binary, ready=("127.0.0.1", port))
        seen[mode] = requests.get(f"http://127.0.0.1:{port}/").json()["encodings"]
        d.stop()
    assert seen["python"] == seen["embedded"] == seen["static"], seen
    filesystem, preferred, _, _ = seen["python"]
    assert (filesystem, preferred) == ("utf-8", "utf-8"), seen


def test_the_app_sees_the_same_interpreter_in_python_as_linked_in(daemon):
    reports = {mode: requests.get(start(daemon, mode)[1]).json() for mode in MODE}
    same = ["executable", "argv", "path0", "empty_path_entries", "sigint_raises_keyboard_interrupt", "sigpipe", "sigxfsz", "env", "version", "comm",
            "main_module_names"]
    seen = {mode: {key: r[key] for key in same} for mode, r in reports.items()}
    assert seen["python"] == seen["embedded"] == seen["static"], seen
    # What each has: sys.argv [''], the working directory first on sys.path once,
    # SIGINT the daemon's (no KeyboardInterrupt in the app), the config's env.
    assert seen["python"]["argv"] == [""]
    assert seen["python"]["executable"] == PYTHON
    assert (seen["python"]["path0"], seen["python"]["empty_path_entries"]) == ("", 1)
    assert seen["python"]["sigint_raises_keyboard_interrupt"] is False
    assert seen["python"]["env"] == "from-the-config"
    assert seen["python"]["main_module_names"] == []


def test_sys_executable_is_the_virtualenvs_python_with_home_in_either_interpreter(daemon):
    for mode in MODE:
        binary, env = MODE[mode]
        port = free_port()
        daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py",
               "--home", VENV, env=env, binary=binary, ready=("127.0.0.1", port))
        assert requests.get(f"http://127.0.0.1:{port}/").json()["executable"] == str(VENV / "bin" / "python"), mode


def test_a_reload_runs_the_daemon_in_python_again_with_the_same_pid(daemon):
    d, url = start(daemon, "python")
    before = requests.get(url).json()
    old_workers = set(d.worker_pids())
    d.signal(signal.SIGHUP)
    wait_for(lambda: len(set(d.worker_pids()) - old_workers) == 2
             and not old_workers & set(d.worker_pids()), 15, "two new workers, the old ones gone")
    after = requests.get(url).json()
    assert after["pid"] != before["pid"]
    assert (after["exe"], after["comm"], after["cmdline"]) == (before["exe"], before["comm"], before["cmdline"])
    assert master_view(d) == (PYTHON, "ngx-wsgi", [str(a) for a in d.args])


def test_the_config_is_read_inside_python_as_the_executable_read_it_before_its_env(daemon, tmp_path):
    # `env` is set before Python starts (os.environ has it); the arguments, read again
    # inside Python, must still see the environment from before it: 2 processes here.
    ini = tmp_path / "app.ini"
    ini.write_text("[uwsgi]\nenv = APP_SETTING=from-the-config\n"
                   "if-not-env = APP_SETTING\nprocesses = 2\nendif =\n")
    for mode in MODE:
        binary, env = MODE[mode]
        port = free_port()
        d = daemon(ini, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py",
                   env=env, binary=binary, ready=("127.0.0.1", port))
        d.wait_log("forking 2 worker")
        report = requests.get(f"http://127.0.0.1:{port}/").json()
        assert report["env"] == "from-the-config", mode
        assert "NGX_WSGI_ENV_BEFORE_CONFIG" not in report["environ_names"], mode
        d.stop()


def test_a_relative_module_path_is_kept_absolute_for_reloads_after_chdir(daemon, tmp_path):
    shutil.copy(os.path.join(os.path.dirname(BIN), "ngx_wsgi_host.so"), tmp_path / "host.so")
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py", "--chdir", "/",
               env={"NGX_WSGI_PYTHON_HOST": "host.so"}, cwd=tmp_path, ready=("127.0.0.1", port))
    wait_for(lambda: len(d.worker_pids()) == 1, 5, "a worker")
    first = requests.get(f"http://127.0.0.1:{port}/").json()
    assert first["exe"] == PYTHON
    d.signal(signal.SIGHUP)
    wait_for(lambda: first["pid"] not in d.worker_pids() and len(d.worker_pids()) == 1, 15, "the reloaded worker")
    assert requests.get(f"http://127.0.0.1:{port}/").json()["exe"] == PYTHON
    assert "reload refused" not in d.log()


def test_started_through_a_link_the_process_shows_the_links_name(daemon, tmp_path):
    link = tmp_path / "mysite-wsgi"
    link.symlink_to(BIN)
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "interpreter_app.py",
               binary=str(link), ready=("127.0.0.1", port))
    report = requests.get(f"http://127.0.0.1:{port}/").json()
    assert (report["exe"], report["comm"], report["cmdline"][0]) == (PYTHON, "mysite-wsgi", str(link))
    assert master_view(d) == (PYTHON, "mysite-wsgi", [str(a) for a in d.args])


def test_a_module_from_other_sources_is_refused_with_what_to_do(tmp_path):
    build = re.search(r"\(build ([0-9a-f]{16})\)", subprocess.run([BIN, "--version"], capture_output=True,
                                                                  text=True, check=True).stdout).group(1)
    module = open(os.path.join(os.path.dirname(BIN), "ngx_wsgi_host.so"), "rb").read()
    assert build.encode() in module
    other = tmp_path / "ngx_wsgi_host.so"
    other.write_bytes(module.replace(build.encode(), b"0123456789abcdef"))
    out = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--wsgi-file", APPS / "interpreter_app.py"],
                         env={**os.environ, "NGX_WSGI_PYTHON_HOST": str(other)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr == (f"ngx-wsgi: {other} is from other sources than {BIN} (build 0123456789abcdef against "
                          f"{build}): install both from one build (make build), or set NGX_WSGI_PYTHON_HOST=off "
                          "to run the daemon in the executable\n")


def test_a_module_path_that_is_no_file_is_refused_with_what_the_variable_takes(tmp_path):
    out = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--wsgi-file", APPS / "interpreter_app.py"],
                         env={**os.environ, "NGX_WSGI_PYTHON_HOST": str(tmp_path / "missing.so")},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr == (f"ngx-wsgi: NGX_WSGI_PYTHON_HOST={tmp_path / 'missing.so'} is not a file: "
                          "it is \"off\" or the path of ngx_wsgi_host.so\n")


def test_a_module_that_does_not_load_says_so_and_how_to_run_without_it(tmp_path):
    broken = tmp_path / "ngx_wsgi_host.so"
    broken.write_text("not an ELF file\n")
    out = subprocess.run([BIN, "--http-socket", "127.0.0.1:0", "--wsgi-file", APPS / "interpreter_app.py"],
                         env={**os.environ, "NGX_WSGI_PYTHON_HOST": str(broken)},
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.startswith(f"ngx-wsgi: cannot load the daemon from {broken}: ")
    assert out.stderr.endswith("(NGX_WSGI_PYTHON_HOST=off runs it in the executable)\n")
