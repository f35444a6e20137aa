"""A Django app whose cache is django-uwsgi-cache's backend (uwsgicache.UWSGICache) on a
cache2 cache: what a Django project on uWSGI configures."""

import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="test-only",
    MIDDLEWARE=[],
    UWSGI_CACHE_FALLBACK=False,
    CACHES={"default": {"BACKEND": "uwsgicache.UWSGICache", "LOCATION": "djcache"}},
)
django.setup()

from django.core.cache import cache, caches  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def put(request):
    timeout = int(request.GET.get("t", 0)) or None
    cache.set(request.GET["k"], {"value": request.GET["v"]}, timeout=timeout)
    return JsonResponse({"pid": os.getpid()})


def get(request):
    return JsonResponse({"v": cache.get(request.GET["k"]), "pid": os.getpid(),
                         "backend": type(caches["default"]).__module__})


def add(request):
    return JsonResponse({"added": cache.add(request.GET["k"], 1)})


urlpatterns = [path("put", put), path("get", get), path("add", add)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
