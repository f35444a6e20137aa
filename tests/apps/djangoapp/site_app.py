"""A one-file Django project: signed-cookie sessions, CSRF-protected forms, uploads,
redirects, 404 and a failing view (no database needed)."""

import hashlib

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-secret",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
    ],
    INSTALLED_APPS=["django.contrib.sessions"],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    DATA_UPLOAD_MAX_MEMORY_SIZE=None,
    FILE_UPLOAD_MAX_MEMORY_SIZE=1024 * 1024,
    LOGGING={
        "version": 1,
        "handlers": {"console": {"class": "logging.StreamHandler"}},
        "loggers": {"django.request": {"handlers": ["console"], "level": "ERROR"}},
    },
)

import django  # noqa: E402

django.setup()

from django.http import Http404, JsonResponse  # noqa: E402
from django.middleware.csrf import get_token  # noqa: E402
from django.shortcuts import redirect  # noqa: E402
from django.urls import path  # noqa: E402


def index(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return JsonResponse({"visits": request.session["visits"], "csrf": get_token(request)})


def form(request):
    return JsonResponse({"name": request.POST["name"], "tags": request.POST.getlist("tag")})


def upload(request):
    f = request.FILES["file"]
    data = f.read()
    return JsonResponse({"filename": f.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                         "note": request.POST.get("note")})


def go(request):
    return redirect("/")


def missing(request):
    raise Http404("no such page")


def crash(request):
    raise KeyError("django view failure")


urlpatterns = [
    path("", index),
    path("form", form),
    path("upload", upload),
    path("go", go),
    path("missing", missing),
    path("crash", crash),
]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
