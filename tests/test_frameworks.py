"""Point 3 with real frameworks from PyPI (installed in .venv, loaded with --home):
Flask and Django behind stock nginx uwsgi_pass, and over HTTP; and behind nginx with the
interpreter linked into the daemon (`make PYTHON_LINK=static`), whose C extension modules
(the standard library's and the wheels') must find the interpreter in the daemon itself."""

import hashlib
import os
import re
import subprocess

import pytest
import requests

from conftest import APPS, BIN, STATIC_BIN, VENV, free_port

FRAMEWORKS = {
    "flask": ["--wsgi-file", APPS / "flaskapp" / "app.py", "--callable", "app"],
    "django": ["--module", "site_app", "--chdir", APPS / "djangoapp"],
}


LINKED = {"shared": BIN, "static": STATIC_BIN}


@pytest.fixture(params=[(f, t, "shared") for f in FRAMEWORKS for t in ("nginx", "http")]
                + [(f, "nginx", "static") for f in FRAMEWORKS], ids=lambda p: "-".join(p))
def framework(request, daemon, nginx, tmp_path):
    name, transport, linked = request.param
    args = [*FRAMEWORKS[name], "--home", VENV, "--processes", "2", "--threads", "2"]
    if transport == "nginx":
        sock = str(tmp_path / "app.sock")
        d = daemon("--socket", sock, *args, ready=sock, binary=LINKED[linked])
        return name, nginx(f"unix:{sock}").url, d
    port = free_port()
    d = daemon("--http-socket", f"127.0.0.1:{port}", *args, ready=("127.0.0.1", port))
    return name, f"http://127.0.0.1:{port}", d


def csrf_data(name, session, url):
    """Django wants its CSRF token back with a POST; Flask has no such check."""
    if name != "django":
        return {}
    token = session.get(f"{url}/").json()["csrf"]
    session.headers["Referer"] = url + "/"
    return {"csrfmiddlewaretoken": token}


def test_session_cookie_round_trips(framework):
    _, url, _ = framework
    s = requests.Session()
    assert [s.get(f"{url}/").json()["visits"] for _ in range(3)] == [1, 2, 3]


def test_post_form(framework):
    name, url, _ = framework
    s = requests.Session()
    data = {"name": "Zoë", "tag": ["a", "b"], **csrf_data(name, s, url)}
    assert s.post(f"{url}/form", data=data).json() == {"name": "Zoë", "tags": ["a", "b"]}


def test_multipart_upload_of_several_mib(framework):
    name, url, _ = framework
    s = requests.Session()
    payload = os.urandom(6 * 1024 * 1024 + 123)
    r = s.post(f"{url}/upload", files={"file": ("data.bin", payload)}, data={"note": "six mib", **csrf_data(name, s, url)})
    assert r.json() == {"filename": "data.bin", "size": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                        "note": "six mib"}


def test_redirect(framework):
    _, url, _ = framework
    r = requests.get(f"{url}/go", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"].endswith("/")
    assert requests.get(f"{url}/go").json()["visits"] == 1


def test_not_found(framework):
    _, url, _ = framework
    assert requests.get(f"{url}/missing").status_code == 404


def test_failing_view_is_a_500_with_its_traceback_in_our_log(framework):
    name, url, d = framework
    assert requests.get(f"{url}/crash").status_code == 500
    # The framework catches the exception and logs it through Python's logging to
    # stderr, which is our log.
    d.wait_log(f"KeyError: '{name} view failure'")
    d.wait_log("Traceback \\(most recent call last\\)")


def needed_libraries(binary):
    out = subprocess.run(["objdump", "-p", binary], capture_output=True, text=True, check=True).stdout
    return re.findall(r"^\s*NEEDED\s+(\S+)", out, re.M)


@pytest.mark.parametrize("linked", LINKED)
def test_c_extension_modules_load_in_either_build(linked, daemon, tmp_path):
    # The static build carries the interpreter itself, where the shared one loads it.
    libpython = [lib for lib in needed_libraries(LINKED[linked]) if lib.startswith("libpython")]
    assert bool(libpython) == (linked == "shared"), libpython
    port = free_port()
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "extensions.py", "--home", VENV,
           ready=("127.0.0.1", port), binary=LINKED[linked])
    loaded = requests.get(f"http://127.0.0.1:{port}/").json()
    # Each was loaded from its own shared object (not built in), and works: what a
    # missing interpreter symbol would make an ImportError.
    assert set(loaded) == {"_ctypes", "_decimal", "_hashlib", "_json", "_sqlite3", "_ssl", "markupsafe._speedups"}
    for module, (path, works) in loaded.items():
        assert path.endswith(".so") and works, (module, path, works)
