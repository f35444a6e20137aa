"""Point 2 (loading the app) and the uWSGI-compatible command line."""

import json
import os
import re
import subprocess
import sys
import time

import requests

from conftest import APPS, BIN, VENV, free_port, wait_for


def run(*args, timeout=20, **kwargs):
    return subprocess.run([BIN, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def test_help_lists_uwsgi_options():
    out = run("--help")
    assert out.returncode == 0
    for option in ("--socket", "--http-socket", "--wsgi-file", "--module", "--processes", "--threads",
                   "--lazy-apps", "--buffer-size", "--chmod-socket", "--home", "--die-on-term"):
        assert option in out.stdout


def test_unknown_flag_is_an_error_with_a_suggestion():
    out = run("--sokcet", "/tmp/x.sock", "--wsgi-file", "app.py")
    assert out.returncode == 2
    assert 'unknown option "sokcet", did you mean "socket"?' in out.stderr
    assert "nowhere to listen" in out.stderr  # every problem at once


def test_unsupported_uwsgi_option_is_named_as_such():
    out = run("--socket", "/tmp/x.sock", "--wsgi-file", "app.py", "--emperor", "/etc/vassals")
    assert out.returncode == 2
    assert 'option "emperor" is a uWSGI option ngx-wsgi does not provide: run one ngx-wsgi per app as a systemd unit' in out.stderr


def test_copied_uwsgi_command_line_runs_with_notes(daemon, tmp_path):
    sock = str(tmp_path / "s.sock")
    d = daemon("--master", "--die-on-term", "--enable-threads", "--socket", sock, "--wsgi-file",
               APPS / "pep3333.py", "--processes", "2", "--disable-logging", ready=sock)
    log = d.log()
    assert 'option "die-on-term" ignored: SIGTERM always stops ngx-wsgi gracefully' in log
    assert 'option "enable-threads" ignored: Python threads are always enabled' in log


def test_logto_collects_daemon_and_python_output(daemon, tmp_path):
    port = free_port()
    logfile = tmp_path / "app.log"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py", "--logto", logfile,
           ready=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/errors").text == "logged"
    # The request's log line follows its response: wait for it.
    text = wait_for(lambda: re.search(r"GET /errors => generated 6 bytes in \d+ msecs \(HTTP/1.1 200\)", logfile.read_text()) and logfile.read_text(), 5, "the log")
    assert "listening on" in text
    assert "wsgi.errors: a line for the server log" in text


def test_module_callable_chdir_pythonpath_env(daemon, tmp_path):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--module", "modpkg.web:other", "--chdir", APPS,
           "--pythonpath", APPS / "extra", "--env", "NGX_WSGI_TEST_ENV=from-flag", ready=("127.0.0.1", port))
    info = requests.get(f"http://127.0.0.1:{port}/").json()
    assert info["callable"] == "other"
    assert info["cwd"] == str(APPS)
    assert info["env"] == "from-flag"
    assert info["extra_path_importable"] is True


def test_callable_flag(daemon, tmp_path):
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--module", "modpkg.web", "--callable", "other",
           "--chdir", APPS, ready=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/").json()["callable"] == "other"


def assert_fails_fast(args, *expected, lazy=False):
    """A bad app gives one clear error and a non-zero exit: no crash loop."""
    started = time.monotonic()
    out = run("--socket", f"/tmp/ngx-wsgi-test-{os.getpid()}.sock", *args, *(["--lazy-apps"] if lazy else []))
    assert out.returncode != 0, out.stderr
    assert time.monotonic() - started < 10
    for text in expected:
        assert text in out.stderr, out.stderr
    return out.stderr


def test_missing_module():
    for lazy in (False, True):
        err = assert_fails_fast(["--module", "no_such_module_here"], 'cannot import module "no_such_module_here"',
                                "ModuleNotFoundError", lazy=lazy)
        assert "; respawning it" not in err


def test_missing_callable():
    assert_fails_fast(["--module", "modpkg.web:nope", "--chdir", APPS], 'module "modpkg.web" has no callable "nope"')


def test_callable_that_is_not_callable():
    assert_fails_fast(["--module", "modpkg.web:not_callable", "--chdir", APPS], '"not_callable"', "is not callable")


def test_import_that_raises_shows_the_traceback():
    err = assert_fails_fast(["--wsgi-file", APPS / "raises_on_import.py"], "cannot load --wsgi-file",
                            "Traceback (most recent call last)", "RuntimeError: database settings missing at import")
    err = assert_fails_fast(["--wsgi-file", APPS / "raises_on_import.py"], "could not load the app", lazy=True)
    assert "; respawning it" not in err


def test_missing_wsgi_file():
    assert_fails_fast(["--wsgi-file", "/nonexistent/app.py"], 'cannot open --wsgi-file "/nonexistent/app.py"')


def test_virtualenv_packages_import_only_with_home(daemon, tmp_path):
    app = tmp_path / "needs_flask.py"
    app.write_text("import flask\napplication = flask.Flask('x')\n@application.route('/')\ndef i(): return flask.__version__\n")
    assert_fails_fast(["--wsgi-file", app], "No module named 'flask'")
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", app, "--home", VENV, ready=("127.0.0.1", port))
    assert requests.get(f"http://127.0.0.1:{port}/").text.startswith("3.")


def test_virtualenv_of_another_python_is_refused(tmp_path):
    venv = tmp_path / "old-venv"
    venv.mkdir()
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.9.2\n")
    assert_fails_fast(["--wsgi-file", APPS / "pep3333.py", "--home", venv],
                      f'virtualenv "{venv}" was made with Python 3.9.2 but ngx-wsgi runs Python 3.11')


def test_home_that_is_not_a_virtualenv(tmp_path):
    assert_fails_fast(["--wsgi-file", APPS / "pep3333.py", "--home", tmp_path], "is not a virtualenv")
