"""Error pages: JSON under /api/ (scripts parse them), plain HTML elsewhere."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": f"Bad request: {exception or 'unreadable'}"}, status=400)
    return HttpResponse("Bad request.", status=400, content_type="text/plain")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Not found: no such bin, capture or API path."}, status=404)
    return render(request, "404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "Internal error; it has been logged."}, status=500)
    return render(request, "500.html", status=500)
