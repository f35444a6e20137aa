"""A Flask app keeping a page-view counter and a per-page cache in uWSGI's cache2, as
Flask apps written for uWSGI do."""

import os

import uwsgi
from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/view/<page>")
def view(page):
    # One counter for every worker and thread: cache_inc is atomic across them.
    uwsgi.cache_inc(f"views:{page}", 1, 0, "flask")
    # The rendered page cached once, for 60 s; whoever comes first renders it.
    html = uwsgi.cache_get(f"html:{page}", "flask")
    if html is None:
        # Two workers may render it at once: cache_set keeps the first, and both serve it.
        uwsgi.cache_set(f"html:{page}", f"<h1>{page}</h1> rendered by {os.getpid()}".encode(), 60, "flask")
        html = uwsgi.cache_get(f"html:{page}", "flask")
    return jsonify(pid=os.getpid(), html=html.decode())


@app.route("/views/<page>")
def views(page):
    return jsonify(views=uwsgi.cache_num(f"views:{page}", "flask"))


application = app
