"""Render a :class:`~cltune.reports.document.Report` as Markdown, self-contained HTML, or terminal text."""

from __future__ import annotations

import base64
import html

from cltune.reports.document import Report
from cltune.reports.tables import Cell, Table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
td { white-space: nowrap; }
.ci { display: block; font-size: 0.8em; color: #555; }
.scroll { overflow-x: auto; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; }
td.best { background: #e3f4e1; font-weight: bold; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9rem; }
.skipped { color: #8a6d3b; background: #fcf8e3; padding: 0.4rem 0.6rem; border-radius: 4px; }
dt { font-weight: bold; } dd { margin: 0 0 0.4rem 1.2rem; }
"""


def text_table(table: Table) -> str:
    """Columns aligned with spaces; a best cell gets a trailing ``*``."""
    lines = [table.header] + [[c.text + ("*" if c.best else "") for c in row] for row in table.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(table.header))]
    body = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    return "\n".join([body, *table.notes])


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> str:
    lines = [
        "| " + " | ".join(_md_cell(h) for h in table.header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(table.header) - 1)) + "|",
    ]
    for row in table.rows:
        cells = [f"**{_md_cell(c.text)}**" if c.best else _md_cell(c.text) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"*{note}*" for note in table.notes]
    return "\n".join(lines) + ("\n\n" + "  \n".join(notes) if notes else "")


def to_markdown(report: Report, figure_dir: str) -> str:
    """report.md: the figures are PNG files in ``figure_dir`` (relative to the Markdown file)."""
    out = [f"# {report.title}", ""]
    out += [f"- **{key}:** {value}" for key, value in report.overview] + [""]
    out += ["## Comparison", "", markdown_table(report.comparison), "", "### Metric definitions", ""]
    out += [f"- **{name}** — {text}" for name, text in report.definitions] + [""]
    out += ["## Paired tests between strategies", ""]
    out += [markdown_table(report.paired) if report.paired else f"*{report.paired_note}*", ""]
    out += ["## Figures", ""]
    for section in report.figures:
        out += [f"### {section.title}", "", section.caption, ""]
        if section.png is None:
            out += [f"> Skipped: {section.note}", ""]
        else:
            out += [f"![{section.title}]({figure_dir}/{section.name}.png)", ""]
    out += ["## Runs", "", markdown_table(report.runs), ""]
    return "\n".join(out)


def _html_cell(cell: Cell) -> str:
    """A value ``mean ± half-width`` shows the interval on a second, smaller line."""
    mean, sep, half = cell.text.partition(" ± ")
    text = html.escape(mean) + (f'<span class="ci"> ± {html.escape(half)}</span>' if sep else "")
    return f'<td class="best"><strong>{text}</strong></td>' if cell.best else f"<td>{text}</td>"


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in table.rows)
    notes = "".join(f'<p class="note">{html.escape(note)}</p>' for note in table.notes)
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>{notes}'
    )


def to_html(report: Report) -> str:
    """report.html: one file, figures embedded as base64 PNG data URIs, no script, no network."""
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(report.title)}</h1><ul>",
        *[f"<li><strong>{e(key)}:</strong> {e(value)}</li>" for key, value in report.overview],
        "</ul><h2>Comparison</h2>",
        html_table(report.comparison),
        "<h3>Metric definitions</h3><dl>",
        *[f"<dt>{e(name)}</dt><dd>{e(text)}</dd>" for name, text in report.definitions],
        "</dl><h2>Paired tests between strategies</h2>",
        html_table(report.paired) if report.paired else f'<p class="note">{e(report.paired_note)}</p>',
        "<h2>Figures</h2>",
    ]
    for section in report.figures:
        parts.append(f'<section id="{e(section.name)}"><h3>{e(section.title)}</h3>')
        if section.png is None:
            parts.append(
                f'<p>{e(section.caption)}</p><p class="skipped">Skipped: {e(section.note or "")}</p>'
            )
        else:
            data = base64.b64encode(section.png).decode()
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(section.title)}">'
                f"<figcaption>{e(section.caption)}</figcaption></figure>"
            )
        parts.append("</section>")
    parts += ["<h2>Runs</h2>", html_table(report.runs), "</body></html>"]
    return "\n".join(parts)
