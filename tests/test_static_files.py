"""static-map, static-map2, check-static, static-index, static-skip-ext, static-safe: files
served by the worker before the app, over uwsgi and HTTP, and no path escaping its
directory (.., encoded dots, symlinks out)."""

import os
import re
import socket
import time

import pytest
import requests

from conftest import APPS, check_config, free_port
from test_bad_input import packet, request_vars, send_raw

APP = APPS / "options_app.py"


@pytest.fixture
def site(tmp_path):
    static = tmp_path / "static"
    (static / "css").mkdir(parents=True)
    (static / "css" / "site.css").write_text("body { color: red }\n")
    (static / "docs").mkdir()
    (static / "docs" / "index.html").write_text("<h1>docs</h1>\n")
    (static / "settings.py").write_text("SECRET = 1\n")
    (tmp_path / "secret.txt").write_text("not for the web\n")
    (static / "escape").symlink_to(tmp_path / "secret.txt")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "logo.svg").write_text("<svg/>")
    (static / "logo.svg").symlink_to(shared / "logo.svg")
    return tmp_path


def raw_http(port, target):
    """An HTTP request with the target exactly as written (no client-side normalizing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.decode("latin-1")


def test_static_map_serves_files_before_the_app_over_both_protocols(daemon, nginx, app_sock, site):
    port = free_port()
    d = daemon("--socket", app_sock, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--static-map", f"/static={site}/static", "--static-index", "index.html",
               "--static-skip-ext", ".py", "--static-safe", site / "shared", ready=[app_sock, ("127.0.0.1", port)])
    n = nginx(f"unix:{app_sock}")
    for url in (f"http://127.0.0.1:{port}", n.url):
        r = requests.get(url + "/static/css/site.css", timeout=10)
        assert (r.status_code, r.text) == (200, "body { color: red }\n")
        assert r.headers["Content-Type"] == "text/css; charset=utf-8"
        assert r.headers["Content-Length"] == "20"
        modified = r.headers["Last-Modified"]
        r = requests.get(url + "/static/css/site.css", headers={"If-Modified-Since": modified}, timeout=10)
        assert (r.status_code, r.text) == (304, "")
        older = "Mon, 01 Jan 2001 00:00:00 GMT"
        assert requests.get(url + "/static/css/site.css", headers={"If-Modified-Since": older}).status_code == 200
        head = requests.head(url + "/static/css/site.css", timeout=10)
        assert (head.status_code, head.headers["Content-Length"], head.text) == (200, "20", "")
        assert requests.get(url + "/static/docs/", timeout=10).text == "<h1>docs</h1>\n"
        assert requests.get(url + "/static/logo.svg", timeout=10).text == "<svg/>", "static-safe"
        # No file there, a .py file, a POST: the app answers (with its pid).
        for r in (requests.get(url + "/static/missing.css"), requests.get(url + "/static/settings.py"),
                  requests.post(url + "/static/css/site.css")):
            assert r.status_code == 200 and r.text.isdigit(), r.text
    assert re.search(r"GET /static/css/site.css => generated 20 bytes in \d+ msecs \(HTTP/1.1 200\)", d.log())


def test_no_path_escapes_the_mapped_directory(daemon, app_sock, site):
    port = free_port()
    d = daemon("--socket", app_sock, "--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
               "--static-map", f"/static={site}/static", ready=[app_sock, ("127.0.0.1", port)])
    for target in ("/static/../secret.txt", "/static/%2e%2e/secret.txt", "/static/%2E%2E/%2e%2e/secret.txt",
                   "/static/escape", "/static/..%2fsecret.txt", "/static//../secret.txt"):
        response = raw_http(port, target)
        assert "not for the web" not in response, target
    # Over uwsgi, a peer that sends PATH_INFO with dots as it is (nginx would normalize it).
    for path in ("/static/../secret.txt", "/static/escape", "/static/css/../../secret.txt"):
        response = send_raw(app_sock, packet(request_vars(path)))
        assert b"not for the web" not in response, path
        assert response.startswith(b"HTTP/1.1 200 OK")  # the app's answer
    assert "outside" in d.log() and "not served" in d.log()


def test_static_map2_and_check_static(daemon, site):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
           "--static-map2", f"/static={site}", "--check-static", site / "static" / "docs",
           ready=("127.0.0.1", port))
    # static-map2 keeps the prefix: /static/css/site.css is SITE/static/css/site.css.
    assert requests.get(url + "/static/css/site.css", timeout=10).text == "body { color: red }\n"
    # check-static: any path, looked up in the docroot.
    assert requests.get(url + "/index.html", timeout=10).text == "<h1>docs</h1>\n"
    assert requests.get(url + "/nothing-here", timeout=10).text.isdigit()


def test_bad_static_map_values_name_the_option():
    out = check_config("--http-socket", ":0", "--wsgi-file", APP, "--static-map", "static=/srv")
    assert out.returncode == 2
    assert ('invalid value "static=/srv" for option "static-map": expected /PREFIX=DIR '
            '(e.g. /static=/srv/app/static)') in out.stderr


def test_a_static_index_naming_the_directory_is_not_followed(daemon, site):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    daemon("--http-socket", f"127.0.0.1:{port}", "--wsgi-file", APP,
           "--static-map", f"/static={site}/static", "--static-index", ".", "--static-index", "index.html",
           ready=("127.0.0.1", port))
    assert requests.get(url + "/static/docs/", timeout=10).text == "<h1>docs</h1>\n"
    assert requests.get(url + "/static/css/", timeout=10).text.isdigit(), "no index: the app answers"
