"""The nginx module as it stands: built against Debian's nginx, loaded by it.

`wsgi_pass` is not implemented yet; until it is, the directive must fail `nginx -t`
loudly (file and line), never load as a silent no-op.
"""

import os
import subprocess

from conftest import ROOT

MODULE = os.environ.get("NGX_WSGI_MODULE", str(ROOT / "target" / "release" / "libngx_http_wsgi_module.so"))


def nginx_t(tmp_path, location):
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"""
load_module {MODULE};
pid {tmp_path}/nginx.pid;
error_log stderr;
events {{}}
http {{
    server {{
        listen 127.0.0.1:1;
        location / {{
            {location}
        }}
    }}
}}
""")
    return subprocess.run(["nginx", "-t", "-p", str(tmp_path), "-c", str(conf)], capture_output=True, text=True)


def test_debians_nginx_loads_the_module(tmp_path):
    out = nginx_t(tmp_path, "return 200;")
    assert out.returncode == 0, out.stderr
    assert "test is successful" in out.stderr


def test_wsgi_pass_is_refused_until_implemented(tmp_path):
    out = nginx_t(tmp_path, "wsgi_pass unix:/run/app.sock;")
    assert out.returncode == 1
    assert '"wsgi_pass" is not implemented yet in this build of ngx_http_wsgi_module' in out.stderr
    assert f"in {tmp_path}/nginx.conf:10" in out.stderr


def test_install_lays_out_debian_style_files(tmp_path):
    subprocess.run(["make", "-s", "-C", str(ROOT), "install", f"DESTDIR={tmp_path}"], check=True,
                   capture_output=True)
    assert (tmp_path / "usr/lib/nginx/modules/ngx_http_wsgi_module.so").is_file()
    snippet = tmp_path / "usr/share/nginx/modules-available/mod-http-wsgi.conf"
    assert snippet.read_text().strip() == "load_module modules/ngx_http_wsgi_module.so;"
    enabled = tmp_path / "etc/nginx/modules-enabled/50-mod-http-wsgi.conf"
    assert os.readlink(enabled) == "/usr/share/nginx/modules-available/mod-http-wsgi.conf"
    assert os.access(tmp_path / "usr/local/bin/ngx-wsgi", os.X_OK)
