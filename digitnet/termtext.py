"""Names are data, not markup: user text (file, folder, class and data-set names) made safe
to print on a terminal. Nothing here imports anything heavy; the CLI's error lines use it."""

from __future__ import annotations


def terminal_safe(text) -> str:
    """``text`` with everything a terminal would act on made visible: control characters
    (ESC, CR, BEL, DEL, C1 …) as ``\\xNN``, and undecodable file-name bytes (the surrogates
    ``os.fsdecode`` keeps them as) as ``\\xNN`` too, so a name prints as one visible line and
    never raises on output. Printable text comes back unchanged."""
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        o = ord(ch)
        if 0xDC80 <= o <= 0xDCFF:                     # a byte os.fsdecode could not decode
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            out.append(f"\\u{o:04x}")
        elif o < 0x20 or 0x7F <= o < 0xA0:
            out.append(f"\\x{o:02x}")
        elif not ch.isprintable() and ch != " ":     # line/paragraph separators, format characters
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)
