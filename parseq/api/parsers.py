from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, MultiPartParser


class DepthSafeJSONParser(JSONParser):
    """JSON, with a body nested deeper than Python's stack a 400 like any other malformed body, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


class StrictMultiPartParser(MultiPartParser):
    """Multipart, but a body that holds no field at all is refused instead of read as an empty form.

    Django reads a malformed body (no part, or parts without headers) as nothing; a client that
    sent one meant something else, and silently changing nothing would hide its mistake.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        if not parsed.data and not parsed.files:
            raise ParseError("The multipart body holds no fields: send name=value parts, or JSON.")
        return parsed
