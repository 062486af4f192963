"""ASGI entry point: captures first (lean handler), then Django; websockets to Channels."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "inspector.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from bins.asgi import CaptureRouter  # noqa: E402
from bins.background import start_with_server  # noqa: E402
from bins.flow import Backpressure  # noqa: E402
from bins.hosts import WebsocketGuard  # noqa: E402
from bins.routing import websocket_urlpatterns  # noqa: E402
from bins.server import configure_daphne  # noqa: E402

configure_daphne()
start_with_server()

# Everything imported so far (Django, Twisted, the app) lives as long as the process: keep it
# out of the garbage collector's full passes, which otherwise walk it all and pause the
# capture path for tens of milliseconds now and then.
gc.freeze()

application = ProtocolTypeRouter(
    {
        "http": CaptureRouter(Backpressure(django_app)),
        "websocket": WebsocketGuard(URLRouter(websocket_urlpatterns)),
    }
)
