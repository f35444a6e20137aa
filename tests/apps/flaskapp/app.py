"""A Flask app like the ones users deploy: sessions, forms, uploads, redirects, errors."""

import hashlib

from flask import Flask, abort, redirect, request, session, url_for

app = Flask(__name__)
app.secret_key = "test-only-secret"


@app.get("/")
def index():
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}


@app.post("/form")
def form():
    return {"name": request.form["name"], "tags": request.form.getlist("tag")}


@app.post("/upload")
def upload():
    f = request.files["file"]
    data = f.read()
    return {"filename": f.filename, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "note": request.form.get("note")}


@app.get("/go")
def go():
    return redirect(url_for("index"))


@app.get("/missing")
def missing():
    abort(404)


@app.get("/crash")
def crash():
    raise KeyError("flask view failure")
