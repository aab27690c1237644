"""The templates the report and ``actwh serve`` render their pages from (report/templates/,
Jinja2): one page skeleton and one section, so the two never drift. Every value is escaped for
HTML unless a template marks it safe (HTML the builders made, escaping what they hold)."""

from __future__ import annotations

from functools import cache

import jinja2

GENERATOR = "actwh report"


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("actwh.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a name a template misspells is an error, not ""
        keep_trailing_newline=True,
    )


def render(template: str, **values) -> str:
    """Template ``template`` with ``values`` (``generator`` set: the page says what made it)."""
    return environment().get_template(template).render(generator=GENERATOR, **values)
