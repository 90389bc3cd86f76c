"""Author-year labels in the bibliography, matching the author-year citations of the text.

sphinxcontrib-bibtex's ``bibtex_reference_style: author_year`` writes citations as "Han et al., 2015", but the
bibliography's own labels come from the pybtex formatting style, whose label styles are alphabetic ("HPTD15")
or numeric. This extension registers the pybtex style ``authoryear``: pybtex's ``plain`` style (entries sorted
by author, year, title; DOIs and URLs printed as links) with labels "Han et al., 2015", made unique with a
letter when two entries would share one. ``_config.yml`` selects it with ``bibtex_default_style``.
"""
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _surname(person) -> str:
    return " ".join(person.prelast_names + person.last_names).replace("{", "").replace("}", "")


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = []
        for entry in sorted_entries:
            people = entry.persons.get("author") or entry.persons.get("editor") or []
            names = ([_surname(people[0])] if len(people) != 2 else [f"{_surname(people[0])} and {_surname(people[1])}"])
            who = names[0] + (" et al." if len(people) > 2 else "") if people else entry.fields.get("title", "?")
            labels.append(f"{who}, {entry.fields.get('year', 'n.d.')}")
        seen = {}
        for label in labels:
            seen[label] = seen.get(label, 0) + 1
        suffix = {}
        for label in labels:
            if seen[label] > 1:
                suffix[label] = suffix.get(label, 0) + 1
                yield f"{label}{chr(ord('a') + suffix[label] - 1)}"
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabelStyle


register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    return {"parallel_read_safe": True, "parallel_write_safe": True}
