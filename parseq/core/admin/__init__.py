"""The core's admin pages: parsers, runs and the audit trail.

Other apps add their parts to the parser pages from their own admin modules (parsers.py says how);
the core's pages name none of them.
"""

from django.contrib import admin
from django_dramatiq.models import Task

from parseq.core.admin.audit_trail import AuditEntryAdmin
from parseq.core.admin.parsers import ParserAdmin
from parseq.core.admin.runs import RunAdmin

# django_dramatiq's task table stays empty (its AdminMiddleware is off): runs are the history.
admin.site.unregister(Task)

__all__ = ["AuditEntryAdmin", "ParserAdmin", "RunAdmin"]
