from django.urls import path, register_converter

from . import api, page_views, settings_views, views
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
        views.resend,
        name="capture-resend",
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
]
