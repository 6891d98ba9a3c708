import json

from rest_framework.renderers import BaseRenderer


class AnyContentRenderer(BaseRenderer):
    """Lets a client that asks for a file's own type (or */*) reach a download view; errors stay JSON."""

    media_type = "*/*"
    format = "file"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        if isinstance(data, dict | list):
            response = (renderer_context or {}).get("response")
            if response is not None:
                response["Content-Type"] = "application/json"
            return json.dumps(data).encode()
        return data
