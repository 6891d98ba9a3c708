import os
import sys

from django.core.wsgi import get_wsgi_application

from parseq.env import ConfigurationError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "parseq.settings")
try:
    application = get_wsgi_application()
except ConfigurationError as error:
    sys.exit(f"Configuration error: {error}")

from parseq.database import bound_waits_of_this_service

bound_waits_of_this_service()
