from django.urls import include, path

urlpatterns = [path("", include("bins.urls"))]

handler400 = "inspector.errors.bad_request"
handler404 = "inspector.errors.not_found"
handler500 = "inspector.errors.server_error"
