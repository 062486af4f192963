from django.urls import re_path

from . import consumers

TOKEN = r"(?P<token>[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})"

websocket_urlpatterns = [
    re_path(rf"^ws/bins/{TOKEN}/$", consumers.PageStreamConsumer.as_asgi()),
    re_path(rf"^ws/bins/{TOKEN}/json/$", consumers.JsonStreamConsumer.as_asgi()),
]
