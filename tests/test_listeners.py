"""Point 1: listeners, backlog and socket permissions."""

import os
import pwd
import socket
import stat
import subprocess

import requests

from conftest import APPS, BIN, free_port
from test_bad_input import packet, request_vars


def listen_backlog(path):
    """The backlog the kernel shows for a listening unix socket (ss's Send-Q)."""
    out = subprocess.run(["ss", "-xlnH"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if path in fields:
            return int(fields[3])
    raise AssertionError(f"{path} is not listening:\n{out}")


def uwsgi_get(addr, path="/pid"):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(addr)
        s.sendall(packet(request_vars(path)))
        s.shutdown(socket.SHUT_WR)
        return b"".join(iter(lambda: s.recv(65536), b""))


def test_default_backlog_is_not_uwsgis_100(daemon, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    assert listen_backlog(app_sock) >= 1024


def test_listen_sets_the_backlog(daemon, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--listen", "777", ready=app_sock)
    assert listen_backlog(app_sock) == 777


def test_chmod_and_chown_socket(daemon, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--chmod-socket", "660",
           "--chown-socket", "www-data:www-data", ready=app_sock)
    st = os.stat(app_sock)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == pwd.getpwnam("www-data").pw_uid


def test_chown_socket_to_a_group_only_as_nginx_t_advises(daemon, app_sock, tmp_path):
    """`nginx -t` advises `chown-socket = :GROUP` (nginx's workers join through the group):
    the daemon takes it, by name or by number."""
    import grp
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--chmod-socket", "660",
           "--chown-socket", ":www-data", ready=app_sock)
    st = os.stat(app_sock)
    assert (st.st_uid, st.st_gid) == (os.getuid(), grp.getgrnam("www-data").gr_gid)
    other = str(tmp_path / "other.sock")
    daemon("--socket", other, "--wsgi-file", APPS / "pep3333.py", "--chown-socket", "33:33", ready=other)
    assert (os.stat(other).st_uid, os.stat(other).st_gid) == (33, 33)
    out = subprocess.run([BIN, "--socket", str(tmp_path / "x.sock"), "--wsgi-file", APPS / "pep3333.py",
                          "--chown-socket", "nobody:no-such-group-here"], capture_output=True, text=True,
                         timeout=20)
    assert out.returncode != 0
    assert 'chown-socket: no group "no-such-group-here"' in out.stderr


def test_chmod_socket_without_value_is_666(daemon, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--chmod-socket", ready=app_sock)
    assert stat.S_IMODE(os.stat(app_sock).st_mode) == 0o666


def test_abstract_unix_socket(daemon):
    name = f"ngx-wsgi-test-{os.getpid()}"
    d = daemon("--socket", f"@{name}", "--wsgi-file", APPS / "pep3333.py", ready="\0" + name)
    assert uwsgi_get("\0" + name).startswith(b"HTTP/1.1 200 OK")
    assert f'listening on "@{name}"' in d.log()


def test_several_listeners_and_http_option(daemon, app_sock):
    port, http_port = free_port(), free_port()
    daemon("--socket", app_sock, "--socket", f"127.0.0.1:{port}", "--http", f"127.0.0.1:{http_port}",
           "--wsgi-file", APPS / "pep3333.py", ready=("127.0.0.1", http_port))
    assert uwsgi_get(app_sock).startswith(b"HTTP/1.1 200 OK")
    assert requests.get(f"http://127.0.0.1:{http_port}/pid").text.isdigit()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(packet(request_vars("/pid")))
        assert s.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_stale_socket_file_is_replaced(daemon, app_sock):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(app_sock)
    stale.close()  # the file stays, nobody listens: what a crashed server leaves
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    assert uwsgi_get(app_sock).startswith(b"HTTP/1.1 200 OK")


def test_socket_in_use_is_a_clear_error(daemon, app_sock):
    daemon("--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", ready=app_sock)
    out = subprocess.run([BIN, "--socket", app_sock, "--wsgi-file", APPS / "pep3333.py", "--vacuum"],
                         capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert f'cannot bind unix socket "{app_sock}": another server is listening on it' in out.stderr
    # --vacuum cleans up what this process made, never the other server's socket.
    assert uwsgi_get(app_sock).startswith(b"HTTP/1.1 200 OK")


def test_port_in_use_is_a_clear_error(daemon):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([BIN, "--socket", f"127.0.0.1:{port}", "--wsgi-file", APPS / "pep3333.py"],
                             capture_output=True, text=True, timeout=10)
    assert out.returncode == 1
    assert f'cannot bind "127.0.0.1:{port}"' in out.stderr and "Address already in use" in out.stderr


def test_umask_gives_unix_sockets_their_mode(daemon, tmp_path):
    sock = tmp_path / "app.sock"
    daemon("--socket", sock, "--wsgi-file", APPS / "pep3333.py", "--umask", "002", ready=str(sock))
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o775
