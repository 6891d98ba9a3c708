"""The audit trail: who created, changed, ran, cancelled or deleted what. Names only, never values."""

from parseq.core.models import AuditEntry, Parser

# Compared between the stored parser and the one about to be saved; `environment` is compared by variable.
AUDITED_FIELDS = (*Parser.EDITABLE_FIELDS, "environment")


def record(*, user, action, source, parser, run_id=None, fields=()):
    """Add an entry to the trail: `user` did `action` to `parser` (and its run `run_id`) through `source`."""
    return AuditEntry.objects.create(
        user=user if user and user.is_authenticated else None,
        username=user.get_username() if user and user.is_authenticated else "",
        action=action,
        source=source,
        parser=parser,
        parser_name=parser.name,
        run_id=run_id,
        fields=list(fields),
    )


def changed_fields(*, before, after):
    """The names of what differs between two states of a parser; a variable as `environment.NAME`, never its value.

    `before` is None for a new parser: then what differs from a new parser's defaults counts.
    """
    before = before or Parser()
    changed = []
    for name in AUDITED_FIELDS:
        old, new = getattr(before, name), getattr(after, name)
        if name == "environment":
            changed += [f"environment.{key}" for key in _changed_keys(old or {}, new or {})]
        elif name == "script":
            if (old.name or "") != (new.name or ""):
                changed.append(name)
        elif old != new:
            changed.append(name)
    return changed


def entries_of(*, parser, limit=None):
    """The trail of one parser, newest first."""
    entries = AuditEntry.objects.filter(parser_id=parser.pk)
    return entries[:limit] if limit else entries


def _changed_keys(old, new):
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
