"""The README's "A Django site from nothing", step by step, with private prefixes in place of
the host's: a project from `django-admin startproject` in a venv of its own, `migrate`,
`collectstatic`, `make install` (DESTDIR), the installed example config and unit (its
ExecStartPre and ExecStart, with systemd's readiness protocol), the README's nginx site
with its `location /static/`, Debian's nginx with the installed module snippet, and
Django's admin logged into, with its CSS. The one step replaced is `pip install django`:
the test's .venv's Django is copied into the project's venv, so no network is needed."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import pathlib

import pytest
import requests

from conftest import ROOT, VENV, can_connect, free_port, wait_for

SITE_PACKAGES = "lib/python3.11/site-packages"


def readme_steps():
    """The README walkthrough's shell block."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### A Django site from nothing", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def run(*args, **kwargs):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=120,
                          **kwargs)


@pytest.fixture
def base():
    # Outside pytest's root-only temporary directories: the app runs as www-data.
    path = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-walkthrough-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_the_readmes_django_walkthrough(base):
    steps = readme_steps()
    srv = base / "srv/mysite"
    root = base / "root"

    # 1. The project in a venv of its own.
    assert "python3 -m venv .venv" in steps and ".venv/bin/pip install django" in steps
    srv.mkdir(parents=True)
    run("/usr/bin/python3", "-m", "venv", ".venv", cwd=srv)
    for name in ("django", "asgiref", "sqlparse"):
        for found in (VENV / SITE_PACKAGES).glob(f"{name}*"):
            shutil.copytree(found, srv / ".venv" / SITE_PACKAGES / found.name)
    python = srv / ".venv/bin/python"
    assert ".venv/bin/python -m django startproject mysite ." in steps
    run(python, "-m", "django", "startproject", "mysite", ".", cwd=srv)
    settings = re.search(r"cat >> mysite/settings.py <<'END'\n(.*?)END\n", steps, re.S).group(1)
    with open(srv / "mysite/settings.py", "a") as f:
        f.write(settings)
    for command in ("migrate", "collectstatic --noinput"):
        assert f".venv/bin/python manage.py {command}" in steps
        run(python, "manage.py", *command.split(), cwd=srv)
    assert ".venv/bin/python manage.py createsuperuser" in steps
    run(python, "manage.py", "createsuperuser", "--noinput", cwd=srv,
        env={**os.environ, "DJANGO_SUPERUSER_USERNAME": "admin", "DJANGO_SUPERUSER_EMAIL": "a@example.org",
             "DJANGO_SUPERUSER_PASSWORD": "walk-through-1"})
    assert "chown -R www-data:www-data /srv/mysite" in steps
    run("chown", "-R", "www-data:www-data", srv)

    # 2. make install, the installed config and unit.
    assert "make install" in steps
    run("make", "-s", "-C", ROOT, "install", f"DESTDIR={root}")
    config = root / "etc/ngx-wsgi/mysite.ini"
    config.write_text(config.read_text().replace("/srv/", f"{base}/srv/")
                      .replace("/run/ngx-wsgi/", f"{base}/run/ngx-wsgi/"))
    unit = (root / "etc/systemd/system/ngx-wsgi@.service").read_text()
    assert "systemctl enable --now ngx-wsgi@mysite" in steps

    def unit_command(key):
        line = re.search(rf"^{key}=(.*)$", unit, re.M).group(1)
        return (line.replace("%i", "mysite").replace("/usr/local/bin/", f"{root}/usr/local/bin/")
                .replace("/etc/ngx-wsgi/", f"{root}/etc/ngx-wsgi/").split())

    (base / "run/ngx-wsgi").mkdir(parents=True)  # RuntimeDirectory=ngx-wsgi
    run(*unit_command("ExecStartPre"))
    # Type=notify: started means READY=1, as systemctl start waits for it.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(base / "notify"))
    os.chmod(base / "notify", 0o777)  # as systemd's: the master sends once it runs as www-data
    notify.settimeout(30)
    log = open(base / "daemon.log", "wb")
    daemon = subprocess.Popen(unit_command("ExecStart"), stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, env={**os.environ, "NOTIFY_SOCKET": str(base / "notify")})
    nginx_prefix = base / "nginx"
    nginx = None
    try:
        try:
            assert b"READY=1" in notify.recv(4096)
        except TimeoutError:
            pytest.fail("no READY=1:\n" + (base / "daemon.log").read_text())
        daemon_log = (base / "daemon.log").read_text()
        assert "running as root" not in daemon_log, "the example config sets uid and gid"

        # 3. nginx: the README's site, the module enabled by the installed snippet.
        assert "cp nginx-conf/ngx-wsgi-site.conf /etc/nginx/sites-available/mysite" in steps
        port = free_port()
        (nginx_prefix / "sites-enabled").mkdir(parents=True)
        (nginx_prefix / "modules").symlink_to(root / "usr/lib/nginx/modules")
        site = (ROOT / "nginx-conf/ngx-wsgi-site.conf").read_text()
        site = (site.replace("listen 80;", f"listen 127.0.0.1:{port};")
                .replace("/etc/ngx-wsgi/", f"{root}/etc/ngx-wsgi/").replace("/srv/mysite/", f"{srv}/"))
        (nginx_prefix / "sites-enabled/mysite").write_text(site)
        # The snippet modules-enabled links to, as it will be once DESTDIR is /.
        enabled = os.readlink(root / "etc/nginx/modules-enabled/50-mod-http-wsgi.conf")
        (nginx_prefix / "nginx.conf").write_text(f"""
include {root}{enabled};
user www-data;
worker_processes 1;
pid {nginx_prefix}/nginx.pid;
error_log {nginx_prefix}/error.log;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {nginx_prefix}/body;
    include {nginx_prefix}/sites-enabled/*;
}}
""")
        assert "nginx -t && systemctl reload nginx" in steps
        nginx_cmd = ["nginx", "-p", str(nginx_prefix), "-c", str(nginx_prefix / "nginx.conf")]
        checked = subprocess.run(nginx_cmd + ["-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        nginx = subprocess.Popen(nginx_cmd + ["-g", "daemon off;"], start_new_session=True)
        wait_for(lambda: can_connect(("127.0.0.1", port)), 10, "nginx")

        # The admin, its CSS, and a login.
        url = f"http://127.0.0.1:{port}"
        session = requests.Session()
        session.headers["Host"] = "example.org"
        page = session.get(f"{url}/admin/login/?next=/admin/", timeout=10)
        assert page.status_code == 200 and "Django administration" in page.text
        css = re.search(r'href="(/static/admin/css/base\.css)"', page.text).group(1)
        r = session.get(url + css, timeout=10)
        assert r.status_code == 200 and r.headers["Content-Type"] == "text/css"
        assert r.content == (srv / "static/admin/css/base.css").read_bytes()
        token = session.cookies["csrftoken"]
        r = session.post(f"{url}/admin/login/?next=/admin/", timeout=10, headers={"Referer": f"{url}/admin/"},
                         data={"csrfmiddlewaretoken": token, "username": "admin", "password": "walk-through-1",
                               "next": "/admin/"})
        assert r.status_code == 200 and "Site administration" in r.text, r.text[:500]
        assert "[error]" not in (nginx_prefix / "error.log").read_text()
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(10)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        notify.close()
        log.close()
