"""nginx's own tests of its uwsgi module (nginx-tests `uwsgi.t` and `uwsgi_body.t`),
rewritten: the same nginx configurations, apps, requests and checks, with our daemon as the
backend where they run real uWSGI. Each runs behind Debian's stock `uwsgi_pass` (what the
nginx tests exercise) and behind our module's `wsgi_pass`.

As in those files: requests are raw HTTP/1.0 or 1.1 with bare-LF header lines, the whole
raw response is searched, and nginx's error log must have no [alert] line and no sign of a
crashed worker at the end (the two checks nginx's harness adds to every file).

nginx 1.22 sends a repeated request header as several uwsgi vars of one name; nginx 1.23+
joins them. The daemon joins them as 1.23 does, so the three repeated-header cases pass on
Debian 12's nginx 1.22 as they would on a newer one.
"""

import re
import socket

import pytest

from conftest import APPS, free_port

SUITE = APPS / "nginx_suite"

def nginx_conf(http, server):
    """The nginx.conf of both files: their http-level and server-level parts in the frame
    nginx's test harness writes ({...} filled by the nginx fixture, %(...)s by the test)."""
    return """
{load_module}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log debug;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_body;
    uwsgi_temp_path {prefix}/uwsgi_temp;
""" + http + """
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
""" + server + """
    }}
}}
"""


# uwsgi.t's server: / with two params (one of them hides the client's X-Blah header), and
# /var passing to the address or upstream named by ?b=.
UWSGI_T_CONF = nginx_conf("""
    upstream u {{
        server 127.0.0.1:%(backend)d;
    }}
""", """
        location / {{
            %(pass)s 127.0.0.1:%(backend)d;
            %(param)s SERVER_PROTOCOL $server_protocol;
            %(param)s HTTP_X_BLAH "blah";
        }}
        location /var {{
            %(pass)s $arg_b;
            %(param)s SERVER_PROTOCOL $server_protocol;
        }}
""")

# uwsgi_body.t's server: CONTENT_LENGTH only when the request has a body, and
# $content_length evaluated early (before a chunked body is read), as that test does.
UWSGI_BODY_T_CONF = nginx_conf("", """
        set $variable $content_length;
        location / {{
            %(pass)s 127.0.0.1:%(backend)d;
            %(param)s CONTENT_LENGTH $content_length if_not_empty;
        }}
""")

PASSES = {
    "uwsgi_pass": dict(pass_="uwsgi_pass", param="uwsgi_param", module=False),
    "wsgi_pass": dict(pass_="wsgi_pass", param="wsgi_param", module=True),
}


def raw_http(port, request: bytes) -> str:
    """Sends `request` as it is on a new connection and reads the response to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def get(port, uri, *headers):
    head = "".join(f"{h}\n" for h in headers)
    return raw_http(port, f"GET {uri} HTTP/1.0\nHost: localhost\n{head}\n".encode())


def get_with_length(port, body: bytes):
    return raw_http(port, b"GET / HTTP/1.1\nHost: localhost\nConnection: close\n"
                          b"Content-Length: %d\n\n%s\n" % (len(body), body))


def get_chunked(port, body: bytes):
    chunks = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return raw_http(port, b"GET / HTTP/1.1\nHost: localhost\nConnection: close\n"
                          b"Transfer-Encoding: chunked\n\n" + chunks)


def start_stack(daemon, nginx, app, conf, via):
    backend = free_port()
    daemon("--socket", f"127.0.0.1:{backend}", "--wsgi-file", SUITE / app,
           ready=("127.0.0.1", backend))
    p = PASSES[via]
    text = conf % {"backend": backend, "pass": p["pass_"], "param": p["param"]}
    return nginx(None, conf_text=text, module=p["module"]), backend


def harness_checks(n):
    """What nginx's harness checks after every test file."""
    log = n.error_log()
    alerts = [line for line in log.splitlines() if "[alert]" in line]
    assert alerts == [], "no alerts"
    crashes = [line for line in log.splitlines()
               if re.search(r"exited on signal|Sanitizer", line)]
    assert crashes == [], "no crashed worker, no sanitizer report"


@pytest.mark.parametrize("via", sorted(PASSES))
def test_nginx_uwsgi_t(daemon, nginx, via):
    n, backend = start_stack(daemon, nginx, "echo_headers.py", UWSGI_T_CONF, via)
    port = n.port

    assert re.search("SEE-THIS", get(port, "/")), "uwsgi request"
    head = raw_http(port, b"HEAD /head HTTP/1.0\nHost: localhost\n\n")
    assert head.startswith("HTTP/1.1 200 ")
    assert not re.search("SEE-THIS", head), "no data in HEAD"
    many = get(port, "/headers", *["X-Blah: ignored header"] * 19)
    assert re.search("SEE-THIS", many), "uwsgi request with many ignored headers"
    assert re.search("SEE-THIS", get(port, f"/var?b=127.0.0.1:{backend}")), "uwsgi with variables"
    assert re.search("SEE-THIS", get(port, "/var?b=u")), "uwsgi with variables to upstream"

    repeated = get(port, "/",
                   "X-Forwarded-For: foo", "X-Forwarded-For: bar", "X-Forwarded-For: bazz",
                   "Cookie: foo", "Cookie: bar", "Cookie: bazz",
                   "Foo: foo", "Foo: bar", "Foo: bazz")
    assert re.search(r"X-Forwarded-For: foo, bar, bazz", repeated), \
        f"uwsgi with multiple X-Forwarded-For headers:\n{repeated}"
    assert re.search(r"X-Cookie: foo; bar; bazz", repeated), "uwsgi with multiple Cookie headers"
    assert re.search(r"X-Foo: foo, bar, bazz", repeated), "uwsgi with multiple unknown headers"

    n.stop()
    harness_checks(n)


@pytest.mark.parametrize("via", sorted(PASSES))
def test_nginx_uwsgi_body_t(daemon, nginx, via):
    n, _ = start_stack(daemon, nginx, "echo_body.py", UWSGI_BODY_T_CONF, via)
    port = n.port

    assert re.search("SEE-THIS", get(port, "/")), "uwsgi no body"
    assert re.search(r"cl=6 'foobar'", get_with_length(port, b"foobar")), "uwsgi body"
    assert re.search(r"cl=0 ''", get_with_length(port, b"")), "uwsgi empty body"
    assert re.search(r"cl=6 'foobar'", get_chunked(port, b"foobar")), "uwsgi chunked"
    assert re.search(r"cl=0 ''", get_chunked(port, b"")), "uwsgi empty chunked"

    n.stop()
    harness_checks(n)
