"""Imports C extension modules, from the standard library's lib-dynload and from a wheel
(markupsafe, in .venv with Flask), and uses each: {module: [its file, it worked]}."""

import importlib
import json


def _works(name, module):
    if name == "_ctypes":
        import ctypes
        return ctypes.c_int(7).value == 7
    if name == "_decimal":
        return str(module.Decimal("1.10") + module.Decimal("2.205")) == "3.305"
    if name == "_hashlib":
        return module.new("sha256", b"abc").hexdigest().startswith("ba7816bf")
    if name == "_json":
        return module.encode_basestring_ascii("é") == '"\\u00e9"'
    if name == "_sqlite3":
        import sqlite3
        return sqlite3.connect(":memory:").execute("select 6 * 7").fetchone() == (42,)
    if name == "_ssl":
        import ssl
        return ssl.create_default_context().verify_mode == ssl.CERT_REQUIRED
    if name == "markupsafe._speedups":
        return module._escape_inner("<b>") == "&lt;b&gt;"
    raise KeyError(name)


NAMES = ("_ctypes", "_decimal", "_hashlib", "_json", "_sqlite3", "_ssl", "markupsafe._speedups")


def application(environ, start_response):
    loaded = {}
    for name in NAMES:
        module = importlib.import_module(name)
        loaded[name] = [getattr(module, "__file__", "built-in"), _works(name, module)]
    body = json.dumps(loaded).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
