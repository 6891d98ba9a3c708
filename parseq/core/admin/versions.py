"""A parser's script versions in the admin: the list on its page, each version's source, a diff of any two,
and Restore. Sources are a parser's secret: reading and restoring them takes the permission to change it.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse

from parseq.core import script_versions, selectors, services
from parseq.core.models import AuditEntry, Parser

LISTED_ON_THE_PARSER_PAGE = 10
LISTED_ON_THE_VERSIONS_PAGE = 500
DIFF_LINES_SHOWN = 5000  # a page, not a dump: two scripts of 256 KiB may differ in every line


class ScriptVersionsAdmin:
    """ParserAdmin's part for script versions (its pages, its panel)."""

    def version_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:parser_id>/versions/", view(self.versions_view), name="core_parser_versions"),
            path("<int:parser_id>/versions/<int:number>/", view(self.version_view), name="core_parser_version"),
            path(
                "<int:parser_id>/versions/<int:number>/restore/",
                view(self.restore_version_view),
                name="core_parser_restore_version",
            ),
        ]

    @admin.display(description="script versions")
    def script_versions(self, parser):
        """The newest versions, each linking its source and its diff with the one before."""
        return self._versions_panel(parser, links=True)

    @admin.display(description="script versions")
    def script_versions_unlinked(self, parser):
        """The same for readers, who may not read sources: when, who and why only."""
        return self._versions_panel(parser, links=False)

    def _versions_panel(self, parser, *, links):
        versions = selectors.script_versions_of(parser=parser)
        context = {"parser": parser, "versions": versions[:LISTED_ON_THE_PARSER_PAGE], "links": links}
        context["more"] = versions.count() > LISTED_ON_THE_PARSER_PAGE
        return render_to_string("admin/core/parser/panels/script_versions.html", context)

    def versions_view(self, request, parser_id):
        """All versions, and the diff of the two chosen (`?a=1&b=3`; by default the last change)."""
        parser = self._parser_whose_sources(request, parser_id)
        versions = list(selectors.script_versions_of(parser=parser)[:LISTED_ON_THE_VERSIONS_PAGE])
        older, newer, problem = self._chosen_pair(request, parser, versions)
        diff = script_versions.diff(older=older, newer=newer) if older and newer else []
        context = {
            **self._page_context(request, parser, title=f"Script versions of {parser.name}"),
            "versions": versions,
            "older": older,
            "newer": newer,
            "problem": problem,
            "diff": diff[:DIFF_LINES_SHOWN],
            "diff_lines_not_shown": max(len(diff) - DIFF_LINES_SHOWN, 0),
        }
        return TemplateResponse(request, "admin/core/parser/versions.html", context)

    def version_view(self, request, parser_id, number):
        parser = self._parser_whose_sources(request, parser_id)
        version = get_object_or_404(parser.script_versions, number=number)
        latest = script_versions.latest_version(parser=parser)
        context = {
            **self._page_context(request, parser, title=f"{parser.name}: script version {number}"),
            "version": version,
            "is_current": latest is not None and latest.pk == version.pk,
            "lines": version.source.splitlines(),
        }
        return TemplateResponse(request, "admin/core/parser/version.html", context)

    def restore_version_view(self, request, parser_id, number):
        parser = self._parser_whose_sources(request, parser_id)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:core_parser_version", args=[parser.pk, number]))
        version = get_object_or_404(parser.script_versions, number=number)
        before = script_versions.latest_version(parser=parser)
        try:
            current = services.restore_script_version(
                version=version, user=request.user, source=AuditEntry.Source.ADMIN
            )
        except ValidationError as error:
            self.message_user(request, " ".join(error.messages), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:core_parser_version", args=[parser.pk, number]))
        if current.pk == before.pk:
            self.message_user(request, f"Version {number} is already the current script.", messages.INFO)
        else:
            self.message_user(request, f"Version {number} restored as version {current.number}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:core_parser_change", args=[parser.pk]))

    def _parser_whose_sources(self, request, parser_id):
        parser = get_object_or_404(Parser, pk=parser_id)
        if not self.has_change_permission(request, parser):
            raise PermissionDenied
        return parser

    @staticmethod
    def _chosen_pair(request, parser, versions):
        """The (older, newer) versions to compare, and what was wrong with the choice."""
        if not versions:
            return None, None, None
        default_newer = versions[0].number
        default_older = versions[1].number if len(versions) > 1 else default_newer
        try:
            a = int(request.GET.get("a", default_older))
            b = int(request.GET.get("b", default_newer))
        except ValueError:
            return None, None, "Give version numbers to compare, as ?a=1&b=3."
        found = {version.number: version for version in parser.script_versions.filter(number__in=[a, b])}
        missing = [number for number in (a, b) if number not in found]
        if missing:
            return None, None, f"There is no version {missing[0]}."
        return found[min(a, b)], found[max(a, b)], None

    def _page_context(self, request, parser, *, title):
        return {
            **self.admin_site.each_context(request),
            "opts": Parser._meta,
            "parser": parser,
            "title": title,
            "has_view_permission": True,
        }
