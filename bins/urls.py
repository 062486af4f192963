from django.urls import path, register_converter

from . import api, api_extra, detail_views, page_views, settings_views, views
from .converters import TokenConverter

register_converter(TokenConverter, "token")

app_name = "bins"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("robots.txt", views.robots, name="robots"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("metrics", views.metrics_view, name="metrics"),
    path("bins/", views.new_bin, name="new"),
    path("bins/<token:token>/", views.inspect, name="inspect"),
    path("bins/<token:token>/clear/", views.clear, name="clear"),
    path("bins/<token:token>/name/", page_views.rename, name="rename"),
    path("bins/<token:token>/settings/", settings_views.bin_settings, name="settings"),
    path(
        "bins/<token:token>/settings/preview/",
        settings_views.preview,
        name="settings-preview",
    ),
    path("bins/<token:token>/captures/<int:capture_id>/", views.inspect, name="capture"),
    path(
        "bins/<token:token>/captures/<int:capture_id>/resend/",
        detail_views.resend,
        name="capture-resend",
    ),
    path(
        "bins/<token:token>/captures/<int:capture_id>/deliveries/<int:delivery_id>/again/",
        detail_views.send_again,
        name="capture-send-again",
    ),
    path(
        "bins/<token:token>/captures/<int:capture_id>/delete/",
        detail_views.delete_capture,
        name="capture-delete",
    ),
    path("api/bins", api.bins, name="api-bins"),
    path("api/bins/<token:token>", api.bin_detail, name="api-bin"),
    path("api/bins/<token:token>/captures", api.captures, name="api-captures"),
    path(
        "api/bins/<token:token>/captures/<int:capture_id>",
        api.capture_detail,
        name="api-capture",
    ),
    path(
        "api/bins/<token:token>/captures/<int:capture_id>/resend",
        api.resend,
        name="api-capture-resend",
    ),
    path(
        "api/bins/<token:token>/captures/<int:capture_id>/deliveries",
        api.deliveries,
        name="api-capture-deliveries",
    ),
    path(
        "api/bins/<token:token>/captures/<int:capture_id>/raw",
        api.capture_raw,
        name="api-capture-raw",
    ),
    path(
        "api/bins/<token:token>/captures/<int:capture_id>/snippet/<str:kind>",
        api_extra.capture_snippet,
        name="api-capture-snippet",
    ),
    path("api/bins/<token:token>/export.har", api_extra.export_har, name="api-export-har"),
    path("api/bins/<token:token>/export.jsonl", api_extra.export_jsonl, name="api-export-jsonl"),
]
