"""Loaded with --module modpkg.web[:callable]; reports how it was set up."""

import json
import os
import sys

LOADED_IN_PID = os.getpid()


def _describe(name):
    def app(environ, start_response):
        body = json.dumps({
            "callable": name,
            "cwd": os.getcwd(),
            "env": os.environ.get("NGX_WSGI_TEST_ENV"),
            "extra_path_importable": _extra(),
            "loaded_in_pid": LOADED_IN_PID,
            "serving_pid": os.getpid(),
            "executable_prefix": sys.prefix,
        }).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    return app


def _extra():
    try:
        import extra_module  # noqa: F401  (on --pythonpath only)
        return True
    except ImportError:
        return False


application = _describe("application")
other = _describe("other")
not_callable = 42
