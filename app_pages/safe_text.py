"""Text from outside (file names, a user's CSV cells, skip reasons, errors naming files) made safe to show as Markdown.

Why this module exists: Streamlit renders ``st.markdown``, captions, messages and image captions as Markdown, so a
file named ``[click](http://…).png`` or ``![x](http://…)`` would become a link or an image loaded from elsewhere,
and ``:red[…]``, ``$…$`` or backticks would restyle the page. Every page passes such text through :func:`md_escape`
(or :func:`md_code` inside a code span) before it is shown.
"""

from __future__ import annotations

import re

_MD_ALWAYS = re.compile(r"([\\`*\[\]<>~$|])")  # inline markup: links, images, code, emphasis, HTML, maths
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")  # a '_' that can open or close emphasis
_MD_LINE_START = re.compile(r"^(\s*)([#>+=-])")  # a heading, quote, list or rule when it starts the text
_MD_NUMBERED = re.compile(r"^(\s*\d+)([.)])")     # a numbered list item when it starts the text
_MD_WWW = re.compile(r"(?i)\b(www)\.")             # a bare 'www.' that GitHub-flavoured Markdown would link


def md_escape(text) -> str:
    """``text`` (a file name, a cell of a user's CSV, a skip reason, an error naming a file) as Markdown that shows
    exactly those characters: no link, image, code, emphasis, HTML, maths or colour can be made from it (a directive
    such as ``:red[…]`` needs the '[' that is escaped; an emoji or icon code is left to show), and it stays on one
    line. Every st.markdown, caption and message that shows such text passes it through here."""
    s = " ".join(str(text).splitlines())
    s = _MD_ALWAYS.sub(r"\\\1", s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    s = _MD_WWW.sub(r"\1\\.", s)
    s = _MD_NUMBERED.sub(lambda m: m.group(1) + "\\" + m.group(2), s, count=1)
    return _MD_LINE_START.sub(lambda m: m.group(1) + "\\" + m.group(2), s, count=1)


def md_code(text) -> str:
    """``text`` as a Markdown code span, whatever backticks it holds (the fence is longer than any run of them)."""
    s = " ".join(str(text).splitlines())
    fence = "`" * (max((len(r) for r in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


__all__ = ["md_escape", "md_code"]
