"""Real-shaped uWSGI configs (tests/configs/): each passes --check-config and serves a
request through nginx. And the two files of a popular uWSGI + nginx + Django tutorial
(tests/configs/tutorial/), run as the tutorial runs them, paths aside."""

import os
import pathlib
import re
import signal
import subprocess
import tempfile

import pytest
import requests

from conftest import BIN, ROOT, check_config, free_port, pid_alive, wait_for

CONFIGS = ROOT / "tests" / "configs"
CORPUS = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".ini", ".xml", ".toml"))
DJANGO_ADMIN = ROOT / ".venv" / "bin" / "django-admin"


def test_the_corpus_has_at_least_15_configs():
    assert len(CORPUS) >= 15, [p.name for p in CORPUS]


def overrides(text, tmp):
    """Command-line options that move what a file puts in system places into the test's
    directory (the command line overrides the file, a list option replaces its list)."""
    named = lambda *names: any(re.search(rf"(^|<|\n)\s*{n}\s*(=|>)", text) for n in names)
    args = ["--socket", tmp / "app.sock"]
    moved = {
        ("http-socket", "http"): ["--http-socket", f"127.0.0.1:{free_port()}"],
        ("stats", "stats-server"): ["--stats", f"127.0.0.1:{free_port()}"],
        ("logto",): ["--logto", tmp / "app.log"],
        ("log-backupname",): ["--log-backupname", tmp / "app.log.1"],
        ("safe-pidfile",): ["--safe-pidfile", tmp / "app.pid"],
        ("pidfile",): ["--pidfile", tmp / "app.pid"],
        ("master-fifo",): ["--master-fifo", tmp / "app.fifo"],
    }
    for names, extra in moved.items():
        if named(*names):
            args += extra
    return args


@pytest.mark.parametrize("config", CORPUS, ids=lambda p: p.name)
def test_corpus_config_checks_and_serves(config, daemon, nginx, tmp_path):
    text = config.read_text()
    path, expected = re.search(r"expect: (\S+) -> \"(.+?)\"", text).groups()
    check = check_config(config, cwd=CONFIGS)
    assert check.returncode == 0, check.stderr
    d = daemon(config, *overrides(text, tmp_path), cwd=CONFIGS, ready=str(tmp_path / "app.sock"))
    n = nginx(f"unix:{tmp_path}/app.sock")
    r = requests.get(n.url + path, timeout=20)
    assert r.status_code == 200, f"{r.status_code}: {r.text[:300]}\n{d.log()}"
    assert expected in r.text


def world_readable_dir():
    """The tutorial's app runs as www-data: its directory must be one www-data can read."""
    base = pathlib.Path(tempfile.mkdtemp(prefix="ngx-wsgi-tutorial-"))
    base.chmod(0o755)
    return base


def test_tutorial_ini_runs_unchanged_behind_nginx_with_wsgi_app(nginx):
    base = world_readable_dir()
    master = None
    try:
        subprocess.run([DJANGO_ADMIN, "startproject", "mysite1"], check=True, cwd=base)
        (base / "Env").mkdir()
        (base / "Env" / "mysite1").symlink_to(ROOT / ".venv")
        for d in ("run", "log"):
            (base / d).mkdir()
        ini = base / "uwsgi.ini"
        text = (CONFIGS / "tutorial" / "uwsgi.ini").read_text()
        # /tmp first: the test's own directory is in /tmp too.
        for system, ours in (("=/tmp/", f"={base}/"), ("= /home/user1", f"= {base}"),
                             ("=/run/uwsgi/", f"={base}/run/"), ("=/var/log/uwsgi/", f"={base}/log/")):
            assert system in text
            text = text.replace(system, ours)
        ini.write_text(text)

        check = check_config(ini)
        assert check.returncode == 0, check.stderr
        assert "buffer-size = 65536" in check.stdout
        assert re.search(r"uwsgi.ini:2: \"# Ubuntu.*\" after the value of uid is read as a comment", check.stderr)

        # As the tutorial starts it: it daemonizes, the command returns at once.
        started = subprocess.run([BIN, "--ini", ini], capture_output=True, text=True, timeout=30)
        assert started.returncode == 0, started.stderr
        pidfile, sock = base / "mysite1-master.pid", base / "run" / "mysite1.sock"
        master = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 15, "the pidfile"))
        log = base / "log" / "mysite1.log"
        wait_for(lambda: sock.exists() and "worker 2 started" in log.read_text(), 30,
                 f"the socket; the log says:\n{log.read_text() if log.exists() else ''}")
        st = sock.stat()
        import pwd, grp
        assert (st.st_uid, st.st_gid) == (pwd.getpwnam("www-data").pw_uid, grp.getgrnam("www-data").gr_gid)
        assert st.st_mode & 0o777 == 0o664
        with open(f"/proc/{master}/status") as f:
            uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
        assert int(uid) == pwd.getpwnam("www-data").pw_uid, "runs as www-data"

        n = nginx(None, module=True, directives=f"wsgi_app {ini};")
        r = requests.get(n.url + "/", timeout=30)
        assert r.status_code == 200, f"{r.status_code}\n{log.read_text()}"
        assert "The install worked successfully" in r.text
    finally:
        if master and pid_alive(master):
            os.kill(master, signal.SIGTERM)
            wait_for(lambda: not pid_alive(master), 20, "the daemon to stop")
        subprocess.run(["rm", "-rf", str(base)])


def tutorial_xml(site, port):
    text = (CONFIGS / "tutorial" / "uwsgi.xml").read_text()
    return text.replace(":8000", f"127.0.0.1:{port}").replace("/site/", f"{site}/")


def test_tutorial_xml_checks_and_serves_with_its_cache(daemon, nginx, tmp_path):
    site = world_readable_dir()
    try:
        subprocess.run([DJANGO_ADMIN, "startproject", "Myapp", site], check=True)
        port = free_port()
        xml = tmp_path / "uwsgi.xml"
        xml.write_text(tutorial_xml(site, port))
        check = check_config(xml)
        assert check.returncode == 0, check.stderr
        for note in ("lock-engine", "close-on-exec", "thunder-lock", "post-buffering", "log-maxsize"):
            assert note in check.stderr
        assert ('cache2 = ["name=my_site,items=10000,blocksize=2000,blocks=10000,keysize=2048,bitmap=1,'
                'sweep_on_full=1,lazy=1"]') in check.stdout.splitlines()
        assert "cache-expire-freq = 6" in check.stdout.splitlines()
        # The tutorial's Django is installed system-wide (it deploys in Docker); ours is in
        # the test venv, which the command line adds.
        d = daemon(xml, "--home", ROOT / ".venv", ready=("127.0.0.1", port))
        n = nginx(f"127.0.0.1:{port}")
        r = requests.get(n.url + "/", timeout=30)
        assert r.status_code == 200, d.log()
        assert "The install worked successfully" in r.text
        assert 'cache "my_site": 10000 items, 10000 blocks of 2000 bytes' in d.log()
    finally:
        subprocess.run(["rm", "-rf", str(site)])
